"""A hand-made evaluation (two classes, two images) for the P/R curve and confusion-matrix pictures."""
from __future__ import annotations

import contextlib
import io

import torch
from pycocotools.coco import COCO

from detcli.evaluation.evaluator import CocoEvaluator
from detcli.structures import Detections


def _gt() -> COCO:
    """Image 1: "a" at (0,0,10,10) and (20,20,30,30); image 2: "a" at (0,0,10,10), "b" at (50,50,60,60)."""
    boxes = [(1, 1, [0, 0, 10, 10]), (1, 1, [20, 20, 10, 10]), (2, 1, [0, 0, 10, 10]), (2, 2, [50, 50, 10, 10])]
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 100, "width": 100} for i in (1, 2)],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
        "annotations": [{"id": k + 1, "image_id": img, "category_id": cat, "bbox": b, "area": 100.0, "iscrowd": 0}
                        for k, (img, cat, b) in enumerate(boxes)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _det(rows: list[tuple[list[float], float, int]]) -> Detections:
    return Detections(torch.tensor([r[0] for r in rows], dtype=torch.float32).reshape(-1, 4),
                      torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows], dtype=torch.int64))


def _evaluate():
    """Class "a" (3 GT): 0.9 TP, 0.8 FP (no GT there), 0.6 TP, 0.1 TP (on the second box of image 1).
    Class "b" (1 GT): 0.7 TP, 0.3 FP (on image 2's "a" box, IoU 0.9)."""
    ev = CocoEvaluator(_gt(), [1, 2], ["a", "b"])
    ev.add(1, _det([([0, 0, 10, 10], 0.9, 0), ([40, 40, 50, 50], 0.8, 0), ([20, 20, 30, 30], 0.1, 0)]))
    ev.add(2, _det([([0, 0, 10, 10], 0.6, 0), ([50, 50, 60, 60], 0.7, 1), ([0, 0, 10, 9], 0.3, 1)]))
    return ev.evaluate()
