"""Side-by-side parity of detcli's RTMDet data pipelines with MMDetection 3.3.0's own transforms.

Both run the same stream of synthetic samples (sizes 120–900 px, 0–6 boxes, some without boxes, boxes at the
borders), through the official config dicts (``configs/rtmdet/rtmdet_l_8xb32-300e_coco.py``, ``rtmdet_tiny``,
stage 2, test) and through :func:`detcli.data.transforms.rtmdet.rtmdet_train_pipeline` /
``rtmdet_test_pipeline``. Every random number detcli draws is recorded and replayed into the calls mmdet
makes (``random.randint``/``uniform``, ``np.random.randint``/``uniform``/``random_sample``/``choice``), so the
two must agree exactly: dropped samples, images (uint8, before normalisation) and boxes. Each replay also checks
that mmdet asks for the same kind of draw over the same range, in the same order.

    MMDET_SRC=/path/to/unpacked/wheels python -m benchmarks.parity.rtmdet_pipeline_parity [--samples 60]

(``MMDET_SRC``: a folder holding ``mmdet/``, ``mmengine/`` and mmcv-lite's ``mmcv/``, see
``benchmarks/parity/retinanet_parity.py``). Prints one line per case and ``PARITY OK`` at the end.
"""
from __future__ import annotations

import argparse
import copy
import os
import random
from collections import deque
from pathlib import Path

import numpy as np


from detcli.config.schema import InputConfig, RTMDetAugmentConfig
from detcli.data.transforms.pipeline import Sample
from detcli.data.transforms.rtmdet import rtmdet_test_pipeline, rtmdet_train_pipeline

INPUT = InputConfig(size=(640, 640), keep_ratio=True, channel_order="bgr",
                    mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395))
STAGE2 = {"mosaic": None, "mixup": None, "resize": {"scale": [640, 640]}}


# ----------------------------------------------------------------------------- the draws
class RecordingRng:
    """An ``np.random.Generator`` front that logs each draw as (kind, low, high, size, value)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.log: list[tuple] = []

    def integers(self, low, high=None, size=None):
        value = self.rng.integers(low, high, size)
        self.log.append(("integers", low, high, size, value))
        return value

    def uniform(self, low=0.0, high=1.0, size=None):
        value = self.rng.uniform(low, high, size)
        self.log.append(("uniform", low, high, size, value))
        return value

    def random(self, size=None):
        value = self.rng.random(size)
        self.log.append(("random", 0.0, 1.0, size, value))
        return value


class Replay:
    """Stands in for NumPy's global draws inside mmdet, answering from a log.

    mmdet's ``transforms.py`` imports ``from numpy import random``: its ``random.randint(a, b)`` is NumPy's,
    upper bound exclusive. Python's ``random`` is patched too, so a draw from it would show up as a mismatch.
    """

    def __init__(self) -> None:
        self.queue: deque = deque()
        self.saved: dict = {}

    def _pop(self, kinds: tuple[str, ...], low, high, size=None):
        if not self.queue:
            raise AssertionError(f"mmdet draws {kinds} ({low}, {high}) but detcli drew nothing more")
        kind, lo, hi, sz, value = self.queue.popleft()
        if kind not in kinds or (kind != "random" and (lo, hi, sz) != (low, high, size)):
            raise AssertionError(f"mmdet draws {kinds[0]}({low}, {high}, size={size}); detcli drew {kind}({lo}, {hi}, size={sz})")
        if kind == "random" and (low, high) != (0.0, 1.0):
            return low + (high - low) * value
        return value

    # Python random (inclusive randint) ----------------------------------------------------------
    def py_randint(self, a, b):
        return int(self._pop(("integers",), a, b + 1))

    def py_uniform(self, a, b):
        return float(self._pop(("uniform", "random"), a, b))

    # NumPy global ------------------------------------------------------------------------------
    def np_randint(self, low, high=None, size=None, dtype=int):
        return self._pop(("integers",), low, high, size)

    def np_uniform(self, low=0.0, high=1.0, size=None):
        if (low, high, size) == (0, 1, None):  # a gate: detcli draws rng.random()
            return float(self._pop(("random",), 0.0, 1.0))
        return self._pop(("uniform",), low, high, size)

    def np_random_sample(self, size=None):
        return self._pop(("random",), 0.0, 1.0, size)

    def np_choice(self, options, size=None, replace=True, p=None):
        u = self._pop(("random",), 0.0, 1.0)
        return options[int(np.searchsorted(np.cumsum(p), u, side="right"))]

    def __enter__(self) -> "Replay":
        self.saved = {"randint": random.randint, "uniform": random.uniform, "np_randint": np.random.randint,
                      "np_uniform": np.random.uniform, "np_random_sample": np.random.random_sample,
                      "np_choice": np.random.choice}
        random.randint, random.uniform = self.py_randint, self.py_uniform
        np.random.randint, np.random.uniform = self.np_randint, self.np_uniform
        np.random.random_sample, np.random.choice = self.np_random_sample, self.np_choice
        return self

    def __exit__(self, *exc) -> None:
        random.randint, random.uniform = self.saved["randint"], self.saved["uniform"]
        np.random.randint, np.random.uniform = self.saved["np_randint"], self.saved["np_uniform"]
        np.random.random_sample, np.random.choice = self.saved["np_random_sample"], self.saved["np_choice"]


# ----------------------------------------------------------------------------- data
def synthetic_samples(n: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """``n`` (img uint8 BGR, boxes (G, 4) float32, labels (G,) int64) with varied sizes and box layouts."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(120, 900)), int(rng.integers(120, 900))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = cv2_smooth(img)
        g = 0 if i % 7 == 3 else int(rng.integers(1, 7))
        xy = rng.uniform(0, 1, (g, 2)) * [w, h]
        wh = rng.uniform(4, 0.6 * min(w, h), (g, 2))
        boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1).clip(0, [w, h, w, h]).astype(np.float32)
        boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
        out.append((img, boxes, rng.integers(0, 80, len(boxes)).astype(np.int64)))
    return out


def cv2_smooth(img: np.ndarray) -> np.ndarray:
    """Blurred noise: resizes and colour conversions then see realistic gradients, not white noise."""
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 3)


# ----------------------------------------------------------------------------- mmdet side
def official_pipelines(src: str) -> dict[str, list[dict]]:
    """The official pipelines (after LoadImage/LoadAnnotations, before PackDetInputs) from the mmdet configs."""
    from mmengine.config import Config

    cfg_dir = Path(src) / "mmdet/.mim/configs/rtmdet"
    l_cfg = Config.fromfile(str(cfg_dir / "rtmdet_l_8xb32-300e_coco.py"))
    tiny_cfg = Config.fromfile(str(cfg_dir / "rtmdet_tiny_8xb32-300e_coco.py"))
    s_cfg = Config.fromfile(str(cfg_dir / "rtmdet_s_8xb32-300e_coco.py"))
    strip = lambda p: [dict(t) for t in p if t["type"] not in ("LoadImageFromFile", "LoadAnnotations", "PackDetInputs")]  # noqa: E731
    switch = [h for h in s_cfg.custom_hooks if h["type"] == "PipelineSwitchHook"][0]
    return {
        "l stage 1": strip(l_cfg.train_pipeline),
        "tiny stage 1": strip(tiny_cfg.train_pipeline),
        "s stage 2": strip(switch["switch_pipeline"]),
        "test": strip(l_cfg.test_pipeline),
    }


def mmdet_results(img, boxes, labels) -> dict:
    from mmdet.structures.bbox import HorizontalBoxes

    h, w = img.shape[:2]
    return {"img": img.copy(), "img_shape": (h, w), "ori_shape": (h, w), "img_id": 0, "img_path": "",
            "gt_bboxes": HorizontalBoxes(boxes.copy()), "gt_bboxes_labels": labels.copy(),
            "gt_ignore_flags": np.zeros(len(labels), dtype=bool)}


# ----------------------------------------------------------------------------- detcli side
def detcli_pipelines():
    l_aug = RTMDetAugmentConfig(type="rtmdet")
    tiny_aug = RTMDetAugmentConfig.model_validate({
        "type": "rtmdet", "resize": {"ratio_range": [0.5, 2.0]},
        "mosaic": {"max_cached_images": 20, "random_pop": False},
        "mixup": {"max_cached_images": 10, "random_pop": False, "prob": 0.5},
    })
    s_aug = RTMDetAugmentConfig.model_validate({"type": "rtmdet", "resize": {"ratio_range": [0.5, 2.0]},
                                                "switch": {"epochs_from_end": 20, "set": STAGE2}})
    return {
        "l stage 1": rtmdet_train_pipeline(l_aug, INPUT),
        "tiny stage 1": rtmdet_train_pipeline(tiny_aug, INPUT),
        "s stage 2": rtmdet_train_pipeline(s_aug.switched(), INPUT),
        "test": rtmdet_test_pipeline(l_aug, (640, 640), INPUT),
    }


def drew(log: list[tuple], kind: str, low, high) -> bool:
    return any(e[0] == kind and (e[1], e[2]) == (low, high) for e in log)


def compare(name: str, ours_pipe, theirs, samples, seed: int) -> dict[str, int]:
    """Run both over ``samples``; returns how often each path ran, or raises on the first difference."""
    counts = {"dropped": 0, "mosaics": 0, "mixups": 0}
    for i, (img, boxes, labels) in enumerate(samples):
        rng = RecordingRng(seed * 100003 + i)
        ours = ours_pipe.run(Sample.from_arrays(img, boxes, labels), rng)
        with Replay() as replay:
            replay.queue.extend(rng.log)
            out = theirs(mmdet_results(img, boxes, labels))
            left = len(replay.queue)
        where = f"{name}, sample {i}"
        assert left == 0, f"{where}: mmdet made {left} draw(s) fewer than detcli"
        assert (ours is None) == (out is None), f"{where}: dropped by {'detcli' if ours is None else 'mmdet'} only"
        counts["mosaics"] += drew(rng.log, "uniform", 0.5, 1.5)  # the mosaic centre
        counts["mixups"] += drew(rng.log, "uniform", 1.0, 1.0)  # the mixup jitter
        if ours is None:
            counts["dropped"] += 1
            continue
        their_boxes = out["gt_bboxes"].numpy() if hasattr(out["gt_bboxes"], "numpy") else np.asarray(out["gt_bboxes"])
        assert ours.img.shape == out["img"].shape, f"{where}: image {ours.img.shape} vs {out['img'].shape}"
        diff = np.abs(ours.img.astype(int) - out["img"].astype(int))
        assert diff.max() == 0, f"{where}: {int((diff > 0).sum())} pixel values differ (max {diff.max()})"
        assert ours.boxes.shape == their_boxes.shape, f"{where}: {len(ours.boxes)} boxes vs {len(their_boxes)}"
        np.testing.assert_array_equal(ours.boxes, their_boxes.astype(np.float32), err_msg=where)
        np.testing.assert_array_equal(ours.labels, out["gt_bboxes_labels"], err_msg=where)
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=60)
    args = ap.parse_args()
    src = os.environ.get("MMDET_SRC") or os.environ.get("MMDET_REPO")
    if not src:
        print("set MMDET_SRC to an unpacked mmdet 3.3.0 + mmengine + mmcv-lite folder")
        return 2
    from benchmarks.common.official_mmdet import import_mmdet

    import_mmdet(src)
    from mmcv.transforms import Compose
    import mmdet

    print(f"mmdet {mmdet.__version__} from {src}")
    samples = synthetic_samples(args.samples)
    ours_all = detcli_pipelines()
    for k, (name, cfg) in enumerate(official_pipelines(src).items()):
        theirs = Compose(copy.deepcopy(cfg))
        c = compare(name, ours_all[name], theirs, samples, seed=k)
        print(f"[ok] {name}: {len(samples)} samples identical (images, boxes, labels, draws): "
              f"{c['mosaics']} mosaics, {c['mixups']} mixups, {c['dropped']} dropped by RandomCrop in both")
    print("PARITY OK")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
