"""Prior fit: can a detector's priors represent a GT box at all, before any assignment runs?

The anchor-fit check of YOLOv5's autoanchor (best possible recall, anchors per target), with each family's own
rule instead of YOLOv5's width/height ratio:

- anchor priors (RetinaNet): a GT fits when some anchor reaches the assigner's positive IoU threshold
  (:func:`anchor_fit`, MaxIoU's own rule); the share of GTs that fit is the best possible recall (BPR);
- point priors (NanoDet-Plus, RTMDet, DeFCN): a GT fits when a prior point lies strictly inside the box (the
  dynamic soft label assigner's candidate rule) and the regression range of that prior's level reaches all
  four sides (:func:`point_fit`; GFL's distances end at ``reg_max`` strides).

A GT that does not fit gets a reason code (:data:`REASONS`), so a report can say why, for any family.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from detcli.geometry.iou import pairwise_iou

# reason codes: why a GT does not fit, or (assignment level) why it got no positive prior
FITS = 0
SMALLER_THAN_STRIDE = 1
NO_PRIOR_INSIDE = 2
BELOW_IOU_THRESHOLD = 3
BEYOND_REGRESSION_RANGE = 4
TAKEN_BY_OTHER_GTS = 5
REASONS = {
    FITS: "fits",
    SMALLER_THAN_STRIDE: "smaller than the smallest stride can see (no prior point inside)",
    NO_PRIOR_INSIDE: "no prior point inside the box",
    BELOW_IOU_THRESHOLD: "below every anchor's positive IoU threshold",
    BEYOND_REGRESSION_RANGE: "beyond the regression range of every prior inside the box",
    TAKEN_BY_OTHER_GTS: "its candidate priors went to other, overlapping GTs",
}


class PriorFit(NamedTuple):
    """How the priors of one input can represent each of G GT boxes.

    Attributes:
        fits: (G,) bool, the family's rule (see module docstring).
        candidates: (G,) int64 priors that could be positive for the GT: anchors at or over the positive IoU
            threshold, or prior points inside the box within reach.
        measure: (G,) float32, what the rule thresholds: the best anchor IoU (anchor priors), or the smallest
            ``farthest side / regression range`` over the priors inside the box (point priors; ≤ 1 reaches,
            inf when no prior is inside).
        reason: (G,) int64 code of :data:`REASONS` (``FITS`` where it fits).
    """

    fits: Tensor
    candidates: Tensor
    measure: Tensor
    reason: Tensor


def anchor_fit(anchors: Tensor, gt_boxes: Tensor, pos_iou_thr: float) -> PriorFit:
    """MaxIoU's rule: GT ``g`` fits when max over anchors of IoU(anchor, g) ≥ ``pos_iou_thr``.

    Args:
        anchors: (N, 4) ``xyxy`` anchor boxes (those of the image's valid area).
        gt_boxes: (G, 4) ``xyxy``.
        pos_iou_thr: the assigner's positive threshold.
    """
    g = gt_boxes.shape[0]
    if g == 0 or anchors.shape[0] == 0:
        return _empty_or_unfit(g, anchors.device, BELOW_IOU_THRESHOLD, measure=0.0)
    iou = pairwise_iou(gt_boxes.float(), anchors.float())  # (G, N)
    best = iou.max(dim=1).values
    fits = best >= pos_iou_thr
    reason = torch.where(fits, FITS, BELOW_IOU_THRESHOLD)
    return PriorFit(fits, (iou >= pos_iou_thr).sum(dim=1), best, reason)


def point_fit(points: Tensor, gt_boxes: Tensor, max_distance: Tensor | None = None) -> PriorFit:
    """Point priors: GT ``g`` fits when a prior point lies strictly inside it with every side within reach.

    Args:
        points: (N, 4) ``[x, y, stride_w, stride_h]``.
        gt_boxes: (G, 4) ``xyxy``.
        max_distance: (N,) farthest side distance each prior can regress, in input pixels (GFL:
            ``reg_max · stride``); None = unbounded.
    """
    g = gt_boxes.shape[0]
    if g == 0 or points.shape[0] == 0:
        return _empty_or_unfit(g, points.device, NO_PRIOR_INSIDE, measure=float("inf"))
    gt = gt_boxes.float()[:, None, :]  # (G, 1, 4)
    x, y = points[None, :, 0].float(), points[None, :, 1].float()
    sides = torch.stack([x - gt[..., 0], y - gt[..., 1], gt[..., 2] - x, gt[..., 3] - y], dim=-1)  # (G, N, 4)
    inside = sides.min(dim=-1).values > 0  # strictly inside, as the dynamic soft label assigner's valid mask
    if max_distance is None:
        ratio = torch.zeros_like(inside, dtype=torch.float32)
    else:
        ratio = sides.max(dim=-1).values / max_distance.float()[None, :]
    ratio = ratio.masked_fill(~inside, float("inf"))
    reach = ratio <= 1.0
    best = ratio.min(dim=1).values
    fits = reach.any(dim=1)
    smallest_stride = float(points[:, 2:].min())
    small = torch.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]) < smallest_stride
    none_inside = ~inside.any(dim=1)
    reason = torch.full((g,), FITS, dtype=torch.long, device=points.device)
    reason[~fits] = BEYOND_REGRESSION_RANGE
    reason[none_inside] = NO_PRIOR_INSIDE
    reason[none_inside & small] = SMALLER_THAN_STRIDE
    return PriorFit(fits, reach.sum(dim=1), best, reason)


def larger_input_advice(missed_wh: Tensor, finest_stride: int) -> str:
    """Point priors: the input scale at which the median missed GT's short side reaches the finest stride, as a
    ``--imgsz`` / ``input.size`` suggestion (for GTs no prior point falls inside).

    Args:
        missed_wh: (M, 2) width and height in input pixels of the GTs without a prior point inside (M ≥ 1).
        finest_stride: the smallest level stride.
    """
    side = float(missed_wh.min(dim=1).values.median())  # the side that slips between grid points
    scale = math.ceil(10 * finest_stride / max(side, 1.0)) / 10
    return (f"a larger input: --imgsz or --set input.size=[w,h] about {scale:.1f}x the current one (the missed "
            f"GTs' short side is about {side:.0f} px, under the {finest_stride} px stride of the finest level, "
            "so no prior point falls inside them)")


def _empty_or_unfit(g: int, device: torch.device, reason: int, measure: float) -> PriorFit:
    """No GT (all fields empty), or no prior at all (every GT unfit)."""
    return PriorFit(
        torch.zeros(g, dtype=torch.bool, device=device),
        torch.zeros(g, dtype=torch.long, device=device),
        torch.full((g,), measure, dtype=torch.float32, device=device),
        torch.full((g,), reason, dtype=torch.long, device=device),
    )


def candidate_fit(candidates: Tensor, gt_boxes: Tensor, smallest_stride: float) -> PriorFit:
    """An assigner's own candidate rule (e.g. POTO's centre-sampling region): GT ``g`` fits when some prior is a
    candidate for it.

    Args:
        candidates: (G, N) bool.
        gt_boxes: (G, 4) ``xyxy`` (for the "smaller than the stride" reason).
        smallest_stride: the finest level's stride.
    """
    g = gt_boxes.shape[0]
    if g == 0 or candidates.shape[1] == 0:
        return _empty_or_unfit(g, candidates.device, NO_PRIOR_INSIDE, measure=0.0)
    count = candidates.sum(dim=1)
    fits = count > 0
    small = torch.maximum(gt_boxes[:, 2] - gt_boxes[:, 0], gt_boxes[:, 3] - gt_boxes[:, 1]) < smallest_stride
    reason = torch.full((g,), FITS, dtype=torch.long, device=candidates.device)
    reason[~fits] = NO_PRIOR_INSIDE
    reason[~fits & small] = SMALLER_THAN_STRIDE
    return PriorFit(fits, count, count.float(), reason)
