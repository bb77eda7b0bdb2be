"""Pairwise IoU of two sets of ``xyxy`` boxes: the one IoU the assigners and the assignment statistics use."""
from __future__ import annotations

import torch
from torch import Tensor


def pairwise_iou(boxes1: Tensor, boxes2: Tensor, *, union_eps: float | None = None,
                 nan: float | None = None) -> Tensor:
    """IoU of every pair, batched over leading dimensions.

    The arithmetic of ``torchvision.ops.box_iou`` (areas ``(x2 - x1)·(y2 - y1)``, intersection clamped at 0,
    ``inter / (area1 + area2 - inter)``), bit for bit on 2-D inputs without ``union_eps`` (tested), extended
    to leading batch dimensions, which ``box_iou`` does not take.

    Args:
        boxes1: (..., N, 4) ``xyxy``.
        boxes2: (..., M, 4) ``xyxy``, the same leading dimensions (or broadcastable to them).
        union_eps: clamp the union at this before dividing (mmdet's and NanoDet's ``bbox_overlaps``: 1e-6), so
            degenerate pairs give 0; None: plain division (0 / 0 gives NaN).
        nan: ``Tensor.nan_to_num(nan)`` of the result (detectron2's ``pairwise_iou`` gives 0 for an empty
            pair); None: left as is.

    Returns:
        (..., N, M) IoU.
    """
    area1 = (boxes1[..., 2] - boxes1[..., 0]) * (boxes1[..., 3] - boxes1[..., 1])
    area2 = (boxes2[..., 2] - boxes2[..., 0]) * (boxes2[..., 3] - boxes2[..., 1])
    lt = torch.max(boxes1[..., :, None, :2], boxes2[..., None, :, :2])
    rb = torch.min(boxes1[..., :, None, 2:], boxes2[..., None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = area1[..., :, None] + area2[..., None, :] - inter
    if union_eps is not None:
        union = union.clamp(min=union_eps)
    iou = inter / union
    return iou if nan is None else iou.nan_to_num(nan)
