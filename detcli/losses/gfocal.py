"""Generalized Focal Loss (Li et al., 2020): Quality Focal Loss and Distribution Focal Loss.

Element-wise forms, as in the official GFL / NanoDet ``gfocal_loss.py``; callers weight and normalise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quality_focal_loss(logits: Tensor, labels: Tensor, scores: Tensor, beta: float = 2.0) -> Tensor:
    """QFL with sigmoid, summed over classes.

    ``QFL(x, y) = BCE(x, y) * |y - sigmoid(x)|**beta`` per class entry, where the soft target ``y`` is
    the quality score (IoU) at the labelled class of a positive and 0 everywhere else.

    Args:
        logits: (N, C) class logits.
        labels: (N,) int class index; any value outside ``[0, C)`` (``C`` by convention) is background.
        scores: (N,) quality targets in [0, 1] of the positives (ignored for background).
        beta: focusing exponent.

    Returns:
        (N,) loss per prediction, summed over the C classes.
    """
    classes = torch.arange(logits.shape[1], device=logits.device)
    onehot = labels[:, None] == classes[None, :]
    target = onehot * scores[:, None].to(logits.dtype)
    modulator = (target - logits.sigmoid()).abs().pow(beta)
    loss = F.binary_cross_entropy_with_logits(logits, target, reduction="none") * modulator
    return loss.sum(dim=1)


def distribution_focal_loss(pred: Tensor, target: Tensor) -> Tensor:
    """DFL: cross-entropy on the two bins around a fractional target, weighted linearly.

    ``DFL(p, y) = (y_r - y) * CE(p, y_l) + (y - y_l) * CE(p, y_r)`` with ``y_l = floor(y)``,
    ``y_r = y_l + 1``.

    Args:
        pred: (M, R + 1) bin logits.
        target: (M,) float target in ``[0, R)`` (callers clamp to ``R - 0.1``).

    Returns:
        (M,) loss.
    """
    left = target.long()
    right = left + 1
    w_left = right.to(target.dtype) - target
    w_right = target - left.to(target.dtype)
    return (
        F.cross_entropy(pred, left, reduction="none") * w_left
        + F.cross_entropy(pred, right, reduction="none") * w_right
    )
