"""Max-IoU anchor assignment of RetinaNet, as MMDetection 3.x's ``MaxIoUAssigner`` (one deliberate fix).

Steps (MMDetection ``task_modules/assigners/max_iou_assigner.py``; the order matters):

1. every anchor starts as *ignore* (−1);
2. an anchor whose best IoU over all GTs is in [0, neg_iou_thr) becomes *background* (0);
3. an anchor whose best IoU is ≥ pos_iou_thr becomes *positive* for its best GT (i + 1);
4. low-quality matches (``match_low_quality``): for every GT i whose best IoU is ≥ min_pos_iou, the
   anchors reaching that best IoU (all of them if ``gt_max_assign_all``, else only the first) are
   assigned to GT i, **overwriting** step 3; GTs are visited in index order, so the last GT wins.

Deliberate difference: step 4 also requires the GT's best IoU to be > 0. With ``min_pos_iou=0`` a GT
that overlaps no anchor would otherwise claim *every* anchor (they all "reach" its best IoU of 0) as a
positive — open-mmlab/mmdetection#8289. Such a GT now claims nothing. Results are otherwise identical.
"""
from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou

from detcli.assigners.assignment import Assignment


class MaxIoUAssigner:
    """Assign each anchor to background, ignore, or one GT box by IoU (see module docstring)."""

    def __init__(
        self,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: float = 0.4,
        min_pos_iou: float = 0.0,
        match_low_quality: bool = True,
        gt_max_assign_all: bool = True,
    ) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.min_pos_iou = min_pos_iou
        self.match_low_quality = match_low_quality
        self.gt_max_assign_all = gt_max_assign_all

    @torch.no_grad()
    def assign(self, anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor) -> Assignment:
        """Assign one image.

        Args:
            anchors: (N, 4) xyxy.
            gt_boxes: (G, 4) xyxy.
            gt_labels: (G,) int64.

        Returns:
            :class:`Assignment` with (N,) fields: ``gt_inds`` −1 ignore / 0 background / i + 1 GT i; ``quality``
            the best IoU of each anchor over all GTs (0 when there is no GT).
        """
        n, g = anchors.shape[0], gt_boxes.shape[0]
        device = anchors.device
        if g == 0 or n == 0:
            # no GT: everything is background (MMDetection)
            fill = 0 if g == 0 else -1
            return Assignment(
                torch.full((n,), fill, dtype=torch.long, device=device),
                torch.full((n,), -1, dtype=torch.long, device=device),
                anchors.new_zeros((n,)),
            )
        iou = box_iou(gt_boxes.float(), anchors.float())  # (G, N)
        max_iou, argmax_gt = iou.max(dim=0)  # per anchor
        gt_inds = torch.full((n,), -1, dtype=torch.long, device=device)
        gt_inds[(max_iou >= 0) & (max_iou < self.neg_iou_thr)] = 0
        pos = max_iou >= self.pos_iou_thr
        gt_inds[pos] = argmax_gt[pos] + 1

        if self.match_low_quality:
            gt_best, gt_best_anchor = iou.max(dim=1)  # per GT
            # "> 0": the guard for open-mmlab/mmdetection#8289 (see module docstring)
            eligible = (gt_best >= self.min_pos_iou) & (gt_best > 0)
            if self.gt_max_assign_all:
                gt_idx, anchor_idx = torch.nonzero((iou == gt_best[:, None]) & eligible[:, None], as_tuple=True)
            else:
                gt_idx = torch.nonzero(eligible, as_tuple=True)[0]
                anchor_idx = gt_best_anchor[gt_idx]
            # MMDetection loops over GTs in order, so for an anchor claimed twice the highest index wins
            forced = torch.zeros(n, dtype=torch.long, device=device)
            forced.scatter_reduce_(0, anchor_idx, gt_idx + 1, reduce="amax")
            gt_inds = torch.where(forced > 0, forced, gt_inds)

        labels = torch.full((n,), -1, dtype=torch.long, device=device)
        pos = gt_inds > 0
        labels[pos] = gt_labels.to(device=device, dtype=torch.long)[gt_inds[pos] - 1]
        return Assignment(gt_inds, labels, max_iou)
