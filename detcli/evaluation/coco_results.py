"""Detections as the numbers of a COCO results file (``bbox`` [x, y, w, h], ``score``), at full float32 precision.

``predict`` (``PredictionWriter``) and ``eval`` (``CocoEvaluator``) write their ``predictions.json`` through
:func:`coco_boxes_scores`, so both files hold the model's float32 values themselves, nothing rounded: x, y and the
score are float32 values as Python floats (``json`` writes a float's shortest round-trip repr, so a reader gets
them back exactly); w = x2 − x1 and h = y2 − y1 are taken in float64 from the float32 corners. That difference is
exact whenever the two corners are within a factor 2^28 of each other (every box of a real image but one touching
0 from ~1e-7 px), so ``x + w`` gives back x2 exactly there, and within one float64 rounding otherwise.
"""
from __future__ import annotations

from detcli.structures import Detections


def coco_boxes_scores(det: Detections) -> tuple[list[list[float]], list[float]]:
    """(xywh, scores) of ``det`` as Python floats for a COCO results file.

    Args:
        det: boxes (K, 4) xyxy (any float dtype, any device; taken at float32, the model's precision), scores (K,).
    Returns:
        K lists [x1, y1, x2 − x1, y2 − y1] and K scores, each corner and score exactly its float32 value.
    """
    boxes = det.boxes.detach().cpu().float().double().reshape(-1, 4)
    xywh = boxes.clone()
    xywh[:, 2:] -= boxes[:, :2]
    return xywh.tolist(), det.scores.detach().cpu().float().double().reshape(-1).tolist()
