"""A random COCO ground truth and detections that reach every branch of COCOeval (bbox).

Used by ``tests/unit/test_coco_backend.py`` (a few hundred images) and ``benchmarks/speed/coco_eval_speed.py`` (thousands).
What it contains, so a comparison of two evaluators covers it:

- images of three sizes, about 1 in 8 without any ground truth;
- boxes of every COCO area range (sides log-uniform in 3…450 px: small < 32², medium, large ≥ 96²);
- crowd boxes (``iscrowd: 1``, about 1 in 20), which detections may match without counting;
- categories 1, 2, 3, 5 with ground truth; 8 with ground truth but never detected; 13 detected but without
  ground truth; 21 with neither;
- detections: 0–3 jittered copies of each ground-truth box (some with the wrong class), random false
  positives, and on every 50th image 150 detections (more than maxDets = 100); scores rounded to
  2 decimals on every 3rd image, so ties occur.
"""
from __future__ import annotations

import numpy as np

SIZES = ((640, 480), (800, 600), (320, 320))
GT_CATEGORIES = (1, 2, 3, 5, 8)
DETECTED = (1, 2, 3, 5, 13)
CATEGORIES = (1, 2, 3, 5, 8, 13, 21)


def synthetic_coco(num_images: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """(ground-truth dataset dict, COCO results list) for ``num_images`` images.

    The dataset dict has ``images``, ``categories``, ``annotations`` (``bbox`` [x, y, w, h], ``area`` = w·h,
    ``iscrowd``); each result has ``image_id``, ``category_id``, ``bbox`` (2 decimals) and ``score``.
    """
    rng = np.random.default_rng(seed)
    images, annotations, results = [], [], []
    for image_id in range(1, num_images + 1):
        width, height = SIZES[int(rng.integers(len(SIZES)))]
        images.append({"id": image_id, "file_name": f"{image_id:06d}.jpg", "width": width, "height": height})
        count = 0 if rng.random() < 0.125 else int(rng.integers(1, 12))
        boxes = [_box(rng, width, height) for _ in range(count)]
        for box in boxes:
            crowd = int(rng.random() < 0.05)
            category = int(rng.choice(GT_CATEGORIES))
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": category, "bbox": box,
                "area": box[2] * box[3], "iscrowd": crowd,
            })
            if category == 8:
                continue  # a category that is never detected
            for _ in range(int(rng.integers(0, 4))):
                label = category if rng.random() < 0.85 else int(rng.choice(DETECTED))
                results.append(_result(rng, image_id, label, _jitter(rng, box), image_id))
        false_positives = 150 if image_id % 50 == 0 else int(rng.integers(0, 4))
        for _ in range(false_positives):
            results.append(_result(rng, image_id, int(rng.choice(DETECTED)), _box(rng, width, height), image_id))
    categories = [{"id": c, "name": f"class{c}", "supercategory": "thing"} for c in CATEGORIES]
    return {"images": images, "categories": categories, "annotations": annotations}, results


def _box(rng: np.random.Generator, width: int, height: int) -> list[float]:
    """A box inside the image, sides log-uniform in 3…450 px (capped by the image)."""
    w, h = (min(float(np.exp(rng.uniform(np.log(3), np.log(450)))), size - 1) for size in (width, height))
    x, y = rng.uniform(0, width - w), rng.uniform(0, height - h)
    return [round(float(v), 2) for v in (x, y, w, h)]


def _jitter(rng: np.random.Generator, box: list[float]) -> list[float]:
    x, y, w, h = box
    dx, dy, dw, dh = rng.normal(0, 0.12, 4) * (w, h, w, h)
    return [round(float(v), 2) for v in (x + dx, y + dy, max(1.0, w + dw), max(1.0, h + dh))]


def _result(rng: np.random.Generator, image_id: int, category: int, box: list[float], key: int) -> dict:
    digits = 2 if key % 3 == 0 else 5  # coarse scores on every 3rd image: ties
    return {"image_id": image_id, "category_id": category, "bbox": box, "score": round(float(rng.random()), digits)}
