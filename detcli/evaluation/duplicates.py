"""Duplicate detections: how much work NMS would still have to do on a detector's final output.

DeFCN's claim (Wang et al., 2021) is that one-to-one assignment (POTO) with 3D Max Filtering leaves one
detection per object, so NMS is not needed. This measures it on any detector's COCO results: among the
detections scoring above ``score_thr``, the same-image, same-class pairs that overlap with IoU above
``iou_thr``, and the detections that class-aware NMS at ``iou_thr`` would remove.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Iterable

import torch
from torchvision.ops import batched_nms, box_convert, box_iou


@dataclass(frozen=True)
class DuplicateStats:
    """Counts over one set of results.

    Attributes:
        score_thr, iou_thr: the thresholds used.
        detections: detections scoring above ``score_thr``.
        pairs: same-image, same-class pairs among them with IoU > ``iou_thr``.
        duplicates: detections that class-aware NMS at ``iou_thr`` removes (each overlaps a higher-scoring one).
    """

    score_thr: float
    iou_thr: float
    detections: int
    pairs: int
    duplicates: int

    @property
    def rate(self) -> float:
        """``duplicates / detections`` (0 when there are no detections)."""
        return self.duplicates / self.detections if self.detections else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "rate": self.rate}

    def describe(self) -> str:
        return (
            f"duplicates: {self.duplicates} of {self.detections} detections scoring > {self.score_thr:g} "
            f"({100 * self.rate:.1f}%) overlap a higher-scoring same-class detection with IoU > {self.iou_thr:g}; "
            f"{self.pairs} such pairs"
        )


def duplicate_stats(records: Iterable[dict], score_thr: float = 0.3, iou_thr: float = 0.7) -> DuplicateStats:
    """Duplicate counts of COCO result records (``image_id``, ``category_id``, ``bbox`` xywh, ``score``).

    Vectorised per image: one IoU matrix of that image's kept detections (at most ``max_det`` of them),
    masked to same-class pairs; the NMS count is one ``batched_nms`` over all images and classes.
    """
    kept = [r for r in records if r["score"] > score_thr]
    if not kept:
        return DuplicateStats(score_thr, iou_thr, 0, 0, 0)
    image_ids = torch.tensor([r["image_id"] for r in kept], dtype=torch.int64)
    classes = torch.tensor([r["category_id"] for r in kept], dtype=torch.int64)
    boxes = box_convert(torch.tensor([r["bbox"] for r in kept], dtype=torch.float64), "xywh", "xyxy")
    scores = torch.tensor([r["score"] for r in kept], dtype=torch.float64)

    _, group = torch.unique(torch.stack([image_ids, classes], 1), dim=0, return_inverse=True)
    removed = len(kept) - len(batched_nms(boxes.float(), scores.float(), group, iou_thr))

    pairs = 0
    order = torch.argsort(image_ids, stable=True)
    _, counts = torch.unique_consecutive(image_ids[order], return_counts=True)
    for idx in torch.split(order, counts.tolist()):  # one image at a time: (n, n) with n ≤ max_det
        same_class = classes[idx, None] == classes[None, idx]
        overlap = box_iou(boxes[idx], boxes[idx]) > iou_thr
        pairs += int(torch.triu(same_class & overlap, diagonal=1).sum())
    return DuplicateStats(score_thr, iou_thr, len(kept), pairs, removed)


__all__ = ["DuplicateStats", "duplicate_stats"]
