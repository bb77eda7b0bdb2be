"""Sigmoid focal loss and L1 loss normalised by an average factor, as RetinaNet in MMDetection 3.x.

Focal loss (Lin et al. 2017): FL = −α_t (1 − p_t)^γ log p_t with p_t = p for a positive target and
1 − p otherwise, α_t = α on positives and 1 − α on negatives. ``torchvision.ops.sigmoid_focal_loss``
computes exactly MMDetection's ``py_sigmoid_focal_loss`` (BCE-with-logits · (1 − p_t)^γ · α_t, one-hot
targets, background = all zeros); the CUDA kernel of mmcv computes the same formula.

MMDetection reduces both losses as ``loss.sum() / (avg_factor + eps)`` with eps = float32 machine epsilon
(``weight_reduce_loss``); we keep that eps so the numbers agree to the last digit.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

_EPS = torch.finfo(torch.float32).eps


def focal_loss(logits: Tensor, targets: Tensor, avg_factor: float, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Summed sigmoid focal loss divided by ``avg_factor``.

    Args:
        logits: (M, C) raw class scores of the anchors that take part in the loss.
        targets: (M, C) one-hot float targets (all zeros for background).
        avg_factor: normaliser (RetinaNet: Σ_images max(#positives, 1)).
    Returns:
        scalar tensor.
    """
    loss = sigmoid_focal_loss(logits.float(), targets.float(), alpha=alpha, gamma=gamma, reduction="sum")
    return loss / (avg_factor + _EPS)


def l1_loss(pred: Tensor, target: Tensor, avg_factor: float) -> Tensor:
    """Σ |pred − target| / avg_factor for (P, 4) encoded deltas of the positive anchors."""
    return (pred.float() - target.float()).abs().sum() / (avg_factor + _EPS)
