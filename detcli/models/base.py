"""The interface every detector family implements; the engine only talks to this."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal

from torch import Tensor, nn

from detcli.structures import Detections, ImageMeta, Target


class Detector(nn.Module, ABC):
    """A one-stage detector.

    ``forward`` is the inference graph only (what parity checks and export compare);
    ``loss`` runs the training graph (it may use modules that ``forward`` never touches,
    e.g. NanoDet-Plus' AGM); ``predict`` decodes and post-processes.
    """

    strides: tuple[int, ...]
    num_classes: int

    # How the family's reference reports a model's parameter count, so the model summary can label the
    # number to compare: "conv" = weights and biases of the inference graph's Conv2d layers (BN excluded),
    # "all" = every parameter of the inference graph. ``param_count_source`` names who counts that way.
    param_count_convention: ClassVar[Literal["conv", "all"]] = "all"
    param_count_source: ClassVar[str | None] = None

    @abstractmethod
    def forward(self, images: Tensor) -> Tensor | tuple[Tensor, ...]:
        """Raw head outputs for (B, 3, H, W) normalised images."""

    @abstractmethod
    def loss(self, images: Tensor, targets: list[Target], metas: list[ImageMeta], epoch: int) -> dict[str, Tensor]:
        """Named scalar losses (already weighted); the engine sums them. ``epoch`` is 0-indexed."""

    @abstractmethod
    def predict(
        self,
        images: Tensor,
        metas: list[ImageMeta],
        score_thr: float,
        iou_thr: float,
        max_det: int,
    ) -> list[Detections]:
        """Detections in network-input pixels (the engine maps them back to the original image)."""

    def inference_state_dict(self) -> dict[str, Tensor]:
        """State dict of the inference graph (training-only modules dropped). Default: everything."""
        return self.state_dict()
