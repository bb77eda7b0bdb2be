"""Dynamic Soft Label Assignment (DSLA), as in NanoDet-Plus and RTMDet.

Follows ``nanodet/model/head/assigner/dsl_assigner.py`` (RangiLyu/nanodet); with ``soft_center_radius``
set it adds the soft centre prior of mmdet's ``DynamicSoftLabelAssigner`` (RTMDet).

For every image, under no grad:

1. a prior is *valid* when its point lies strictly inside at least one GT box;
2. cost(prior, gt) = soft_cls_cost + iou_factor * (-ln(IoU + 1e-7)) [+ 10 ** (d - soft_center_radius)],
   with IoU between the predicted box and the GT, the QFL-shaped class cost
   ``sum_c BCE(logit_c, onehot_c * IoU) * |onehot_c * IoU - sigmoid(logit_c)|**2`` and ``d`` the distance
   from the prior point to the GT centre in units of the prior's stride;
3. each GT takes its ``k = max(1, int(sum of its top-min(topk, #valid) IoUs over valid priors))``
   lowest-cost valid priors (dynamic k, from OTA/YOLOX);
4. a prior taken by several GTs keeps the GT of minimum cost over *all* GTs (as in the official code).

Implementation notes (results are the same as the official loop up to float rounding and tie order):

- Vectorised over priors, GTs and images: invalid priors and padding GTs get an infinite cost instead of
  being gathered out, and dynamic k is applied as a mask over a single ``topk(min(topk, N))``, so there
  is no loop over GTs and no host synchronisation.
- The class cost is not built as a (priors, GTs, classes) tensor. Only the GT class has a non-zero
  target, so ``sum_c = sum_c neg_c - neg_gt + pos_gt`` with ``neg_c = BCE(logit_c, 0) * sigmoid(logit_c)**2``:
  memory is O(N * (C + G)) instead of O(N * G * C) (the blow-up behind mmdetection#9616).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.geometry.iou import pairwise_iou

_LOG_EPS = 1e-7  # inside -ln(IoU + eps), official value
_IOU_EPS = 1e-6  # lower clamp of the union, as the official bbox_overlaps


class DynamicSoftLabelAssigner:
    """DSLA (NanoDet-Plus defaults; RTMDet with ``soft_center_radius=3.0``).

    Args:
        topk: number of best IoUs summed to get each GT's dynamic k.
        iou_factor: weight of the IoU cost.
        soft_center_radius: None = no centre cost (NanoDet); r > 0 adds ``10 ** (d - r)`` (RTMDet uses 3.0).
        max_chunk_elements: :meth:`assign_batch` processes images in chunks so that
            ``images * priors * max_gts`` stays below this (bounds the memory of the cost matrices).
    """

    def __init__(
        self,
        topk: int = 13,
        iou_factor: float = 3.0,
        soft_center_radius: float | None = None,
        max_chunk_elements: int = 1 << 23,
    ) -> None:
        self.topk = topk
        self.iou_factor = iou_factor
        self.soft_center_radius = soft_center_radius
        self.max_chunk_elements = max_chunk_elements

    @torch.no_grad()
    def assign(
        self, pred_logits: Tensor, priors: Tensor, pred_boxes: Tensor, gt_boxes: Tensor, gt_labels: Tensor
    ) -> Assignment:
        """Assign one image.

        Args:
            pred_logits: (N, C) class logits (detached or not; no gradient is taken).
            priors: (N, 4) ``[x, y, stride_w, stride_h]``.
            pred_boxes: (N, 4) decoded predicted boxes ``xyxy``.
            gt_boxes: (G, 4) ``xyxy``; gt_labels: (G,) int in ``[0, C)``.

        Returns:
            :class:`Assignment` with (N,) fields: ``gt_inds`` 0 background / i + 1 GT i (DSLA ignores nothing),
            ``labels`` −1 for background, ``quality`` the IoU of the predicted box with its GT (0 for background).
        """
        gt_mask = torch.ones((1, gt_boxes.shape[0]), dtype=torch.bool, device=gt_boxes.device)
        res = self._assign_padded(
            pred_logits[None], priors, pred_boxes[None], gt_boxes[None], gt_labels[None], gt_mask
        )
        return Assignment(res.gt_inds[0], res.labels[0], res.quality[0])

    @torch.no_grad()
    def assign_batch(
        self,
        pred_logits: Tensor,
        priors: Tensor,
        pred_boxes: Tensor,
        gt_boxes: list[Tensor],
        gt_labels: list[Tensor],
    ) -> Assignment:
        """Assign a batch of images at once (GTs padded to the largest count, chunked by memory).

        Args:
            pred_logits: (B, N, C); priors: (N, 4) shared by all images; pred_boxes: (B, N, 4).
            gt_boxes: B tensors (G_b, 4); gt_labels: B tensors (G_b,).

        Returns:
            :class:`Assignment` with (B, N) fields; ``gt_inds`` index each image's own GT list.
        """
        batch, num_priors = pred_logits.shape[:2]
        max_gt = max((int(b.shape[0]) for b in gt_boxes), default=0)
        per_image = max(num_priors * max(max_gt, 1), 1)
        chunk = max(1, self.max_chunk_elements // per_image)
        parts = []
        for start in range(0, batch, chunk):
            stop = min(start + chunk, batch)
            boxes, labels, mask = _pad_gts(gt_boxes[start:stop], gt_labels[start:stop], pred_boxes)
            parts.append(
                self._assign_padded(pred_logits[start:stop], priors, pred_boxes[start:stop], boxes, labels, mask)
            )
        return Assignment(
            gt_inds=torch.cat([p.gt_inds for p in parts]),
            labels=torch.cat([p.labels for p in parts]),
            quality=torch.cat([p.quality for p in parts]),
        )

    def _assign_padded(
        self,
        pred_logits: Tensor,
        priors: Tensor,
        pred_boxes: Tensor,
        gt_boxes: Tensor,
        gt_labels: Tensor,
        gt_mask: Tensor,
    ) -> Assignment:
        """Core on padded tensors: logits (B, N, C), priors (N, 4), boxes (B, N, 4), GTs (B, G, 4),
        labels (B, G), mask (B, G) true for real GTs. Returns (B, N) fields."""
        batch, num_priors = pred_logits.shape[:2]
        num_gt = gt_boxes.shape[1]
        device = pred_logits.device
        gt_inds = torch.zeros((batch, num_priors), dtype=torch.long, device=device)
        labels = torch.full((batch, num_priors), -1, dtype=torch.long, device=device)
        overlaps = torch.zeros((batch, num_priors), dtype=torch.float32, device=device)
        if num_gt == 0 or num_priors == 0:
            return Assignment(gt_inds, labels, overlaps)

        logits = pred_logits.float()
        priors = priors.float()
        gt_boxes = gt_boxes.float()
        gt_labels = gt_labels.long().masked_fill(~gt_mask, 0)  # padding GTs: any valid class, masked below
        px, py = priors[None, :, 0, None], priors[None, :, 1, None]  # (1, N, 1)
        gx1, gy1, gx2, gy2 = (gt_boxes[:, None, :, i] for i in range(4))  # (B, 1, G)

        # 1. candidates: point strictly inside at least one (real) GT
        inside = (px > gx1) & (py > gy1) & (gx2 > px) & (gy2 > py) & gt_mask[:, None, :]
        valid = inside.any(dim=2)  # (B, N)

        # 2. cost of every (prior, GT) pair
        ious = pairwise_iou(pred_boxes.float(), gt_boxes, union_eps=_IOU_EPS)  # (B, N, G)
        cost = soft_label_cls_cost(logits, gt_labels, ious)
        cost = cost - torch.log(ious + _LOG_EPS) * self.iou_factor
        if self.soft_center_radius is not None:
            centre_x, centre_y = (gx1 + gx2) / 2, (gy1 + gy2) / 2
            dist = torch.sqrt((px - centre_x) ** 2 + (py - centre_y) ** 2) / priors[None, :, 2, None]
            cost = cost + torch.pow(10.0, dist - self.soft_center_radius)
        usable = valid[:, :, None] & gt_mask[:, None, :]
        cost = cost.masked_fill(~usable, float("inf"))

        # 3. dynamic k per GT, then each GT's k cheapest valid priors
        k_max = min(self.topk, num_priors)
        top_ious = ious.masked_fill(~valid[:, :, None], 0.0).topk(k_max, dim=1).values  # (B, k_max, G)
        dynamic_k = top_ious.sum(dim=1).int().clamp(min=1)  # (B, G)
        top_cost, top_idx = cost.topk(k_max, dim=1, largest=False)  # (B, k_max, G)
        rank = torch.arange(k_max, device=device)[None, :, None]
        take = (rank < dynamic_k[:, None, :]) & torch.isfinite(top_cost)
        matching = torch.zeros_like(usable).scatter_(1, top_idx, take)  # (B, N, G)

        # 4. conflicts: minimum-cost GT over all GTs
        num_matches = matching.sum(dim=2)
        fg = num_matches > 0
        assigned = torch.where(num_matches > 1, cost.argmin(dim=2), matching.to(torch.uint8).argmax(dim=2))

        gt_inds = torch.where(fg, assigned + 1, gt_inds)
        labels = torch.where(fg, gt_labels.gather(1, assigned), labels)
        overlaps = torch.where(fg, ious.gather(2, assigned[..., None])[..., 0], overlaps)
        return Assignment(gt_inds, labels, overlaps)


def soft_label_cls_cost(logits: Tensor, gt_labels: Tensor, ious: Tensor) -> Tensor:
    """DSLA class cost ``sum_c BCE(x_c, y_c) * |y_c - sigmoid(x_c)|**2`` with ``y = onehot(gt_label) * IoU``.

    Computed as ``sum_c neg_c - neg_gt + pos_gt`` (only the GT class has a non-zero target), never
    materialising the (B, N, G, C) tensor of the official code.

    Args:
        logits: (B, N, C); gt_labels: (B, G) int in ``[0, C)``; ious: (B, N, G).

    Returns:
        (B, N, G).
    """
    neg = F.binary_cross_entropy_with_logits(logits, torch.zeros_like(logits), reduction="none")
    neg = neg * logits.sigmoid().pow(2)  # cost of each class with target 0
    index = gt_labels[:, None, :].expand(-1, logits.shape[1], -1)  # (B, N, G)
    gt_logit = logits.gather(2, index)
    pos = F.binary_cross_entropy_with_logits(gt_logit, ious, reduction="none")
    pos = pos * (ious - gt_logit.sigmoid()).pow(2)  # cost of the GT class with target IoU
    return neg.sum(dim=2, keepdim=True) - neg.gather(2, index) + pos


def _pad_gts(boxes: list[Tensor], labels: list[Tensor], like: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-image GTs into (B, G_max, 4), (B, G_max) and a (B, G_max) validity mask."""
    batch = len(boxes)
    max_gt = max((int(b.shape[0]) for b in boxes), default=0)
    out_boxes = like.new_zeros((batch, max_gt, 4), dtype=torch.float32)
    out_labels = torch.zeros((batch, max_gt), dtype=torch.long, device=like.device)
    mask = torch.zeros((batch, max_gt), dtype=torch.bool, device=like.device)
    for i, (b, l) in enumerate(zip(boxes, labels)):
        g = int(b.shape[0])
        out_boxes[i, :g] = b.to(out_boxes)
        out_labels[i, :g] = l.to(out_labels)
        mask[i, :g] = True
    return out_boxes, out_labels, mask
