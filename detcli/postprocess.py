"""Test-time post-processing shared by every family: score filter → top-k → class-aware NMS (or none) → max_det.

The families differ only in their settings (:class:`PostprocessConfig`, from the preset's ``test`` section):

- NanoDet-Plus (official ``get_bboxes``): multi-label (prior, class) pairs with score > 0.05, no top-k,
  class-aware NMS 0.6, 100 per image;
- RetinaNet (MMDetection ``_predict_by_feat_single``): per level score > 0.05 then the best ``nms_pre=1000``
  pairs, boxes of size ≤ ``min_bbox_size=0`` dropped, class-aware NMS 0.5, 100 per image;
- RTMDet (the same MMDetection code): score > 0.001, the best ``nms_pre=30000`` per level, class-aware NMS 0.65,
  300 per image;
- ``nms="none"``: the best ``max_det`` by score, for NMS-free heads (DeFCN).

NMS runs per image (one ``torchvision.ops.batched_nms`` call with the classes as groups), as both references.
Exactly tied scores keep MMDetection's order: the per-level ranking is the same (not stable) ``torch.sort`` call
on the same tensor as ``filter_scores_and_topk``'s (:func:`_image_top_pairs`), so the candidates reach NMS in the
reference's order and ties there resolve as in the reference.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor
from torchvision.ops import batched_nms

from detcli.structures import Detections, ImageMeta, Priors



@dataclass(frozen=True)
class PostprocessConfig:
    """Test-time settings of one family.

    Attributes:
        score_thr: keep (prior, class) pairs with score > score_thr.
        iou_thr: IoU threshold of the class-aware NMS.
        max_det: detections kept per image.
        nms: "class_aware" (``batched_nms`` per image, classes as groups) or "none" (NMS-free heads).
        nms_pre: per level and image, keep the best ``nms_pre`` pairs that passed the threshold (MMDetection
            ``filter_scores_and_topk``); ≤ 0 keeps all of them; None: no per-level step (NanoDet).
        min_bbox_size: drop boxes (after clipping) whose width or height is ≤ this; None: no such filter.
        dense_topk_factor: per-level selection: above ``dense_topk_factor · nms_pre · B`` pairs past the
            threshold a dense top-k is cheaper than sorting the survivors (same result, measured).
    """

    score_thr: float = 0.05
    iou_thr: float = 0.6
    max_det: int = 100
    nms: Literal["class_aware", "none"] = "class_aware"
    nms_pre: int | None = None
    min_bbox_size: float | None = None
    dense_topk_factor: float = 8.0

    @classmethod
    def from_test(cls, test: Any, nms_pre: int | None = None, min_bbox_size: float | None = None) -> PostprocessConfig:
        """From a preset's ``test`` section; its unset ``nms_pre`` / ``min_bbox_size`` (None) take the family's
        defaults given here."""
        return cls(
            score_thr=test.score_thr, iou_thr=test.iou_thr, max_det=test.max_det, nms=test.nms,
            nms_pre=nms_pre if test.nms_pre is None else test.nms_pre,
            min_bbox_size=min_bbox_size if test.min_bbox_size is None else test.min_bbox_size,
        )

    def replace(self, **changes: object) -> PostprocessConfig:
        """A copy with the given fields changed; ``None`` values keep the current one."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def image_limits(metas: Sequence[ImageMeta], batch_shape: Sequence[int], like: Tensor) -> Tensor:
    """(B, 1, 4) ``[w, h, w, h]`` of each image's ``img_shape`` (the whole (H, W) input when ``metas`` is empty)."""
    b, h, w = batch_shape[0], batch_shape[-2], batch_shape[-1]
    shapes = [m.img_shape for m in metas] if metas else [(h, w)] * b
    return torch.tensor([[sw, sh, sw, sh] for sh, sw in shapes], dtype=like.dtype, device=like.device)[:, None, :]


def clip_boxes(boxes: Tensor, limits: Tensor) -> Tensor:
    """Clamp (..., 4) ``xyxy`` boxes to ``[0, w] × [0, h]``; ``limits`` broadcasts as ``[w, h, w, h]``."""
    return torch.minimum(boxes.clamp(min=0), limits)


def postprocess(
    boxes: Tensor, scores: Tensor, priors: Priors, cfg: PostprocessConfig, scores_are_logits: bool = False
) -> list[Detections]:
    """Detections of every image.

    Args:
        boxes: (B, N, 4) decoded, clipped ``xyxy`` boxes, one per prior (shared by all classes).
        scores: (B, N, C) class probabilities, or their logits when ``scores_are_logits`` (sigmoid scores
            only): the threshold is then tested on the logits (with a margin, then exactly) and the sigmoid
            is taken of the survivors only.
        priors: the N priors (their level sizes and anchors per cell drive the per-level step).
        cfg: settings.

    Returns:
        B :class:`Detections` (float32 boxes and scores, int64 labels), sorted by score.
    """
    if cfg.nms_pre is None:
        img, prior, label, score = _candidates(scores, cfg.score_thr, scores_are_logits)
    else:
        parts, start = [], 0
        for count in priors.level_counts:
            img, label, score, prior = _level_candidates(scores[:, start:start + count], cfg, scores_are_logits)
            parts.append((img, prior + start, label, score))
            start += count
        img, prior, label, score = (torch.cat(t) for t in zip(*parts))
    cand_boxes = boxes[img, prior]
    if cfg.min_bbox_size is not None:
        keep = ((cand_boxes[:, 2:] - cand_boxes[:, :2]) > cfg.min_bbox_size).all(dim=1)
        img, label, score, cand_boxes = img[keep], label[keep], score[keep], cand_boxes[keep]
    out = []
    for i in range(boxes.shape[0]):
        mine = img == i
        b, s, lab = cand_boxes[mine].float(), score[mine].float(), label[mine]
        if cfg.nms == "class_aware":
            keep = batched_nms(b, s, lab, cfg.iou_thr)[: cfg.max_det]
        else:
            keep = torch.argsort(s, descending=True, stable=True)[: cfg.max_det]
        out.append(Detections(b[keep], s[keep], lab[keep]))
    return out


def _candidates(scores: Tensor, score_thr: float, logits: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (image, prior, class) with score > ``score_thr``, in that (row-major) order.

    Returns image (K,), prior (K,), class (K,), score (K,).
    """
    img, prior, label = torch.nonzero(_maybe_above(scores, score_thr, logits), as_tuple=True)
    score = _score_of(scores[img, prior, label], logits)
    ok = score > score_thr
    return img[ok], prior[ok], label[ok], score[ok]


def _level_candidates(scores: Tensor, cfg: PostprocessConfig, logits: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(image, prior, class) triples of one level with score > ``score_thr``, at most ``nms_pre`` per image
    (MMDetection ``filter_scores_and_topk``: threshold first, then the best ``nms_pre``), image by image.

    Args:
        scores: (B, H·W·A, C) scores or logits of the level, prior order (y, x, anchor).

    Returns:
        image (K,), class (K,), score (K,), prior index inside the level (K,); sorted by score per image.
    """
    b, n, c = scores.shape
    k = cfg.nms_pre if cfg.nms_pre > 0 else n * c
    pre = _maybe_above(scores, cfg.score_thr, logits)
    parts = [_image_top_pairs(scores[i], pre[i], k, cfg, logits) for i in range(b)]
    prior, label, score = (torch.cat(t) for t in zip(*parts))
    img = torch.repeat_interleave(torch.arange(b, device=scores.device),
                                  torch.tensor([len(p[0]) for p in parts], device=scores.device))
    return img, label, score, prior


def _image_top_pairs(
    scores: Tensor, pre: Tensor, k: int, cfg: PostprocessConfig, logits: bool
) -> tuple[Tensor, Tensor, Tensor]:
    """One image's best ``k`` pairs with score > ``score_thr``, in MMDetection's order, ties included.

    The reference takes the survivors in (prior, class) row-major order and ranks them with
    ``torch.sort(descending=True)``, which is not stable: exactly tied scores (e.g. sigmoids saturated at 1.0)
    come out in the order of torch's sort algorithm, and when ties straddle the ``k`` cut, that order decides
    which pairs survive. The same call on the same tensor is made here, so the order is the reference's.
    Many survivors (more than ``dense_topk_factor · k``): a dense top-(k+1) of the whole map instead, whose
    result equals that sort's when its k+1 scores are strictly decreasing (then the values alone fix the
    order); on any tie among them, the sort.

    Args:
        scores: (N, C) scores or logits of the image's level.
        pre: (N, C) the pairs that may pass the threshold (:func:`_maybe_above`).
    Returns:
        prior (K,), class (K,), score (K,), K ≤ k, best first.
    """
    n, c = scores.shape
    if int(pre.count_nonzero()) > cfg.dense_topk_factor * k:
        top, flat = scores.reshape(-1).topk(min(k + 1, n * c))
        score = _score_of(top, logits)
        if not bool((score[1:] == score[:-1]).any()):
            score, flat = score[:k], flat[:k]
            ok = score > cfg.score_thr
            flat = flat[ok]
            return flat // c, flat % c, score[ok]
    prior, label = torch.nonzero(pre, as_tuple=True)
    score = _score_of(scores[prior, label], logits)
    ok = score > cfg.score_thr
    prior, label, score = prior[ok], label[ok], score[ok]
    score, order = score.sort(descending=True)  # not stable, as the reference (see above)
    order = order[:k]
    return prior[order], label[order], score[:k]


def _maybe_above(scores: Tensor, score_thr: float, logits: bool) -> Tensor:
    """Pairs that may pass the threshold: exactly those for probabilities; for logits a superset (the logit
    of the threshold minus a margin, so float rounding of the sigmoid cannot lose a pair)."""
    if not logits:
        return scores > score_thr
    if score_thr <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    if score_thr >= 1:
        return torch.zeros_like(scores, dtype=torch.bool)
    return scores > math.log(score_thr / (1 - score_thr)) - 1e-3


def _score_of(values: Tensor, logits: bool) -> Tensor:
    return values.float().sigmoid() if logits else values.float()
