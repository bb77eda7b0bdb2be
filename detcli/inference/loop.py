"""The one prediction loop: any :class:`~detcli.inference.predictor.Predictor` over frames or a dataset loader.

``predict`` runs :func:`predict_batches` over decoded frames (:func:`~detcli.inference.frames.iter_sources`);
evaluation runs :func:`predict_loader` over a dataset's batches. Both run one forward pass per padded shape
(:func:`~detcli.data.collate.split_by_shape`) and map every detection back to original pixels through
:func:`to_original_pixels` (the predictor's own :meth:`~detcli.inference.predictor.Predictor.to_original`), the
only place that mapping happens.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch
from torch import nn

from detcli.data.collate import collate, split_by_shape
from detcli.inference.frames import Frame, iter_sources
from detcli.inference.predictor import Predictor
from detcli.postprocess import PostprocessConfig
from detcli.structures import Batch, Detections, ImageMeta

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], dict]


def to_original_pixels(predictor: Predictor, det: Detections, meta: ImageMeta) -> Detections:
    """Detections of one image from network-input pixels back to the original image (on CPU, float32 boxes and
    scores), by the family's official rule (:meth:`Predictor.to_original`).

    Args:
        det: boxes (K, 4) xyxy in network-input pixels.
        meta: the image's ``warp_matrix`` (original → input), ``ori_shape`` (h, w) and ``img_shape``.
    """
    cpu = Detections(boxes=det.boxes.detach().float().cpu().reshape(-1, 4), scores=det.scores.detach().float().cpu(),
                     labels=det.labels.detach().cpu())
    return predictor.to_original(cpu, meta)


def predict_batch(
    predictor: Predictor, batch: Batch, device: torch.device | str, cfg: PostprocessConfig | None = None
) -> list[Detections]:
    """Detections in original pixels of every image of ``batch`` (its ``images`` (B, 3, H, W) padded, ``metas``),
    one forward pass per padded image shape: each image's detections are those it gets alone, as the official
    tests at batch 1. ``cfg`` overrides the predictor's ``postprocess_cfg``."""
    dets: dict[int, Detections] = {}  # index in the batch → detections in input pixels
    for idx, group in split_by_shape(batch):
        with torch.inference_mode():
            dets.update(zip(idx, predictor.predict(group.images.to(device), group.metas, cfg)))
    return [to_original_pixels(predictor, dets[i], meta) for i, meta in enumerate(batch.metas)]


def predict_batches(
    predictor: Predictor,
    frames: Iterable[Frame],
    transform: Transform,
    batch_size: int,
    device: torch.device | str,
    cfg: PostprocessConfig | None,
    size_divisor: int,
) -> Iterator[tuple[Frame, Detections]]:
    """Run ``predictor`` over ``frames`` in batches; yield each frame, in order, with its detections in original
    pixels.

    Up to ``batch_size`` frames are read ahead and padded to a multiple of ``size_divisor``
    (:func:`~detcli.data.collate.collate`); those whose padded shape is equal share one forward pass, the others
    run in passes of their own (:func:`predict_batch`), so a frame's detections are those it gets alone, whatever
    frames surround it (a video's frames, all of one shape, fill whole batches).

    Args:
        transform: ``transform(img_bgr, boxes (0, 4), labels (0,), rng)`` returns ``img, boxes, labels,
            warp_matrix, img_shape`` (the preset's test transform).
        cfg: post-processing settings; None: the predictor's ``postprocess_cfg``.

    A predictor that is a module runs in eval mode; its previous mode is restored at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(0)
    with _eval_mode(predictor):
        pending: list[tuple[Frame, dict]] = []
        for frame in frames:
            pending.append((frame, _sample(frame, transform, rng)))
            if len(pending) == batch_size:
                yield from _run_frames(predictor, pending, device, cfg, size_divisor)
                pending = []
        if pending:
            yield from _run_frames(predictor, pending, device, cfg, size_divisor)


def predict_loader(
    predictor: Predictor, batches: Iterable[Batch], device: torch.device | str, cfg: PostprocessConfig | None = None
) -> Iterator[tuple[ImageMeta, Detections | None]]:
    """Run ``predictor`` over a dataset's batches (a DataLoader of :class:`~detcli.data.collate.collate`); yield
    ``(meta, detections in original pixels)`` per image, and ``(meta, None)`` for each image the dataset could
    not read (``Batch.skipped``, yielded first of its batch). Eval mode as :func:`predict_batches`."""
    with _eval_mode(predictor):
        for batch in batches:
            for meta in batch.skipped:
                yield meta, None
            yield from zip(batch.metas, predict_batch(predictor, batch, device, cfg))


@contextlib.contextmanager
def _eval_mode(predictor: Predictor) -> Iterator[None]:
    """A module predictor in eval mode for the duration, its previous mode restored after."""
    module = predictor if isinstance(predictor, nn.Module) else None
    was_training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        yield
    finally:
        if was_training:
            module.train(True)


def _sample(frame: Frame, transform: Transform, rng: np.random.Generator) -> dict:
    out = transform(frame.img, np.zeros((0, 4), np.float32), np.zeros((0,), np.int64), rng)
    meta = ImageMeta(
        image_id=frame.index,
        file_name=frame.path,
        ori_shape=(int(frame.img.shape[0]), int(frame.img.shape[1])),
        img_shape=tuple(int(s) for s in out["img_shape"]),
        warp_matrix=np.asarray(out["warp_matrix"], dtype=np.float64).tolist(),
    )
    return {"img": out["img"], "boxes": out["boxes"], "labels": out["labels"], "meta": meta}


def _run_frames(
    predictor: Predictor, pending: list[tuple[Frame, dict]], device: torch.device | str,
    cfg: PostprocessConfig | None, size_divisor: int,
) -> Iterator[tuple[Frame, Detections]]:
    batch = collate([s for _, s in pending], size_divisor=size_divisor)
    yield from zip((frame for frame, _ in pending), predict_batch(predictor, batch, device, cfg))


__all__ = ["Frame", "Transform", "iter_sources", "predict_batch", "predict_batches", "predict_loader",
           "to_original_pixels"]
