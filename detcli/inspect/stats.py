"""Statistics of a detector's label assignment over a dataset, accumulated batch by batch, with no drawing.

What ``detcli inspect-anchors`` reports: positives per GT (min / mean / max, histogram), positives and ignored
priors per level, the GTs left without a positive (size, reason), the IoU between each GT and its positive priors,
the level each GT size lands on, and the prior fit (:mod:`detcli.assigners.prior_fit`) with a verdict. Everything
is family-neutral: it reads the contract's :class:`~detcli.models.base.Priors`,
:class:`~detcli.assigners.assignment.Assignment` and :class:`~detcli.assigners.prior_fit.PriorFit`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from detcli.assigners.assignment import Assignment
from detcli.geometry.iou import pairwise_iou
from detcli.assigners.prior_fit import REASONS, TAKEN_BY_OTHER_GTS, PriorFit
from detcli.structures import Priors
from detcli.structures import ImageMeta, Target

SIZE_EDGES = (16, 32, 64, 128, 256, 512)  # √(w·h) of a GT in input pixels
SIZE_BINS = ("<16", "16-32", "32-64", "64-128", "128-256", "256-512", ">=512")
POSITIVE_EDGES = (1, 2, 3, 4, 6, 10, 20)  # positives per GT
POSITIVE_BINS = ("0", "1", "2", "3", "4-5", "6-9", "10-19", "20+")
IOU_BINS = tuple(f"{i / 10:.1f}-{(i + 1) / 10:.1f}" for i in range(10))
FIT_GOOD = 0.98  # YOLOv5's autoanchor threshold on the best possible recall
LISTED = 100  # GTs without a positive listed one by one in the JSON (all are counted)


@dataclass
class AssignmentStats:
    """Running totals over the images added so far.

    Args:
        strides: level strides (their count is L).
        class_names: to name the GTs listed.
        anchor_iou: the priors are anchor boxes: IoU of a positive = IoU(anchor, its GT); else the assignment's
            quality (the IoU of the prior's predicted box with its GT).
        size_divisor: an image's own area is its ``img_shape`` rounded up to this; ignored priors are counted
            there only (beyond it lies the padding of larger images in the batch, which MMDetection's valid
            flags leave out of RetinaNet's assignment, so they come out "ignored" too).
    """

    strides: tuple[int, ...]
    class_names: list[str]
    anchor_iou: bool
    size_divisor: int = 32
    images: int = 0
    unreadable: int = 0
    positives_per_gt: list[Tensor] = field(default_factory=list)
    fit_fits: list[Tensor] = field(default_factory=list)
    fit_candidates: list[Tensor] = field(default_factory=list)
    fit_reasons: list[Tensor] = field(default_factory=list)
    fit_wh: list[Tensor] = field(default_factory=list)
    zero_reasons: list[Tensor] = field(default_factory=list)
    zero_listed: list[dict[str, Any]] = field(default_factory=list)
    positive_iou: list[Tensor] = field(default_factory=list)
    aux_positives_per_gt: list[Tensor] = field(default_factory=list)  # of an auxiliary assignment (DeFCN)

    def __post_init__(self) -> None:
        levels = len(self.strides)
        self.positives_per_level = torch.zeros(levels, dtype=torch.long)
        self.ignored_per_level = torch.zeros(levels, dtype=torch.long)
        self.size_level = torch.zeros(len(SIZE_BINS), levels + 1, dtype=torch.long)  # last column: no positive
        self.aux_positives_per_level = torch.zeros(levels, dtype=torch.long)

    def add(self, priors: Priors, assignment: Assignment, targets: list[Target], metas: list[ImageMeta],
            fits: list[PriorFit]) -> None:
        """One batch: ``assignment`` fields (B, N) on ``priors``; ``fits[i]`` of image i's GTs."""
        levels = len(self.strides)
        prior_levels = priors.levels.cpu()
        points = priors.points.cpu()
        gt_inds_all = assignment.gt_inds.cpu()
        aux_all = None if assignment.auxiliary is None else assignment.auxiliary.gt_inds.cpu()
        d = max(1, self.size_divisor)
        for i, (target, meta, fit) in enumerate(zip(targets, metas, fits)):
            self.images += 1
            gt_inds = gt_inds_all[i]
            pad_h, pad_w = (-(-int(s) // d) * d for s in meta.img_shape)
            own = (points[:, 0] < pad_w) & (points[:, 1] < pad_h)
            self.ignored_per_level += torch.bincount(prior_levels[(gt_inds < 0) & own], minlength=levels)
            boxes = target.boxes.float().cpu()
            g = boxes.shape[0]
            if g == 0:
                continue
            pos = gt_inds > 0
            gt_of_pos = gt_inds[pos] - 1
            per_gt_level = torch.bincount(gt_of_pos * levels + prior_levels[pos], minlength=g * levels)
            per_gt_level = per_gt_level.view(g, levels)
            count = per_gt_level.sum(dim=1)
            self.positives_per_gt.append(count)
            self.positives_per_level += per_gt_level.sum(dim=0)
            if aux_all is not None:
                aux_pos = aux_all[i] > 0
                self.aux_positives_per_gt.append(torch.bincount(aux_all[i][aux_pos] - 1, minlength=g))
                self.aux_positives_per_level += torch.bincount(prior_levels[aux_pos], minlength=levels)

            wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
            size_bin = torch.bucketize(wh.prod(dim=1).sqrt(), torch.tensor(SIZE_EDGES, dtype=torch.float32),
                                       right=True)
            landed = torch.where(count > 0, per_gt_level.argmax(dim=1), levels)  # level with most positives
            self.size_level.index_put_((size_bin, landed), torch.ones(g, dtype=torch.long), accumulate=True)

            if self.anchor_iou:
                iou = pairwise_iou(priors.boxes[pos.to(priors.boxes.device)].cpu()[:, None], boxes[gt_of_pos][:, None])
                self.positive_iou.append(iou.flatten())
            else:
                self.positive_iou.append(assignment.quality[i].cpu()[pos].float())

            fits_i = fit.fits.cpu()
            self.fit_fits.append(fits_i)
            self.fit_candidates.append(fit.candidates.cpu())
            self.fit_reasons.append(fit.reason.cpu())
            self.fit_wh.append(wh)
            zero = count == 0
            reason = torch.where(fits_i, TAKEN_BY_OTHER_GTS, fit.reason.cpu())[zero]
            self.zero_reasons.append(reason)
            for k, r in zip(torch.nonzero(zero).flatten().tolist()[: LISTED - len(self.zero_listed)], reason.tolist()):
                self.zero_listed.append({
                    "image_id": meta.image_id, "file_name": meta.file_name, "gt": k,
                    "class": self.class_names[int(target.labels[k])], "width": round(float(wh[k, 0]), 1),
                    "height": round(float(wh[k, 1]), 1), "reason": REASONS[r],
                })

    # ------------------------------------------------------------------ results
    def summary(self, level_names: list[str]) -> dict[str, Any]:
        """The JSON-ready statistics (see the module docstring)."""
        counts = _cat(self.positives_per_gt, torch.long)
        ious = _cat(self.positive_iou, torch.float32)
        zero_reasons = _cat(self.zero_reasons, torch.long)
        n_gt = int(counts.numel())
        out: dict[str, Any] = {"images": self.images, "unreadable_images": self.unreadable, "gts": n_gt}
        out["positives_per_gt"] = {
            "min": int(counts.min()) if n_gt else 0,
            "mean": round(float(counts.float().mean()), 3) if n_gt else 0.0,
            "max": int(counts.max()) if n_gt else 0,
            "histogram": _histogram(counts.float(), POSITIVE_EDGES, POSITIVE_BINS),
        }
        out["positives_per_level"] = dict(zip(level_names, self.positives_per_level.tolist()))
        if self.aux_positives_per_gt:
            aux = _cat(self.aux_positives_per_gt, torch.long)
            out["auxiliary_positives_per_gt"] = {
                "of": "the auxiliary assignment (trains an auxiliary loss only)",
                "min": int(aux.min()) if aux.numel() else 0,
                "mean": round(float(aux.float().mean()), 3) if aux.numel() else 0.0,
                "max": int(aux.max()) if aux.numel() else 0,
                "histogram": _histogram(aux.float(), POSITIVE_EDGES, POSITIVE_BINS),
                "per_level": dict(zip(level_names, self.aux_positives_per_level.tolist())),
            }
        out["ignored_per_level"] = dict(zip(level_names, self.ignored_per_level.tolist()))
        out["gts_without_positive"] = {
            "count": int(zero_reasons.numel()),
            "by_reason": {REASONS[r]: int(c) for r, c in _counts(zero_reasons).items()},
            "listed": self.zero_listed,
        }
        out["positive_iou"] = {
            "of": "anchor box and its GT" if self.anchor_iou else "predicted box and its GT (the soft label)",
            "mean": round(float(ious.mean()), 4) if ious.numel() else None,
            "min": round(float(ious.min()), 4) if ious.numel() else None,
            "max": round(float(ious.max()), 4) if ious.numel() else None,
            "histogram": _histogram(ious.clamp(max=0.9999) * 10, tuple(range(1, 10)), IOU_BINS),
        }
        out["gt_size_vs_level"] = {
            "rows": "sqrt(w*h) of the GT in input pixels",
            "columns": "the level holding most of the GT's positives ('none': no positive)",
            "counts": {size: dict(zip([*level_names, "none"], row)) for size, row in
                       zip(SIZE_BINS, self.size_level.tolist())},
        }
        return out

    def fit_summary(self) -> tuple[dict[str, Any], Tensor, Tensor]:
        """Prior-fit totals, and the (M, 2) sizes and (M,) reasons of the GTs that do not fit."""
        fits = _cat(self.fit_fits, torch.bool)
        reasons = _cat(self.fit_reasons, torch.long)
        wh = torch.cat(self.fit_wh) if self.fit_wh else torch.zeros(0, 2)
        n = int(fits.numel())
        share = float(fits.float().mean()) if n else 1.0
        missed = ~fits
        fit = {
            "gts": n,
            "fit": int(fits.sum()),
            "fit_share": round(share, 4),
            "candidates_per_gt": round(float(_cat(self.fit_candidates, torch.long).float().mean()), 3) if n else 0.0,
            "not_fit_by_reason": {REASONS[r]: int(c) for r, c in _counts(reasons[missed]).items()},
        }
        return fit, wh[missed], reasons[missed]


def verdict(fit_share: float, gts: int, advice: str) -> tuple[bool, str]:
    """(suits, one line): the priors suit the data when at least :data:`FIT_GOOD` of the GTs fit."""
    if gts == 0:
        return False, "no GT boxes in the inspected images: nothing to judge"
    if fit_share >= FIT_GOOD:
        return True, f"the priors suit this data: {fit_share:.1%} of {gts} GTs fit (>= {FIT_GOOD:.0%})"
    return False, f"the priors miss {1 - fit_share:.1%} of {gts} GTs (fit {fit_share:.1%} < {FIT_GOOD:.0%}); try {advice}"


def level_names(strides: tuple[int, ...]) -> list[str]:
    """``P3`` … for the usual strides 2^k (P_k has stride 2^k), else ``L0`` …"""
    names = []
    for i, s in enumerate(strides):
        k = int(s).bit_length() - 1
        names.append(f"P{k}" if 1 << k == s else f"L{i}")
    return names if len(set(names)) == len(names) else [f"L{i}" for i in range(len(strides))]


def _cat(parts: list[Tensor], dtype: torch.dtype) -> Tensor:
    return torch.cat(parts) if parts else torch.zeros(0, dtype=dtype)


def _counts(codes: Tensor) -> dict[int, int]:
    values, counts = torch.unique(codes, return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def _histogram(values: Tensor, edges: tuple[float, ...], names: tuple[str, ...]) -> dict[str, int]:
    idx = torch.bucketize(values, torch.tensor(edges, dtype=values.dtype), right=True)
    return dict(zip(names, torch.bincount(idx, minlength=len(names)).tolist()))
