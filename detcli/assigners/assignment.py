"""The one result type of every label assigner (MaxIoU, dynamic soft label, POTO), used by the losses and by
inspection alike."""
from __future__ import annotations

from typing import NamedTuple

from torch import Tensor

IGNORE = -1  # gt_inds of a prior that takes part in no loss term
BACKGROUND = 0  # gt_inds of a negative


class Assignment(NamedTuple):
    """Per-prior assignment; every field is (N,) for one image or (B, N) for a batch.

    One convention for all assigners (MMDetection's ``AssignResult.gt_inds``):

    Attributes:
        gt_inds: int64; ``i + 1`` = matched to GT ``i`` of its image (positive), ``0`` = background,
            ``-1`` = ignored (MaxIoU's band between the IoU thresholds, anchors outside the image's padded area).
        labels: int64 class of the matched GT for positives, ``-1`` everywhere else.
        quality: float32, the assigner's own measure of the prior: MaxIoU the prior's best IoU with any GT
            (whatever its assignment; 0 without GTs and for priors outside the image); dynamic soft label
            assignment and POTO the IoU of the prior's *predicted* box with its matched GT (the QFL soft
            target), 0 unless positive.
        auxiliary: a second assignment of the same priors that trains an auxiliary loss only (DeFCN's
            one-to-many assignment beside POTO's one-to-one), or None. Inspection shows it beside the main one.
    """

    gt_inds: Tensor
    labels: Tensor
    quality: Tensor
    auxiliary: Assignment | None = None

    @property
    def pos_mask(self) -> Tensor:
        """Positives."""
        return self.gt_inds > 0

    @property
    def neg_mask(self) -> Tensor:
        """Background priors."""
        return self.gt_inds == BACKGROUND

    @property
    def ignore_mask(self) -> Tensor:
        """Priors that take part in no loss term."""
        return self.gt_inds == IGNORE

    @property
    def gt_index(self) -> Tensor:
        """0-based index of the matched GT, -1 where not positive."""
        return (self.gt_inds - 1).clamp(min=-1)
