"""Traceable inference graphs of any :class:`~detcli.models.base.Detector` at one input size.

The priors of that size are computed once and kept as buffers, so the graphs are ``forward`` (+ ``decode``
+ post-processing) with static shapes, which ``torch.jit.trace`` and ``torch.onnx.export`` accept; only the
NMS keeps a data-dependent number of boxes, and its result is scattered back into a fixed-size mask.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import nms

from detcli.models.base import Detector

from detcli.structures import Priors
from detcli.postprocess import PostprocessConfig, clip_boxes


class DecodedGraph(nn.Module):
    """(B, 3, H, W) normalised images → boxes (B, N, 4) ``xyxy`` input pixels (not clipped), scores (B, N, C).

    Args:
        model: any detector (put it in eval mode first).
        image_size: (H, W) the graph is built for.
    """

    def __init__(self, model: Detector, image_size: tuple[int, int]) -> None:
        super().__init__()
        self.model = model
        self.image_size = (int(image_size[0]), int(image_size[1]))
        device = next(model.parameters()).device
        priors = model.priors(self.image_size, device)
        self.register_buffer("points", priors.points, persistent=False)
        self.register_buffer("levels", priors.levels, persistent=False)
        self.register_buffer("anchors", priors.boxes if priors.boxes is not None else torch.zeros(0, 4, device=device),
                             persistent=False)
        self.has_anchors = priors.boxes is not None
        self.level_sizes, self.per_cell = priors.level_sizes, priors.per_cell

    @property
    def priors(self) -> Priors:
        """The baked-in priors (N of them)."""
        return Priors(self.points, self.anchors if self.has_anchors else None, self.levels, self.level_sizes,
                      self.per_cell)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        boxes, scores = self.model.decode(self.model(images), self.priors)
        return boxes, scores


class RawGraph(nn.Module):
    """(B, 3, H, W) → the raw head output: ``cls_logits`` (B, N, C), ``bbox_reg`` (B, N, K) and, for the families
    that have one, ``score_factor`` (B, N, 1). Decoding is left to the caller (priors and coding in the metadata)."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> tuple[Tensor, ...]:
        out = self.model(images)
        return tuple(t for t in out if t is not None)


class EndToEndGraph(nn.Module):
    """(B, 3, H, W) → fixed-size detections, post-processing inside the graph.

    Outputs (D = ``max_det``; rows ``>= num_dets[i]`` are padding: boxes 0, scores 0, labels -1):

    - ``num_dets`` (B,) int64;
    - ``boxes`` (B, D, 4) float32 ``xyxy`` in input pixels, clipped to the input;
    - ``scores`` (B, D) float32, descending;
    - ``labels`` (B, D) int64.

    Candidates are the best ``nms_pre`` (class, prior) pairs per level (``cfg.nms_pre``) or the best
    ``pre_nms_topk`` over all priors (families without a per-level step): a static top-k, then the score
    threshold and ``min_bbox_size``; class-aware NMS (``torchvision.ops.nms`` on boxes offset per image and
    class, which exports to ONNX NonMaxSuppression) unless ``cfg.nms == "none"``; the best ``max_det`` per image.
    """

    def __init__(self, model: Detector, image_size: tuple[int, int], cfg: PostprocessConfig, pre_nms_topk: int = 1000):
        super().__init__()
        self.decoded = DecodedGraph(model, image_size)
        self.cfg = cfg
        self.pre_nms_topk = int(pre_nms_topk)
        h, w = self.decoded.image_size
        self.register_buffer("limits", torch.tensor([w, h, w, h], dtype=torch.float32), persistent=False)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        cfg = self.cfg
        boxes, scores = self.decoded(images)
        boxes = clip_boxes(boxes.float(), self.limits)
        scores = scores.float()
        num_classes = scores.shape[2]
        score, index = self._candidates(scores)  # (B, K): best pairs, flat index prior·C + class
        prior, label = index // num_classes, index % num_classes
        cand = torch.gather(boxes, 1, prior.unsqueeze(-1).expand(-1, -1, 4))  # (B, K, 4)
        valid = score > cfg.score_thr
        if cfg.min_bbox_size is not None:
            valid = valid & ((cand[..., 2:] - cand[..., :2]) > cfg.min_bbox_size).all(dim=-1)
        if cfg.nms == "class_aware":
            valid = valid & self._nms_keep(cand, score, label, num_classes)
        ranked = torch.where(valid, score, torch.full_like(score, -1.0))
        top, order = ranked.topk(min(cfg.max_det, ranked.shape[1]), dim=1)
        ok = top >= 0
        num_dets = ok.sum(dim=1)
        out_boxes = torch.gather(cand, 1, order.unsqueeze(-1).expand(-1, -1, 4)) * ok.unsqueeze(-1)
        out_scores = torch.where(ok, top, torch.zeros_like(top))
        out_labels = torch.where(ok, torch.gather(label, 1, order), torch.full_like(order, -1))
        pad = cfg.max_det - out_scores.shape[1]
        if pad > 0:  # fewer candidates than max_det
            out_boxes = F.pad(out_boxes, (0, 0, 0, pad))
            out_scores = F.pad(out_scores, (0, pad))
            out_labels = F.pad(out_labels, (0, pad), value=-1)
        return num_dets, out_boxes, out_scores, out_labels

    def _candidates(self, scores: Tensor) -> tuple[Tensor, Tensor]:
        """(B, N, C) → the best pairs (B, K) and their flat indices ``prior · C + class``, static K."""
        b, n, c = scores.shape
        if self.cfg.nms_pre is None:
            flat = scores.reshape(-1, n * c)
            return flat.topk(min(self.pre_nms_topk, n * c), dim=1)
        values, indices, start = [], [], 0
        for count in self.decoded.priors.level_counts:
            level = scores[:, start:start + count].reshape(-1, count * c)
            k = count * c if self.cfg.nms_pre <= 0 else min(self.cfg.nms_pre, count * c)
            v, i = level.topk(k, dim=1)
            values.append(v)
            indices.append(i + start * c)
            start += count
        return torch.cat(values, dim=1), torch.cat(indices, dim=1)

    def _nms_keep(self, boxes: Tensor, scores: Tensor, labels: Tensor, num_classes: int) -> Tensor:
        """(B, K) mask of the pairs class-aware NMS keeps, per image; one ``nms`` call with the boxes of every
        (image, class) group moved apart (torchvision's batched_nms under tracing)."""
        b, k = scores.shape
        image = torch.arange(b, device=scores.device).unsqueeze(1).expand(-1, k)
        group = (image * num_classes + labels).reshape(-1).to(boxes.dtype)
        flat = boxes.reshape(-1, 4)
        moved = flat + (group * (flat.max() + 1)).unsqueeze(1)
        keep = nms(moved, scores.reshape(-1), self.cfg.iou_thr)
        kept = torch.zeros_like(scores.reshape(-1)).scatter(0, keep, torch.ones_like(keep, dtype=scores.dtype))
        return (kept > 0).reshape(b, k)
