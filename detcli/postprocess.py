"""Score filtering and class-aware NMS shared by the NMS-based heads."""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detcli.structures import Detections


def multiclass_nms(
    boxes: Tensor,
    scores: Tensor,
    score_thr: float,
    iou_thr: float,
    max_det: int,
    pre_nms_topk: int | None = None,
) -> Detections:
    """Multi-label candidates → class-aware NMS → top ``max_det``.

    Args:
        boxes: (N, 4) xyxy, one box per prior (shared by all classes).
        scores: (N, C) class probabilities.
        score_thr: keep (prior, class) pairs with score > score_thr.
        iou_thr: IoU threshold of the per-class NMS (``torchvision.ops.batched_nms``).
        max_det: detections kept after NMS.
        pre_nms_topk: optionally keep only this many best pairs before NMS.
    """
    prior_idx, cls_idx = torch.nonzero(scores > score_thr, as_tuple=True)
    cand_scores = scores[prior_idx, cls_idx]
    if pre_nms_topk is not None and cand_scores.numel() > pre_nms_topk:
        cand_scores, order = cand_scores.topk(pre_nms_topk)
        prior_idx, cls_idx = prior_idx[order], cls_idx[order]
    cand_boxes = boxes[prior_idx]
    keep = batched_nms(cand_boxes.float(), cand_scores.float(), cls_idx, iou_thr)[:max_det]
    return Detections(cand_boxes[keep].float(), cand_scores[keep].float(), cls_idx[keep])
