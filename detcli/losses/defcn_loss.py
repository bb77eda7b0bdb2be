"""DeFCN's losses (DeFCN ``FCOS.losses`` and ``aux_losses``, config ``…3x_ms.3dmf.aux``).

* ``loss_cls``: focal loss (α 0.25, γ 2) on the *probability product* p = σ(cls)·σ(filter) against POTO's
  one-hot targets, every prior and class (nothing ignored), summed and divided by max(1, #positives);
  computed in float32 outside autocast (``F.binary_cross_entropy`` refuses half precision; its log is clamped
  at −100, so p = 0 or 1 stays finite);
* ``loss_box_reg``: GIoU loss of the positives' (l, t, r, b) distances against the distances from their point
  to the GT, summed, divided by max(1, #positives), × 2 (``REG_WEIGHT``);
* ``loss_cls_aux``: the ordinary sigmoid focal loss on the class *logits* against the auxiliary one-to-many
  targets, divided by max(1, #auxiliary positives); weight 1, no box term.

#positives is the batch total averaged over processes (DeFCN all-reduces it and divides by the world size).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import sigmoid_focal_loss

from detcli.assigners.assignment import Assignment
from detcli.distributed import reduce_mean
from detcli.losses.iou import generalized_iou_aligned

_EPS = torch.finfo(torch.float32).eps  # cvpods iou_loss clamps


def probability_focal_loss(probs: Tensor, targets: Tensor, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Σ α_t (1 − p_t)^γ · BCE(p, t) for probabilities ``probs`` (M, C) and 0/1 ``targets`` (M, C), float32."""
    with torch.autocast(probs.device.type, enabled=False):
        p, t = probs.float(), targets.float()
        ce = F.binary_cross_entropy(p, t, reduction="none")
        p_t = p * t + (1 - p) * (1 - t)
        alpha_t = alpha * t + (1 - alpha) * (1 - t)
        return (alpha_t * ce * (1 - p_t) ** gamma).sum()


def ltrb_giou_loss(pred: Tensor, target: Tensor) -> Tensor:
    """Σ (1 − GIoU) of (P, 4) distance pairs (l, t, r, b) from a shared point (cvpods ``iou_loss(box_mode='ltrb')``)."""
    def as_box(d: Tensor) -> Tensor:
        return torch.cat([-d[:, :2], d[:, 2:]], dim=1)

    return (1 - generalized_iou_aligned(as_box(pred.float()), as_box(target.float()), eps=_EPS)).sum()


def _onehot(labels: Tensor, num_classes: int) -> Tensor:
    """(M,) labels with −1 = background → (M, C) float one-hot."""
    out = torch.zeros((labels.shape[0], num_classes), dtype=torch.float32, device=labels.device)
    pos = labels >= 0
    out[pos.nonzero().squeeze(1), labels[pos]] = 1.0
    return out


def _normaliser(num: Tensor) -> Tensor:
    return reduce_mean(num.float()).clamp(min=1.0)


def defcn_loss(
    cls_logits: Tensor,
    filter_logits: Tensor,
    distances: Tensor,
    target_distances: Tensor,
    assignment: Assignment,
    focal_alpha: float = 0.25,
    focal_gamma: float = 2.0,
    reg_weight: float = 2.0,
    aux_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The three DeFCN losses of a batch.

    Args:
        cls_logits: (B, N, C); filter_logits: (B, N, 1); distances: (B, N, 4) predicted (l, t, r, b) pixels.
        target_distances: (B, N, 4) distances from each prior point to its POTO GT (used at positives only).
        assignment: POTO's, with the auxiliary one in ``assignment.auxiliary`` (no aux loss when None).
    Returns:
        ``loss_cls``, ``loss_box_reg`` (weighted) and ``loss_cls_aux`` (weighted) when there is an auxiliary
        assignment.
    """
    c = cls_logits.shape[-1]
    pos = assignment.gt_inds > 0
    num_pos = _normaliser(pos.sum())
    probs = cls_logits.float().sigmoid() * filter_logits.float().sigmoid()
    targets = _onehot(assignment.labels.flatten(), c)
    loss_cls = probability_focal_loss(probs.reshape(-1, c), targets, focal_alpha, focal_gamma) / num_pos
    loss_reg = ltrb_giou_loss(distances[pos], target_distances[pos]) / num_pos * reg_weight
    losses = {"loss_cls": loss_cls, "loss_box_reg": loss_reg}
    aux = assignment.auxiliary
    if aux is not None:
        num_aux = _normaliser((aux.gt_inds > 0).sum())
        aux_targets = _onehot(aux.labels.flatten(), c)
        loss_aux = sigmoid_focal_loss(cls_logits.reshape(-1, c).float(), aux_targets, focal_alpha, focal_gamma,
                                      reduction="sum") / num_aux
        losses["loss_cls_aux"] = aux_weight * loss_aux
    return losses
