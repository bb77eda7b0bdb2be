"""Prediction on images, folders, glob patterns and videos (library side of ``detcli predict``).

Flow: :func:`iter_sources` yields decoded frames → :func:`predict_batches` runs the detector and maps boxes
back to original pixels → :func:`draw_detections` / :class:`PredictionWriter` save what came out.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import cv2
import numpy as np
import torch

from detcli.data.collate import split_by_shape
from detcli.data.image_io import read_image_bgr
from detcli.evaluation.coco_results import coco_boxes_scores
from detcli.errors import DetcliError
from detcli.fileio import atomic_write_json
from detcli.models.base import Detector
from detcli.plots.palette import class_color, text_color_on
from detcli.plots.text import Text, draw_texts, text_size
from detcli.sources import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, kind, resolve_source
from detcli.structures import Batch, Detections, ImageMeta

WarnFn = Callable[[str], None]


@dataclass
class Frame:
    """One decoded picture to run the detector on.

    Attributes:
        img: (H, W, 3) uint8 BGR.
        path: the file it came from, as found (folder/glob sources give ``folder/name``).
        index: running number (from 0) over everything ``iter_sources`` yielded; ``index + 1`` is the
            ``image_id`` in ``predictions.json``.
        frame: frame number inside a video, ``None`` for an image.
        fps: frames per second of the video, ``None`` for an image.
    """

    img: np.ndarray
    path: str
    index: int
    frame: int | None = None
    fps: float | None = None

    @property
    def is_video(self) -> bool:
        return self.frame is not None


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def iter_sources(source: str, warn: WarnFn = _warn) -> Iterator[Frame]:
    """Decoded frames of every image/video that ``source`` names, in sorted file order.

    Unreadable images and videos are reported through ``warn`` and skipped.

    Raises:
        DetcliError: nothing matches ``source`` (see :func:`resolve_source`), or nothing it matches is readable.
    """
    return _iter_files(resolve_source(source), source, warn)  # resolve now: a bad source fails at once


def _iter_files(paths: list[str], source: str, warn: WarnFn) -> Iterator[Frame]:
    index = 0
    for path in paths:
        if kind(path) == "video":
            for frame in _iter_video(path, index, warn):
                index += 1
                yield frame
            continue
        img = read_image_bgr(path)
        if img is None:
            warn(f"skipping '{path}': not a readable image")
            continue
        yield Frame(img=img, path=path, index=index)
        index += 1
    if index == 0:
        raise DetcliError(f"no readable image or video frame in '{source}'")


def _iter_video(path: str, start_index: int, warn: WarnFn) -> Iterator[Frame]:
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            warn(f"skipping '{path}': cannot open video")
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else 30.0
        n = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield Frame(img=img, path=path, index=start_index + n, frame=n, fps=fps)
            n += 1
        if n == 0:
            warn(f"skipping '{path}': no decodable frame")
    finally:
        cap.release()


# --------------------------------------------------------------------------- inference

Transform = Callable[[np.ndarray, np.ndarray, np.ndarray, np.random.Generator], dict]
Collate = Callable[[list[dict]], Batch]


def to_original_pixels(model: Detector, det: Detections, meta: ImageMeta) -> Detections:
    """Map detections from network-input pixels back to the original image (on CPU), by the family's official
    rule (:meth:`Detector.to_original`).

    Args:
        det: boxes (K, 4) xyxy in network-input pixels.
        meta: the image's ``warp_matrix`` (original → input), ``ori_shape`` (h, w) and ``img_shape``.
    """
    cpu = Detections(boxes=det.boxes.detach().float().cpu().reshape(-1, 4), scores=det.scores.detach().float().cpu(),
                     labels=det.labels.detach().cpu())
    return model.to_original(cpu, meta)


def predict_batches(
    model: Detector,
    frames: Iterable[Frame],
    transform: Transform,
    batch_size: int,
    device: torch.device | str,
    score_thr: float,
    iou_thr: float,
    max_det: int,
    collate: Collate,
) -> Iterator[tuple[Frame, Detections]]:
    """Run ``model`` over ``frames`` in batches; yield each frame, in order, with its detections in original pixels.

    Up to ``batch_size`` frames are read ahead; those whose padded shape is equal share one forward pass, the
    others run in passes of their own (:func:`~detcli.data.collate.split_by_shape`), so a frame's detections
    are those it gets alone, whatever frames surround it (a video's frames, all of one shape, fill whole batches).

    ``transform(img_bgr, boxes (0, 4), labels (0,), rng)`` must return ``img, boxes, labels, warp_matrix,
    img_shape``; ``collate`` turns the sample dicts (``img, boxes, labels, meta``) into a :class:`Batch`
    (with ``pad_shapes``, as :func:`~detcli.data.collate.collate` gives).
    The model runs in eval mode under ``torch.inference_mode()``; its previous mode is restored at the end.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    rng = np.random.default_rng(0)
    was_training = model.training
    model.eval()
    try:
        pending: list[tuple[Frame, dict]] = []
        for frame in frames:
            pending.append((frame, _sample(frame, transform, rng)))
            if len(pending) == batch_size:
                yield from _run_batch(model, pending, device, score_thr, iou_thr, max_det, collate)
                pending = []
        if pending:
            yield from _run_batch(model, pending, device, score_thr, iou_thr, max_det, collate)
    finally:
        model.train(was_training)


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


def _run_batch(
    model: Detector,
    pending: list[tuple[Frame, dict]],
    device: torch.device | str,
    score_thr: float,
    iou_thr: float,
    max_det: int,
    collate: Collate,
) -> Iterator[tuple[Frame, Detections]]:
    batch = collate([s for _, s in pending])
    dets: dict[int, Detections] = {}  # index in pending → detections in input pixels
    for idx, group in split_by_shape(batch):  # one forward pass per padded shape: batch-1 inputs
        with torch.inference_mode():
            dets.update(zip(idx, model.predict(group.images.to(device), group.metas, score_thr, iou_thr, max_det)))
    for i, ((frame, _), meta) in enumerate(zip(pending, batch.metas)):
        yield frame, to_original_pixels(model, dets[i], meta)


# --------------------------------------------------------------------------- drawing

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive


def place_labels(boxes: list[Rect], sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[Rect]:
    """Where each box's label goes: inside the image and clear of the labels placed before it.

    A label sits on top of its box, inside the box's top edge when there is no room above, shifted left or
    up as far as needed to stay inside the image. A label that would overlap one placed earlier moves just
    below it (as far as the image allows), so two detections on one box show two readable labels.

    Args:
        boxes: detection boxes (x1, y1, x2, y2), in placement order (the most important first).
        sizes: (w, h) of each label.
        image_size: (w, h) of the image.

    Returns:
        One (x1, y1, x2, y2) per label; a label wider (taller) than the image starts at its left (top) edge.
    """
    img_w, img_h = image_size
    placed: list[Rect] = []
    for (bx1, by1, _, _), (w, h) in zip(boxes, sizes):
        x = _clamp(bx1, 0, img_w - w)
        y = _clamp(by1 - h if by1 - h >= 0 else by1, 0, img_h - h)
        while True:  # y grows at every step: ends after at most len(placed) moves
            hit = next((r for r in placed if x < r[2] and r[0] < x + w and y < r[3] and r[1] < y + h), None)
            if hit is None or hit[3] + h > img_h:
                break
            y = hit[3]
        placed.append((x, y, x + w, y + h))
    return placed


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


def draw_detections(img_bgr: np.ndarray, det: Detections, class_names: list[str]) -> np.ndarray:
    """A copy of ``img_bgr`` with boxes and ``"name score"`` labels on a filled background (any script).

    Line width and text size grow with the image size. Boxes are drawn lowest score first (the best on top),
    then the labels over every box, placed by :func:`place_labels` with the highest score first, all in one
    :func:`~detcli.plots.text.draw_texts` pass.
    """
    out = np.ascontiguousarray(img_bgr).copy()
    h, w = out.shape[:2]
    lw = max(round((h + w) / 2 * 0.003), 2)
    px = max(round((h + w) / 2 * 0.03), 12)
    boxes = det.boxes.detach().cpu().reshape(-1, 4).round().int().tolist()
    scores = det.scores.detach().cpu().tolist()
    labels = [int(c) for c in det.labels.detach().cpu().tolist()]
    order = np.argsort(scores, kind="stable")[::-1].tolist()  # best first
    texts, sizes = [], []
    for i in order:
        name = class_names[labels[i]] if 0 <= labels[i] < len(class_names) else f"class{labels[i]}"
        texts.append(f"{name} {scores[i]:.2f}")
        tw, th = text_size(texts[-1], px)
        sizes.append((tw + 2, th + 2))
    rects = place_labels([tuple(boxes[i]) for i in order], sizes, (w, h))
    for i in reversed(order):
        x1, y1, x2, y2 = boxes[i]
        cv2.rectangle(out, (x1, y1), (x2, y2), class_color(labels[i]), lw, cv2.LINE_AA)
    drawn = []
    for k in reversed(range(len(order))):  # the best label last: on top where the image is too small
        color = class_color(labels[order[k]])
        drawn.append(Text((rects[k][0] + 1, rects[k][1] + 1), texts[k], text_color_on(color), background=color, pad=1))
    return draw_texts(out, drawn, px)


# --------------------------------------------------------------------------- writing

class PredictionWriter:
    """Saves annotated images/videos and one ``predictions.json`` for a predict run.

    Images keep their file name under ``out_dir``; each video becomes ``<stem>.mp4`` (mp4v), or a folder
    ``<stem>/`` of ``<stem>_<frame>.jpg`` when no mp4 writer can be opened.

    ``predictions.json`` is a COCO results file (``COCO.loadRes`` reads it): a list of ``{"image_id",
    "category_id", "bbox": [x, y, w, h], "score"}`` in original pixels, each with ``"file_name"`` (the
    source path as found), ``"frame"`` (video frame number, ``None`` for an image) and ``"category"`` (the
    class name) beside it. ``image_id`` numbers the images and video frames from 1 in the order they were
    read (:attr:`Frame.index` + 1: sorted file order for folders and globs). Written atomically by
    :meth:`close`.

    Args:
        out_dir: created if missing.
        class_names: name per class index.
        save_images: write annotated images/videos (the JSON is always written).
        cat_ids: category id per class index (default: the class index itself).
    """

    def __init__(
        self,
        out_dir: str | Path,
        class_names: list[str],
        save_images: bool = True,
        cat_ids: list[int] | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.class_names = list(class_names)
        self.cat_ids = list(cat_ids) if cat_ids is not None else list(range(len(class_names)))
        self.save_images = save_images
        self.records: list[dict] = []
        self.saved: list[Path] = []  # annotated images / videos / frame folders, in order
        self._names: dict[str, str] = {}  # source path -> output name (unique)
        self._video_path: str | None = None
        self._video: cv2.VideoWriter | None = None
        self._video_frames_dir: Path | None = None

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def write(self, frame: Frame, det: Detections) -> None:
        """Record ``det`` (original pixels) for ``frame`` and save its annotated picture."""
        self.records.extend(self._records(frame, det))
        if not self.save_images:
            return
        drawn = draw_detections(frame.img, det, self.class_names)
        if frame.is_video:
            self._write_video_frame(frame, drawn)
        else:
            path = self.out_dir / self._output_name(frame.path, Path(frame.path).name)
            if not cv2.imwrite(str(path), drawn):
                raise DetcliError(f"cannot write image '{path}'")
            self.saved.append(path)

    def close(self) -> Path:
        """Finish open videos and write ``predictions.json`` (temp file + rename). Returns its path."""
        self._release_video()
        path = atomic_write_json(self.out_dir / "predictions.json", self.records, indent=None, allow_nan=False)
        return path

    def _records(self, frame: Frame, det: Detections) -> list[dict]:
        """COCO results of one frame, boxes and scores at full float32 precision (:func:`coco_boxes_scores`)."""
        xywh, scores = coco_boxes_scores(det)
        labels = det.labels.detach().cpu().tolist()
        return [
            {
                "image_id": frame.index + 1,
                "category_id": self.cat_ids[int(c)],
                "bbox": b,
                "score": s,
                "file_name": frame.path,
                "frame": frame.frame,
                "category": self.class_names[int(c)],
            }
            for b, s, c in zip(xywh, scores, labels)
        ]

    def _output_name(self, source_path: str, name: str) -> str:
        """``name``, or ``stem_2.ext``… when another source already took it (e.g. a recursive glob)."""
        if source_path in self._names:
            return self._names[source_path]
        taken = set(self._names.values())
        stem, ext = os.path.splitext(name)
        candidate, n = name, 1
        while candidate in taken or candidate == "predictions.json":
            n += 1
            candidate = f"{stem}_{n}{ext}"
        self._names[source_path] = candidate
        return candidate

    def _write_video_frame(self, frame: Frame, drawn: np.ndarray) -> None:
        if frame.path != self._video_path:
            self._release_video()
            self._open_video(frame, drawn)
        if self._video is not None:
            self._video.write(drawn)
        else:
            assert self._video_frames_dir is not None
            stem = self._video_frames_dir.name
            cv2.imwrite(str(self._video_frames_dir / f"{stem}_{frame.frame:06d}.jpg"), drawn)

    def _open_video(self, frame: Frame, drawn: np.ndarray) -> None:
        self._video_path = frame.path
        out_name = self._output_name(frame.path, Path(frame.path).stem + ".mp4")
        path = self.out_dir / out_name
        h, w = drawn.shape[:2]
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), frame.fps or 30.0, (w, h))
        if writer.isOpened():
            self._video = writer
            self.saved.append(path)
            return
        writer.release()
        self._video_frames_dir = self.out_dir / Path(out_name).stem
        self._video_frames_dir.mkdir(parents=True, exist_ok=True)
        self.saved.append(self._video_frames_dir)

    def _release_video(self) -> None:
        if self._video is not None:
            self._video.release()
        self._video = None
        self._video_frames_dir = None
        self._video_path = None


__all__ = [
    "IMAGE_EXTENSIONS",
    "VIDEO_EXTENSIONS",
    "Frame",
    "resolve_source",
    "iter_sources",
    "to_original_pixels",
    "predict_batches",
    "class_color",
    "place_labels",
    "draw_detections",
    "PredictionWriter",
]
