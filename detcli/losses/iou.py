"""GIoU loss (Rezatofighi et al., 2019) on aligned box pairs, with element weights and an average factor.

Written in closed form rather than with ``torchvision.ops.generalized_box_iou_loss``: torchvision adds
its eps (default 1e-7) to the union and enclosing area, while NanoDet's ``GIoULoss`` (and mmdet's, used by
RTMDet) clamps them from below with ``max(., 1e-6)``. The two agree to ~1e-7 on ordinary boxes; the
clamped form is kept for exact parity with the official training runs.
"""
from __future__ import annotations

import torch
from torch import Tensor


def generalized_iou_aligned(pred: Tensor, target: Tensor, eps: float = 1e-6) -> Tensor:
    """GIoU of aligned pairs.

    Args:
        pred, target: (M, 4) ``xyxy``.
        eps: lower clamp of the union and the enclosing area (official value 1e-6).

    Returns:
        (M,) GIoU in [-1, 1].
    """
    area_p = (pred[:, 2] - pred[:, 0]) * (pred[:, 3] - pred[:, 1])
    area_t = (target[:, 2] - target[:, 0]) * (target[:, 3] - target[:, 1])
    lt = torch.max(pred[:, :2], target[:, :2])
    rb = torch.min(pred[:, 2:], target[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    union = (area_p + area_t - inter).clamp(min=eps)
    enclose_wh = (torch.max(pred[:, 2:], target[:, 2:]) - torch.min(pred[:, :2], target[:, :2])).clamp(min=0)
    enclose = (enclose_wh[:, 0] * enclose_wh[:, 1]).clamp(min=eps)
    return inter / union - (enclose - union) / enclose


def giou_loss(
    pred: Tensor,
    target: Tensor,
    weight: Tensor | None = None,
    avg_factor: float | Tensor | None = None,
    eps: float = 1e-6,
) -> Tensor:
    """``sum(w * (1 - GIoU)) / avg_factor`` (mean over pairs when ``avg_factor`` is None).

    Args:
        pred, target: (M, 4) ``xyxy`` aligned pairs.
        weight: (M,) per-pair weight, or None for 1.
        avg_factor: normaliser; None means the number of pairs.
        eps: see :func:`generalized_iou_aligned`.

    Returns:
        Scalar loss (0 with a graph to ``pred`` when M = 0).
    """
    loss = 1.0 - generalized_iou_aligned(pred, target, eps)
    if weight is not None:
        loss = loss * weight
    if avg_factor is None:
        return loss.sum() / max(loss.numel(), 1)
    return loss.sum() / avg_factor
