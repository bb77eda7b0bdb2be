"""Anchor-free detectors with one point prior per feature-map cell and side distances in pixels (FCOS-style
box coding): RTMDet and DeFCN. What they share lives here; each family keeps its head, assigner and losses."""
from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from detcli.assigners.prior_fit import larger_input_advice
from detcli.geometry.distance import bbox2distance, distance2bbox
from detcli.geometry.priors import point_priors
from detcli.models.base import Detector, level_grid_sizes
from detcli.structures import HeadOutput, Priors


class PointDetector(Detector):
    """One point per cell of the ⌈H/s⌉ × ⌈W/s⌉ maps at ``((x + o)·s, (y + o)·s)``, ``o`` = :attr:`prior_offset`;
    ``bbox_reg`` is (B, N, 4) distances (left, top, right, bottom) in input pixels from the point."""

    prior_offset: ClassVar[float] = 0.0

    def priors(self, image_size: tuple[int, int], device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> Priors:
        """(N, 4) points ``(x, y, stride, stride)`` in level, y, x order, with the level grid sizes."""
        sizes = level_grid_sizes(image_size, self.strides)
        points = point_priors(list(sizes), self.strides, offset=self.prior_offset, device=device, dtype=dtype)
        return Priors.on_grid(points, None, sizes, 1)

    def decode_boxes(self, outputs: HeadOutput, priors: Priors) -> Tensor:
        """(B, N, 4) pixel distances → (B, N, 4) ``xyxy`` at the prior points, not clipped."""
        return distance2bbox(priors.points[:, :2], outputs.bbox_reg)

    def encode_boxes(self, boxes: Tensor, priors: Priors) -> Tensor:
        """(B, N, 4) ``xyxy`` → (B, N, 4) side distances from the prior points in pixels (unbounded)."""
        return bbox2distance(priors.points[:, :2], boxes)

    def fit_advice(self, missed_wh: Tensor, reasons: Tensor) -> str:
        """GTs with no usable prior point are those under the stride-``s_min`` grid → a larger input."""
        if missed_wh.numel() == 0:
            return "nothing to change"
        return larger_input_advice(missed_wh, self.strides[0])


__all__ = ["PointDetector"]
