"""NanoDet-Plus training loss: DSLA guided by the AGM (aux head), then QFL + GIoU + DFL for both heads.

Follows ``NanoDetPlusHead.loss`` / ``_get_loss_from_assign`` of RangiLyu/nanodet:

- the assignment uses the *aux* head's detached class logits and decoded boxes, and the same targets
  train both the main and the aux head (so the main head's QFL target is the aux prediction's IoU);
- QFL over all priors / max(reduce_mean(#positives), 1);
- GIoU over positives, weighted by the detached max-class sigmoid of the head being trained,
  / max(reduce_mean(sum of weights), 1);
- DFL over the 4 sides of positives, same weights repeated per side, / (4 * that GIoU normaliser);
  target = distance(prior point, GT side) / stride clamped to [0, reg_max - 0.1].

Difference kept on purpose: the official ``reduce_mean`` all-reduces a temporary and so returns the
local value; :func:`detcli.distributed.reduce_mean` really averages across processes (identical on one
process).
"""
from __future__ import annotations


import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.distributed import reduce_mean
from detcli.geometry.distance import bbox2distance, distance2bbox, integral
from detcli.losses.gfocal import distribution_focal_loss, quality_focal_loss
from detcli.losses.iou import giou_loss
from detcli.structures import HeadOutput, Target



def decode_gfl_boxes(reg_logits: Tensor, priors: Tensor, reg_max: int) -> Tensor:
    """Decode GFL distance logits (..., N, 4*(reg_max+1)) at priors (N, 4) into ``xyxy`` boxes (..., N, 4)."""
    return distance2bbox(priors[:, :2], integral(reg_logits, reg_max) * priors[:, 2, None])


def gfl_target_logits(boxes: Tensor, priors: Tensor, reg_max: int) -> Tensor:
    """The inverse of :func:`decode_gfl_boxes`: (..., N, 4) ``xyxy`` boxes at priors (N, 4) → (..., N, 4*(reg_max+1))
    logits whose per-side softmax is DFL's two-bin target (weights ``y_r - y`` and ``y - y_l`` around the
    side distance ``y`` in strides, clamped to [0, reg_max])."""
    dist = (bbox2distance(priors[:, :2], boxes) / priors[:, 2, None]).clamp(min=0, max=reg_max)
    left = dist.floor().clamp(max=reg_max - 1)
    w_right = dist - left
    bins = torch.arange(reg_max + 1, device=boxes.device, dtype=dist.dtype)
    probs = (1 - w_right)[..., None] * (bins == left[..., None]) + w_right[..., None] * (bins == left[..., None] + 1)
    return probs.clamp(min=1e-30).log().flatten(-2)


def nanodet_plus_loss(
    main_out: HeadOutput,
    aux_out: HeadOutput,
    points: Tensor,
    assignment: Assignment,
    targets: list[Target],
    reg_max: int,
    qfl_weight: float = 1.0,
    dfl_weight: float = 0.25,
    giou_weight: float = 2.0,
) -> dict[str, Tensor]:
    """Weighted losses of the main head and of the aux (AGM) head on one assignment.

    Args:
        main_out, aux_out: head outputs, class logits (B, N, C) and distance logits (B, N, 4*(reg_max+1)).
        points: (N, 4) ``[x, y, stride, stride]`` priors (``Priors.points``).
        assignment: (B, N) DSLA of the aux head's predictions (``NanoDetPlus.assign``).
        targets: B ground truths in network-input pixels.
        reg_max: largest distance bin.
        qfl_weight, dfl_weight, giou_weight: loss weights (official 1.0, 0.25, 2.0).

    Returns:
        ``loss_qfl, loss_bbox, loss_dfl, aux_loss_qfl, aux_loss_bbox, aux_loss_dfl`` (scalars, weighted).
    """
    num_classes = main_out.cls_logits.shape[-1]
    flat = _flat_targets(assignment, points, targets, reg_max)
    losses = {}
    for prefix, out in (("", main_out), ("aux_", aux_out)):
        cls, reg = out.cls_logits.float(), out.bbox_reg.float()
        boxes = decode_gfl_boxes(reg, points, reg_max)
        qfl, bbox, dfl = _head_losses(cls, reg, boxes, flat, num_classes, reg_max)
        losses[f"{prefix}loss_qfl"] = qfl * qfl_weight
        losses[f"{prefix}loss_bbox"] = bbox * giou_weight
        losses[f"{prefix}loss_dfl"] = dfl * dfl_weight
    return losses


def _flat_targets(assign: Assignment, priors: Tensor, targets: list[Target], reg_max: int) -> dict[str, Tensor]:
    """Targets of all images flattened to B*N priors; box and distance targets for positives only."""
    batch, num_priors = assign.gt_inds.shape
    pos = torch.nonzero(assign.gt_inds.reshape(-1) > 0).squeeze(1)  # (P,) into B*N
    counts = torch.tensor([int(t.boxes.shape[0]) for t in targets], device=pos.device)
    first_gt = torch.cumsum(counts, 0) - counts  # (B,) offset of each image's GTs in the concatenation
    all_gt = torch.cat([t.boxes.float().reshape(-1, 4) for t in targets], dim=0)
    image = pos // num_priors
    pos_gt = all_gt[first_gt[image] + assign.gt_inds.reshape(-1)[pos] - 1]  # (P, 4)
    pos_priors = priors.float()[pos % num_priors]
    # official order: distance / stride, then clamp to [0, reg_max - 0.1]
    dist = (bbox2distance(pos_priors[:, :2], pos_gt) / pos_priors[:, 2, None]).clamp(min=0, max=reg_max - 0.1)
    return {
        "labels": assign.labels.reshape(-1),
        "scores": assign.quality.reshape(-1),
        "pos": pos,
        "pos_gt": pos_gt,
        "pos_dist": dist,
    }


def _head_losses(
    cls: Tensor, reg: Tensor, boxes: Tensor, flat: dict[str, Tensor], num_classes: int, reg_max: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Unweighted (QFL, GIoU, DFL) of one head over the whole batch."""
    cls = cls.reshape(-1, num_classes)
    reg = reg.reshape(-1, 4 * (reg_max + 1))
    boxes = boxes.reshape(-1, 4)
    pos = flat["pos"]
    num_pos = reduce_mean(torch.tensor(float(pos.numel()), device=cls.device)).clamp(min=1.0)
    loss_qfl = quality_focal_loss(cls, flat["labels"], flat["scores"]).sum() / num_pos

    weight = cls[pos].detach().sigmoid().max(dim=1).values  # (P,)
    # every process takes part in this all-reduce, positives or not (else DDP waits forever)
    box_norm = reduce_mean(weight.sum()).clamp(min=1.0)
    if pos.numel() == 0:
        zero = reg.sum() * 0
        return loss_qfl, zero, zero
    loss_bbox = giou_loss(boxes[pos], flat["pos_gt"], weight=weight, avg_factor=box_norm)
    side_logits = reg[pos].reshape(-1, reg_max + 1)  # (4P, R+1), sides l, t, r, b
    loss_dfl = (
        distribution_focal_loss(side_logits, flat["pos_dist"].reshape(-1)) * weight.repeat_interleave(4)
    ).sum() / (4.0 * box_norm)
    return loss_qfl, loss_bbox, loss_dfl
