"""Duplicate detections (what NMS would still remove), on a hand-made set of COCO results."""
from __future__ import annotations

import pytest

from detcli.evaluation.duplicates import duplicate_stats


def rec(image_id: int, cat: int, x1: float, y1: float, x2: float, y2: float, score: float) -> dict:
    return {"image_id": image_id, "category_id": cat, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}


RECORDS = [
    rec(1, 1, 0, 0, 10, 10, 0.9),
    rec(1, 1, 0, 0, 10, 11, 0.8),   # IoU 100/110 with the first: a pair, removed by NMS
    rec(1, 2, 0, 0, 10, 10, 0.7),   # same box, other class: not a pair
    rec(1, 1, 0, 0, 10, 10, 0.2),   # below the score threshold: not counted at all
    rec(2, 1, 0, 0, 10, 10, 0.9),   # same box as image 1's first, other image: not a pair
    rec(2, 1, 1, 0, 11, 10, 0.8),   # IoU 90/110 with the previous: a pair, removed
    rec(2, 1, 2, 0, 12, 10, 0.75),  # IoU 80/120 with the first (kept by NMS), 90/110 with the removed one: a pair
]


def test_duplicate_counts_by_hand():
    s = duplicate_stats(RECORDS, score_thr=0.3, iou_thr=0.7)
    assert (s.detections, s.pairs, s.duplicates) == (6, 3, 2)
    assert s.rate == pytest.approx(2 / 6)
    assert s.to_dict()["rate"] == pytest.approx(1 / 3)
    assert "2 of 6 detections" in s.describe()


def test_thresholds_move_the_counts():
    assert duplicate_stats(RECORDS, score_thr=0.1, iou_thr=0.7).detections == 7
    # at IoU 0.95 nothing overlaps enough; at 0.6 the 80/120 pair joins
    assert duplicate_stats(RECORDS, 0.3, 0.95).pairs == 0
    loose = duplicate_stats(RECORDS, 0.3, 0.6)
    assert (loose.pairs, loose.duplicates) == (4, 3)


def test_no_detections():
    s = duplicate_stats([], 0.3, 0.7)
    assert (s.detections, s.pairs, s.duplicates, s.rate) == (0, 0, 0, 0.0)
