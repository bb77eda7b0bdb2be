"""Traceable inference graphs of any :class:`~detcli.models.base.Detector` at one input size.

The priors of that size are computed once and kept as buffers, so the graph is ``forward`` + ``decode``:
pure tensor code without data-dependent shapes, which ``torch.jit.trace`` and ``torch.onnx.export`` accept.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.base import Detector, Priors


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
