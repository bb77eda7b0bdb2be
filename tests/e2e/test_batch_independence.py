"""An image's detections never depend on the other images of its batch (``predict`` and ``eval``).

Official tests run at batch 1, each image padded only to the size divisor; detcli stacks only images of one
padded shape (:func:`detcli.data.collate.split_by_shape`), so every image's input tensor is the one it has
alone. Before, a batch was padded to its largest image: DeFCN's GroupNorm head then normalised over the
padding, and every family saw other border features.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.console import Reporter
from detcli.data.build import build_transform
from detcli.data.collate import collate, split_by_shape
from detcli.evaluation.evaluate import predict_dataset
from detcli.inference.loop import Frame, predict_batches
from detcli.structures import ImageMeta


def _sample(h: int, w: int, value: float, image_id: int = 0) -> dict:
    meta = ImageMeta(image_id, f"{image_id}.jpg", (h, w), (h, w), np.eye(3).tolist())
    img = torch.full((3, h, w), value) + torch.arange(w, dtype=torch.float32) / w
    return {"img": img, "boxes": np.zeros((1, 4), np.float32), "labels": np.zeros(1, np.int64), "meta": meta}


# --------------------------------------------------------------------------- split_by_shape
def test_split_gives_every_image_its_batch_of_one_tensor():
    """At divisor 32, (h, w) 40×70 and 50×90 pad to 64×96, 60×64 and 33×64 to 64×64: two groups."""
    samples = [_sample(40, 70, 1.0, 0), _sample(60, 64, 2.0, 1), _sample(33, 64, 3.0, 2), _sample(50, 90, 4.0, 3)]
    batch = collate(samples, size_divisor=32, pad_value=-1.0)
    assert tuple(batch.images.shape) == (4, 3, 64, 96) and batch.pad_shapes == [(64, 96), (64, 64), (64, 64), (64, 96)]
    groups = split_by_shape(batch)
    assert [idx for idx, _ in groups] == [[0, 3], [1, 2]]  # first image's order, ascending inside
    for idx, group in groups:
        alone = [collate([samples[i]], size_divisor=32, pad_value=-1.0) for i in idx]
        assert torch.equal(group.images, torch.cat([a.images for a in alone]))
        assert [m.image_id for m in group.metas] == idx and group.pad_shapes == alone[0].pad_shapes * len(idx)
        assert all(torch.equal(t.boxes, batch.targets[i].boxes) for t, i in zip(group.targets, idx))


def test_split_of_one_shape_is_the_batch_itself_and_of_none_is_empty():
    batch = collate([_sample(64, 64, 0.0), _sample(50, 60, 1.0)], size_divisor=32)
    ((idx, group),) = split_by_shape(batch)
    assert idx == [0, 1] and group.images is batch.images
    unreadable = {"img": None, "unreadable": True, "meta": _sample(8, 8, 0.0)["meta"]}
    assert split_by_shape(collate([unreadable])) == []


# --------------------------------------------------------------------------- every family, predict and eval
FAMILIES = {  # preset (its golden weights: tests/golden/<preset>.json), --imgsz: small inputs
    "nanodet-plus-m": 128,
    "rtmdet-tiny": 128,
    "retinanet-r18-fpn": 160,
    "defcn-r50-fpn": 160,
}


def _model(name: str, directory: Path):
    """The preset's model with the seeded golden weights, loaded from an official checkpoint (``--weights``)."""
    from tests.golden.checkpoints import write_official_checkpoint
    from tests.golden.weights import fixture_state_dict

    from detcli.inference.loading import load_for_inference

    doc = json.loads((Path(__file__).parents[1] / "golden" / f"{name}.json").read_text())
    path, _ = write_official_checkpoint(doc, fixture_state_dict(doc), directory)
    loaded = load_for_inference(path, name, [], torch.device("cpu"))
    path.unlink()  # R50: ~150 MB
    return loaded.preset, loaded.model.eval()


def _photo(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth random BGR picture (blocks of noise, upsampled): real-looking structure for every head."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    import cv2

    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _same(a, b) -> bool:
    return torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores) and torch.equal(a.labels, b.labels)


def _close(a, b) -> bool:
    """Equal to float32 rounding at the end-to-end fixtures' bar: same count and labels, 1e-3 px, 1e-5 score."""
    return (len(a.scores) == len(b.scores) and torch.equal(a.labels, b.labels)
            and bool((a.boxes - b.boxes).abs().le(1e-3).all()) and bool((a.scores - b.scores).abs().le(1e-5).all()))


class _Collect:
    """The two entry points of a CocoEvaluator that ``predict_dataset`` calls."""

    def __init__(self):
        self.dets = {}

    def add(self, image_id, det):
        self.dets[image_id] = det

    def skip(self, image_id, file_name):
        raise AssertionError("nothing is unreadable")


@pytest.mark.parametrize("name", list(FAMILIES))
def test_detections_do_not_depend_on_batch_mates(name, one_thread, tmp_path):
    """The 300×451 photo alone, and among a tall, a large and a square photo (batch 4), through
    ``predict_batches`` (predict) and ``predict_dataset`` (eval, validation).

    Keep-ratio families (RetinaNet, DeFCN) give the four photos four padded shapes: four passes, the same
    detections bit for bit. NanoDet-Plus and RTMDet resize/pad every photo to one input size: one pass of 4,
    whose kernels may sum in another order than a pass of 1 (float32 rounding: oneDNN picks its algorithm by
    batch size too), so equal to rounding there, and bit for bit with one image per pass (``--batch 1``).
    """
    preset, model = _model(name, tmp_path)
    transform = build_transform(preset, train=False, imgsz=FAMILIES[name])
    shapes = [(500, 240), (300, 451), (700, 900), (256, 256)]
    frames = [Frame(img=_photo(h, w, i), path=f"{i}.jpg", index=i) for i, (h, w) in enumerate(shapes)]
    coll = lambda s: collate(s, size_divisor=preset.input.size_divisor)  # noqa: E731
    test = model.postprocess_cfg.replace(score_thr=0.0)  # every candidate: the strictest comparison

    def run(fs, b):
        return list(predict_batches(model, fs, transform, b, "cpu", test, preset.input.size_divisor))

    alone = run([frames[1]], 1)[0][1]
    together = run(frames, 4)
    assert [f.index for f, _ in together] == [0, 1, 2, 3]  # order kept
    rng = np.random.default_rng(0)
    samples = []
    for f in frames:
        out = transform(f.img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng)
        meta = ImageMeta(f.index, f.path, f.img.shape[:2], tuple(int(v) for v in out["img_shape"]),
                         np.asarray(out["warp_matrix"], dtype=np.float64).tolist())
        samples.append({"img": out["img"], "boxes": out["boxes"], "labels": out["labels"], "meta": meta})
    pad_shapes = coll(samples).pad_shapes
    one_shape = pad_shapes.count(pad_shapes[1]) > 1
    assert one_shape == (name in ("nanodet-plus-m", "rtmdet-tiny")) and (one_shape or len(set(pad_shapes)) == 4)
    assert len(alone.scores) > 0 and (_close if one_shape else _same)(together[1][1], alone)
    assert _same(run(frames, 1)[1][1], alone)

    got = {}
    for batch_samples in ([samples[1]], samples):
        ev = _Collect()
        predict_dataset(model, [coll(batch_samples)], torch.device("cpu"), test, ev, Reporter(silent=True))
        got[len(batch_samples)] = ev.dets[1]
    assert _same(got[1], alone)  # eval maps back as predict does
    assert (_close if one_shape else _same)(got[4], alone)
