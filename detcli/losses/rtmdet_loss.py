"""RTMDet training loss: QFL + GIoU on the dynamic soft label assignment of the head's own predictions.

Follows ``RTMDetHead.loss_by_feat`` / ``loss_by_feat_single`` of MMDetection 3.x:

- QFL (sigmoid, β = 2) over every prior of every image, soft target = the IoU of the positive's predicted
  box with its GT (the assigner's ``quality``), label weight 1 everywhere (all priors are valid:
  ``allowed_border=-1`` and every image padded to the input size);
- GIoU between the positives' decoded boxes and their GTs, each weighted by that same IoU;
- both divided by ``max(reduce_mean(Σ IoU targets), 1)`` — the sum of the soft targets, not the positive
  count (NanoDet-Plus divides its QFL by the count);
- no positives: GIoU = 0 · Σ boxes (a graph without a gradient).

Differences kept on purpose: the official per-level sums are one sum here (float rounding only), and its
``avg_factor=1.0`` divides by ``1 + 1.2e-7`` (float32 eps inside ``weight_reduce_loss``), below float noise.
"""
from __future__ import annotations

import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.distributed import reduce_mean
from detcli.losses.gfocal import quality_focal_loss
from detcli.losses.iou import giou_loss
from detcli.structures import Target


def rtmdet_loss(
    cls_logits: Tensor,
    boxes: Tensor,
    assignment: Assignment,
    targets: list[Target],
    qfl_weight: float = 1.0,
    giou_weight: float = 2.0,
    qfl_beta: float = 2.0,
) -> dict[str, Tensor]:
    """Weighted ``loss_cls`` (QFL) and ``loss_bbox`` (GIoU).

    Args:
        cls_logits: (B, N, C) class logits.
        boxes: (B, N, 4) decoded predicted ``xyxy`` boxes in input pixels (the head's distances at the priors).
        assignment: (B, N) assignment of these predictions (:meth:`RTMDet.assign`).
        targets: B ground truths in input pixels; ``assignment.gt_inds`` index each image's list.
        qfl_weight, giou_weight: loss weights (official 1.0, 2.0).
        qfl_beta: QFL focusing exponent (official 2.0).

    Returns:
        ``{"loss_cls", "loss_bbox"}`` scalars, weighted.
    """
    num_classes = cls_logits.shape[-1]
    cls = cls_logits.float().reshape(-1, num_classes)
    labels = assignment.labels.reshape(-1)
    scores = assignment.quality.reshape(-1).float()
    # every process takes part in this all-reduce, positives or not (else DDP waits forever)
    avg_factor = reduce_mean(scores.sum().detach()).clamp(min=1.0)
    loss_cls = quality_focal_loss(cls, labels, scores, qfl_beta).sum() / avg_factor

    flat_boxes = boxes.float().reshape(-1, 4)
    pos = torch.nonzero(assignment.gt_inds.reshape(-1) > 0).squeeze(1)  # (P,) into B*N
    if pos.numel() == 0:
        loss_bbox = flat_boxes.sum() * 0
    else:
        loss_bbox = giou_loss(flat_boxes[pos], _positive_gt_boxes(assignment, targets, pos), weight=scores[pos],
                              avg_factor=avg_factor)
    return {"loss_cls": loss_cls * qfl_weight, "loss_bbox": loss_bbox * giou_weight}


def _positive_gt_boxes(assignment: Assignment, targets: list[Target], pos: Tensor) -> Tensor:
    """(P, 4) GT box of each positive ``pos`` (indices into the flattened (B·N) priors)."""
    num_priors = assignment.gt_inds.shape[1]
    counts = torch.tensor([int(t.boxes.shape[0]) for t in targets], device=pos.device)
    first_gt = torch.cumsum(counts, 0) - counts  # (B,) offset of each image's GTs in the concatenation
    all_gt = torch.cat([t.boxes.float().reshape(-1, 4).to(pos.device) for t in targets], dim=0)
    return all_gt[first_gt[pos // num_priors] + assignment.gt_inds.reshape(-1)[pos] - 1]
