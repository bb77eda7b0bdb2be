"""End-to-end golden fixtures: from an image file to the final detections, official tool vs ``detcli predict``.

A fixture ``tests/golden/e2e/<preset>.json`` holds what the official tool's own inference entry point returned
for the photographs in ``tests/golden/e2e/images/`` with the golden weights of ``tests/golden/<weights>.json``
(its ``spec`` and ``seed``, rebuilt by :func:`golden.weights.fixture_state_dict`), numbers only::

    {
      "preset": "rtmdet-tiny",            # detcli preset the CLI runs
      "weights": "rtmdet-tiny",           # golden raw-output fixture whose spec + seed give the weights
      "weights_overrides": {"bn_scales": ...},   # optional: recipe parts replaced (tests/golden/weights.py)
      "source": {...},                    # official code, versions, entry point (e.g. mmdet.apis.inference_detector)
      "entry_point": "...",               # in words
      "test_cfg": {"score_thr": .., "iou_thr": .., "max_det": ..},   # the official test settings used
      "classes": ["person", ...],         # official class names in label order
      "images": {"chelsea.jpg": {"boxes": [[x1, y1, x2, y2], ...],  # original pixels, float32 values
                                 "scores": [...], "labels": [...]}, ...}
    }

The test writes the weights as an official checkpoint (:func:`golden.checkpoints.write_official_checkpoint`),
runs ``detcli predict`` through the CLI on the images and compares ``predictions.json`` with
:func:`match_detections`: the same count per image and every official detection matched one to one by a detcli
detection of the same class within ``BOX_TOL`` px on every side and ``SCORE_TOL`` in score.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tests.golden.checkpoints import write_official_checkpoint
from tests.golden.weights import fixture_state_dict

GOLDEN = Path(__file__).resolve().parent
E2E = GOLDEN / "e2e"
IMAGES = E2E / "images"
BOX_TOL = 1e-3  # px, original image
SCORE_TOL = 1e-5


def e2e_fixture(preset: str) -> dict:
    """The end-to-end fixture of ``preset``."""
    return json.loads((E2E / f"{preset}.json").read_text())


def official_checkpoint(doc: dict, directory: Path) -> Path:
    """The fixture's golden weights written as the official tool saves them; returns the file."""
    raw = json.loads((GOLDEN / f"{doc['weights']}.json").read_text())
    raw.update(doc.get("weights_overrides", {}))  # e.g. BatchNorm statistics calibrated on the photos
    path, _ = write_official_checkpoint(raw, fixture_state_dict(raw), directory)
    return path


def predict_args(doc: dict, checkpoint: Path, out: Path, *extra: str) -> list[str]:
    """``detcli predict --exact`` arguments that run the fixture's images with its official test settings (the exact
    path: the network as loaded, one image per forward pass, as the official tools test)."""
    cfg = doc["test_cfg"]
    args = ["predict", str(IMAGES), "--exact", "--preset", doc["preset"], "--weights", str(checkpoint),
            "--conf", repr(float(cfg["score_thr"])), "--max-det", str(int(cfg["max_det"])),
            "--project", str(out), "--name", "run", "--no-save"]
    if cfg.get("iou_thr") is not None:
        args += ["--iou", repr(float(cfg["iou_thr"]))]
    return args + list(extra)


@dataclass
class ImageDetections:
    boxes: np.ndarray  # (K, 4) float64 xyxy, original pixels
    scores: np.ndarray  # (K,)
    names: list[str]  # (K,) class names


def official_detections(doc: dict) -> dict[str, ImageDetections]:
    """file name → the official detections of the fixture."""
    out = {}
    for name, d in doc["images"].items():
        boxes = np.asarray(d["boxes"], dtype=np.float64).reshape(-1, 4)
        out[name] = ImageDetections(boxes, np.asarray(d["scores"], dtype=np.float64),
                                    [doc["classes"][int(c)] for c in d["labels"]])
    return out


class _PerImage(dict):
    """file name → detections; an image without any record has none (an empty entry)."""

    def __missing__(self, name: str) -> ImageDetections:
        return ImageDetections(np.zeros((0, 4)), np.zeros((0,)), [])


def detcli_detections(predictions_json: Path) -> dict[str, ImageDetections]:
    """file name → detections of a ``predictions.json`` (COCO xywh back to xyxy; images without a record: empty)."""
    records = json.loads(predictions_json.read_text())
    grouped: dict[str, list[dict]] = {}
    for r in records:
        grouped.setdefault(Path(r["file_name"]).name, []).append(r)
    out = _PerImage()
    for name, rs in grouped.items():
        xywh = np.asarray([r["bbox"] for r in rs], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        out[name] = ImageDetections(boxes, np.asarray([r["score"] for r in rs], dtype=np.float64),
                                    [r["category"] for r in rs])
    return out


def match_detections(official: ImageDetections, ours: ImageDetections,
                     box_tol: float = BOX_TOL, score_tol: float = SCORE_TOL) -> list[str]:
    """Problems (empty when the two agree): another count, or official detections without a partner.

    Every official detection, best score first, takes the first unused detcli detection of the same class
    whose four sides are within ``box_tol`` and score within ``score_tol`` (ties in score may come in either
    order, so ranks are not compared).
    """
    problems = []
    if len(official.scores) != len(ours.scores):
        problems.append(f"{len(ours.scores)} detections, the official tool has {len(official.scores)}")
    close = ((np.abs(official.boxes[:, None, :] - ours.boxes[None, :, :]).max(-1, initial=0) <= box_tol)
             & (np.abs(official.scores[:, None] - ours.scores[None, :]) <= score_tol)
             & (np.asarray(official.names, dtype=object)[:, None] == np.asarray(ours.names, dtype=object)[None, :]))
    used = np.zeros(len(ours.scores), dtype=bool)
    unmatched = []
    for i in np.argsort(-official.scores, kind="stable"):
        free = np.flatnonzero(close[i] & ~used)
        if len(free):
            used[free[0]] = True
        else:
            unmatched.append(int(i))
    if unmatched:
        i = unmatched[0]
        j = int(np.argmin(np.abs(official.boxes[i] - ours.boxes).max(-1))) if len(ours.scores) else None
        nearest = ("no detcli detection" if j is None else
                   f"nearest detcli {ours.names[j]} {np.round(ours.boxes[j], 4).tolist()} score {ours.scores[j]:.6f}")
        problems.append(f"{len(unmatched)} of {len(official.scores)} official detections unmatched, e.g. "
                        f"{official.names[i]} {np.round(official.boxes[i], 4).tolist()} score "
                        f"{official.scores[i]:.6f} ({nearest})")
    return problems
