"""Max-IoU anchor assignment of RetinaNet, as MMDetection 3.x's ``MaxIoUAssigner`` (one deliberate fix).

Steps (MMDetection ``task_modules/assigners/max_iou_assigner.py``; the order matters):

0. ignore boxes (``ignore_iof_thr`` > 0, e.g. COCO crowd boxes): an anchor whose largest IoF with an ignore
   box exceeds the threshold has its IoU with every GT set to −1, so it can take no part in steps 2–4;
1. every anchor starts as *ignore* (−1);
2. an anchor whose best IoU over all GTs is in [lo, hi) becomes *background* (0): ``neg_iou_thr`` is that
   range, or a number ``hi`` for [0, hi); a best IoU below ``lo`` keeps the anchor ignored;
3. an anchor whose best IoU is ≥ pos_iou_thr becomes *positive* for its best GT (i + 1);
4. low-quality matches (``match_low_quality``): for every GT i whose best IoU is ≥ min_pos_iou, the
   anchors reaching that best IoU (all of them if ``gt_max_assign_all``, else only the first) are
   assigned to GT i, **overwriting** step 3; GTs are visited in index order, so the last GT wins.

An image without GTs is all background, its ignore boxes notwithstanding (MMDetection).

Deliberate difference: step 4 also requires the GT's best IoU to be > 0. With ``min_pos_iou=0`` a GT
that overlaps no anchor would otherwise claim *every* anchor (they all "reach" its best IoU of 0) as a
positive — open-mmlab/mmdetection#8289. Such a GT now claims nothing. Results are otherwise identical.

Not carried over: MMDetection's ``iou_calculator`` (always plain 2-D IoU here, :func:`~detcli.geometry.iou.pairwise_iou`; its
fp16 option trades exactness for memory), ``gpu_assign_thr`` (a memory fallback that does not change the
result) and ``perm_repeat_gt_cfg`` (random jitter of duplicate GTs, used by no RetinaNet recipe).
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
from torch import Tensor
from torchvision.ops import box_area

from detcli.assigners.assignment import BACKGROUND, IGNORE, Assignment
from detcli.geometry.iou import pairwise_iou

NegIoUThr = Union[float, Sequence[float]]  # hi, or (lo, hi)


def neg_iou_range(neg_iou_thr: NegIoUThr) -> tuple[float, float]:
    """(lo, hi) of the background band: a number ``hi`` means [0, hi) as in MMDetection.

    Raises ValueError unless 0 ≤ lo and lo < hi for a pair (an empty band would make no anchor background).
    """
    if isinstance(neg_iou_thr, (int, float)):
        return 0.0, float(neg_iou_thr)
    if len(neg_iou_thr) != 2:
        raise ValueError(f"neg_iou_thr: a number or a pair (lo, hi), got {len(neg_iou_thr)} values")
    lo, hi = (float(v) for v in neg_iou_thr)
    if not 0.0 <= lo < hi:
        raise ValueError(f"neg_iou_thr ({lo:g}, {hi:g}): needs 0 ≤ lo < hi")
    return lo, hi


def box_iof(boxes1: Tensor, boxes2: Tensor, eps: float = 1e-6) -> Tensor:
    """Intersection over the *first* box's area ("intersection over foreground"), MMDetection's ``mode='iof'``.

    Args:
        boxes1: (A, 4) xyxy.
        boxes2: (B, 4) xyxy.
        eps: floor of the area (a zero-area box gives 0, not NaN), as MMDetection's ``bbox_overlaps``.

    Returns:
        (A, B) float.
    """
    lt = torch.maximum(boxes1[:, None, :2], boxes2[None, :, :2])
    rb = torch.minimum(boxes1[:, None, 2:], boxes2[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    return wh[..., 0] * wh[..., 1] / box_area(boxes1).clamp(min=eps)[:, None]


class MaxIoUAssigner:
    """Assign each anchor to background, ignore, or one GT box by IoU (see module docstring).

    Args:
        pos_iou_thr: best IoU from which an anchor is positive.
        neg_iou_thr: ``hi`` (background below it) or ``(lo, hi)`` (background in [lo, hi), ignored below lo).
        min_pos_iou: a GT's best IoU must reach it for the low-quality match.
        match_low_quality: step 4 on or off.
        gt_max_assign_all: step 4 gives a GT every anchor tied at its best IoU (else only the first).
        ignore_iof_thr: IoF with an ignore box above which an anchor is ignored; ≤ 0 turns ignore boxes off
            (MMDetection's −1).
        ignore_wrt_candidates: IoF over the anchor's area (True) or over the ignore box's area (False).
    """

    def __init__(
        self,
        pos_iou_thr: float = 0.5,
        neg_iou_thr: NegIoUThr = 0.4,
        min_pos_iou: float = 0.0,
        match_low_quality: bool = True,
        gt_max_assign_all: bool = True,
        ignore_iof_thr: float = -1.0,
        ignore_wrt_candidates: bool = True,
    ) -> None:
        self.pos_iou_thr = pos_iou_thr
        self.neg_iou_thr = neg_iou_thr
        self.neg_lo, self.neg_hi = neg_iou_range(neg_iou_thr)
        self.min_pos_iou = min_pos_iou
        self.match_low_quality = match_low_quality
        self.gt_max_assign_all = gt_max_assign_all
        self.ignore_iof_thr = ignore_iof_thr
        self.ignore_wrt_candidates = ignore_wrt_candidates

    @property
    def uses_ignore_boxes(self) -> bool:
        """Whether ignore boxes change anything (``ignore_iof_thr`` > 0)."""
        return self.ignore_iof_thr > 0

    @property
    def no_overlap_gt_ind(self) -> int:
        """``gt_inds`` of an anchor with IoU 0 with every GT (of an image that has GTs) and IoF 0 with every
        ignore box: background when 0 lies in the background band, else ignored. A caller that assigns only the
        anchors that may overlap a box fills the others with it."""
        return BACKGROUND if self.neg_lo <= 0.0 < self.neg_hi else IGNORE

    def ignored_by(self, anchors: Tensor, ignore_boxes: Tensor | None) -> Tensor:
        """(N,) bool: anchors whose largest IoF with an ignore box exceeds ``ignore_iof_thr`` (step 0).

        Args:
            anchors: (N, 4) xyxy.
            ignore_boxes: (K, 4) xyxy, or None.
        """
        if not self.uses_ignore_boxes or ignore_boxes is None or ignore_boxes.numel() == 0 or anchors.numel() == 0:
            return torch.zeros(anchors.shape[0], dtype=torch.bool, device=anchors.device)
        ignore_boxes = ignore_boxes.to(device=anchors.device, dtype=torch.float32)
        if self.ignore_wrt_candidates:
            iof = box_iof(anchors.float(), ignore_boxes)  # (N, K) over the anchor's area
        else:
            iof = box_iof(ignore_boxes, anchors.float()).t()  # (N, K) over the ignore box's area
        return iof.amax(dim=1) > self.ignore_iof_thr

    @torch.no_grad()
    def assign(self, anchors: Tensor, gt_boxes: Tensor, gt_labels: Tensor,
               ignore_boxes: Tensor | None = None) -> Assignment:
        """Assign one image.

        Args:
            anchors: (N, 4) xyxy.
            gt_boxes: (G, 4) xyxy.
            gt_labels: (G,) int64.
            ignore_boxes: (K, 4) xyxy boxes whose anchors are ignored (step 0), or None.

        Returns:
            :class:`Assignment` with (N,) fields: ``gt_inds`` −1 ignore / 0 background / i + 1 GT i; ``quality``
            the best IoU of each anchor over all GTs (0 when there is no GT). For an anchor ignored through an
            ignore box ``quality`` stays that IoU (MMDetection's ``max_overlaps`` reads −1 there).
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
        iou = pairwise_iou(gt_boxes.float(), anchors.float())  # (G, N)
        max_iou, argmax_gt = iou.max(dim=0)  # per anchor
        quality = max_iou
        if self.uses_ignore_boxes and ignore_boxes is not None and ignore_boxes.numel() > 0:
            # step 0: an ignored anchor's IoU is −1 with every GT (its column of ``iou``, its ``max_iou``)
            ignored = self.ignored_by(anchors, ignore_boxes)
            iou = iou.masked_fill(ignored[None, :], -1.0)
            max_iou = max_iou.masked_fill(ignored, -1.0)
        gt_inds = torch.full((n,), -1, dtype=torch.long, device=device)
        gt_inds[(max_iou >= self.neg_lo) & (max_iou < self.neg_hi)] = 0
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
        return Assignment(gt_inds, labels, quality)
