"""Prediction-aware One-To-One assignment (POTO) and DeFCN's auxiliary one-to-many assignment.

Wang et al., "End-to-End Object Detection with Fully Convolutional Network" (CVPR 2021), §3.2 and §3.4, as
DeFCN's ``get_ground_truth`` / ``get_aux_ground_truth`` (``poto.res50.fpn.coco.800size.3x_ms.3dmf.aux``).

Both score every (GT g, prior n) pair by the quality

    Q[g, n] = p[n, class_g] ^ (1 − α) · IoU(GT g, predicted box n) ^ α,      α = 0.8,

on the detached predictions, with p = σ(cls)·σ(filter) for POTO and σ(cls) alone for the auxiliary loss.

* **POTO**: priors outside the *centre-sampling box* of g (its centre ± radius·stride, clipped to the box)
  keep Q = −1 but stay in the matrix; the Hungarian algorithm (``scipy.optimize.linear_sum_assignment``,
  maximising) gives every GT exactly one prior and every prior at most one GT, so a GT without any candidate
  still gets its best-scoring point. The other priors are background; nothing is ignored.
* **Auxiliary**: per GT and level the top-k priors by Q are candidates; a candidate is positive when Q ≥ the
  mean + standard deviation of the GT's candidate qualities (ATSS's adaptive threshold) and its point is
  strictly inside the whole GT box; a prior claimed by several GTs goes to the one of highest Q.

The quality matrices are built on the predictions' device, one image at a time and vectorised over GTs and
priors; only the solver runs on the host (one ``.cpu()`` per image). IoU is detectron2's ``pairwise_iou``:
0 where boxes do not intersect (also for the empty boxes a ReLU regression can predict).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.geometry.iou import pairwise_iou


def matching_quality(probs: Tensor, ious: Tensor, alpha: float) -> Tensor:
    """Q = p^(1−α) · IoU^α, any matching shapes (e.g. (G, N))."""
    return probs ** (1 - alpha) * ious ** alpha


def side_distances(points: Tensor, boxes: Tensor) -> Tensor:
    """(N, 2) points, (G, 4) ``xyxy`` boxes → (G, N, 4) distances (x − x1, y − y1, x2 − x, y2 − y)."""
    xy = points[None, :, :2]
    b = boxes[:, None, :]
    return torch.cat([xy - b[..., :2], b[..., 2:] - xy], dim=-1)


def centre_sampling_boxes(gt_boxes: Tensor, strides: Tensor, radius: float) -> Tensor:
    """(G, 4) GT boxes, (N,) prior strides → (G, N, 4): each GT's centre ± radius·stride clipped to the GT."""
    centres = (gt_boxes[:, None, :2] + gt_boxes[:, None, 2:]) / 2
    r = (strides * radius)[None, :, None]
    return torch.cat([torch.max(centres - r, gt_boxes[:, None, :2]), torch.min(centres + r, gt_boxes[:, None, 2:])],
                     dim=-1)


class POTOAssigner:
    """POTO plus the auxiliary one-to-many assignment.

    Args:
        alpha: quality exponent α (DeFCN 0.8).
        centre_radius: centre-sampling radius in strides (COCO 1.5; 0 = any point inside the GT box).
        aux_topk: candidates per GT and level of the auxiliary assignment (9).
    """

    def __init__(self, alpha: float = 0.8, centre_radius: float = 1.5, aux_topk: int = 9) -> None:
        self.alpha, self.centre_radius, self.aux_topk = alpha, centre_radius, aux_topk

    def candidates(self, points: Tensor, gt_boxes: Tensor) -> Tensor:
        """(G, N) bool: prior points strictly inside the GT's centre-sampling box (the whole box when radius 0).

        Args:
            points: (N, 4) ``[x, y, stride_w, stride_h]``.
            gt_boxes: (G, 4) ``xyxy``.
        """
        region = gt_boxes[:, None, :].expand(-1, points.shape[0], -1) if self.centre_radius <= 0 else \
            centre_sampling_boxes(gt_boxes, points[:, 2], self.centre_radius)
        xy = points[None, :, :2]
        return torch.cat([xy - region[..., :2], region[..., 2:] - xy], dim=-1).min(dim=-1).values > 0

    @torch.no_grad()
    def assign(self, probs: Tensor, aux_probs: Tensor | None, boxes: Tensor, points: Tensor,
               level_counts: Sequence[int], gt_boxes: Sequence[Tensor], gt_labels: Sequence[Tensor]) -> Assignment:
        """POTO (and, with ``aux_probs``, the auxiliary assignment in ``.auxiliary``) of a batch.

        Args:
            probs: (B, N, C) POTO's class probabilities, σ(cls)·σ(filter).
            aux_probs: (B, N, C) the auxiliary assignment's, σ(cls); None skips it.
            boxes: (B, N, 4) decoded predicted boxes ``xyxy``.
            points: (N, 4) prior points ``[x, y, stride_w, stride_h]``.
            level_counts: priors per level (the auxiliary top-k is per level).
            gt_boxes, gt_labels: per image (G_i, 4) and (G_i,).

        Returns:
            :class:`Assignment` with (B, N) fields (no ignored priors; ``quality`` = IoU of the predicted box
            with the matched GT) and, with ``aux_probs``, ``auxiliary`` the same for the one-to-many result.
        """
        b, n = probs.shape[:2]
        main = _empty(b, n, probs.device)
        aux = _empty(b, n, probs.device) if aux_probs is not None else None
        for i in range(b):
            gt, labels = gt_boxes[i].to(probs.device).float(), gt_labels[i].to(probs.device).long()
            if gt.shape[0] == 0:
                continue
            ious = pairwise_iou(gt, boxes[i].float(), nan=0.0)  # (G, N)
            quality = matching_quality(probs[i].float()[:, labels].t(), ious, self.alpha)
            gt_idx, prior_idx = self.one_to_one(quality, self.candidates(points, gt))
            _fill(main, i, prior_idx, gt_idx, labels, ious)
            if aux is not None:
                aux_quality = matching_quality(aux_probs[i].float()[:, labels].t(), ious, self.alpha)
                owner, positive = self.one_to_many(aux_quality, points, gt, level_counts)
                prior_idx = positive.nonzero().squeeze(1)
                _fill(aux, i, prior_idx, owner[prior_idx], labels, ious)
        return Assignment(*main, auxiliary=None if aux is None else Assignment(*aux))

    def one_to_one(self, quality: Tensor, candidates: Tensor) -> tuple[Tensor, Tensor]:
        """Hungarian matching maximising Σ Q, non-candidates at Q = −1.

        Args:
            quality: (G, N); candidates: (G, N) bool.
        Returns:
            matched GT indices (G,) and their prior indices (G,), on ``quality``'s device (G ≤ N).
        """
        q = quality.masked_fill(~candidates, -1.0)
        gt_idx, prior_idx = linear_sum_assignment(q.cpu().numpy(), maximize=True)
        to = quality.device
        return (torch.as_tensor(gt_idx.astype(np.int64), device=to),
                torch.as_tensor(prior_idx.astype(np.int64), device=to))

    def one_to_many(self, quality: Tensor, points: Tensor, gt_boxes: Tensor,
                    level_counts: Sequence[int]) -> tuple[Tensor, Tensor]:
        """The auxiliary assignment.

        Args:
            quality: (G, N) auxiliary qualities; points: (N, 4); gt_boxes: (G, 4); level_counts: priors per level.
        Returns:
            owner (N,) GT index of each prior (meaningful where positive), positive (N,) bool.
        """
        picks, start = [], 0
        for count in level_counts:
            k = min(self.aux_topk, count)
            picks.append(quality[:, start:start + count].topk(k, dim=1).indices + start)
            start += count
        cand_idx = torch.cat(picks, dim=1)  # (G, Σ k)
        cand_q = quality.gather(1, cand_idx)
        threshold = cand_q.mean(dim=1, keepdim=True) + cand_q.std(dim=1, keepdim=True)
        chosen = torch.zeros_like(quality, dtype=torch.bool).scatter_(1, cand_idx, True) & (quality >= threshold)
        inside = side_distances(points, gt_boxes).min(dim=-1).values > 0
        q = quality.masked_fill(~(chosen & inside), -1.0)
        best, owner = q.max(dim=0)
        return owner, best != -1


def _empty(b: int, n: int, device: torch.device) -> list[Tensor]:
    return [torch.zeros((b, n), dtype=torch.long, device=device), torch.full((b, n), -1, dtype=torch.long,
            device=device), torch.zeros((b, n), dtype=torch.float32, device=device)]


def _fill(fields: list[Tensor], i: int, prior_idx: Tensor, gt_idx: Tensor, labels: Tensor, ious: Tensor) -> None:
    gt_inds, out_labels, quality = fields
    gt_inds[i, prior_idx] = gt_idx + 1
    out_labels[i, prior_idx] = labels[gt_idx]
    quality[i, prior_idx] = ious[gt_idx, prior_idx]
