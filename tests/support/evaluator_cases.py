"""A hand-made COCO ground truth (3 images, categories 3 and 7) and detections for the evaluator."""
from __future__ import annotations

import contextlib
import io

import torch
from pycocotools.coco import COCO

from detcli.evaluation.evaluator import CocoEvaluator
from detcli.structures import Detections


def _gt() -> COCO:
    """3 images, categories 3 ("three") and 7 ("seven"); every box is 60x60 (area 3600 = COCO 'medium').

    image 1: cat 3 at xyxy (10,10,70,70), cat 7 at (100,100,160,160); image 2: cat 3 at (20,20,80,80);
    image 3: no ground truth at all.
    """
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 200} for i in (1, 2, 3)],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 60, 60], "area": 3600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 100, 60, 60], "area": 3600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [20, 20, 60, 60], "area": 3600, "iscrowd": 0},
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# Class index 0 is category 7 and index 1 is category 3: the reverse of COCOeval's sorted order.
CAT_IDS = [7, 3]


NAMES = ["seven", "three"]


def _det(boxes, scores, labels) -> Detections:
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


def _evaluator() -> CocoEvaluator:
    return CocoEvaluator(_gt(), CAT_IDS, NAMES)
