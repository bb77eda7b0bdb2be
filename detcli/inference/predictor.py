"""The protocol every runtime implements: the PyTorch :class:`~detcli.models.base.Detector`, the onnxruntime
:class:`~detcli.export.runtime.OnnxDetector`, and the next ones.

The prediction loop (:mod:`detcli.inference.loop`), evaluation, predict, export parity and inspection take a
:class:`Predictor` and nothing more specific.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from detcli.postprocess import PostprocessConfig
from detcli.structures import Detections, ImageMeta


@runtime_checkable
class Predictor(Protocol):
    """Batched detections in network-input pixels, and the family's rule back to original pixels.

    Attributes:
        postprocess_cfg: the settings :meth:`predict` uses when given none (the preset's ``test`` section).
    """

    postprocess_cfg: PostprocessConfig

    def predict(self, images: Tensor, metas: list[ImageMeta], cfg: PostprocessConfig | None = None) -> list[Detections]:
        """(B, 3, H, W) normalised, padded images → B detections, boxes (K, 4) xyxy in input pixels.

        ``metas`` give each image's ``img_shape`` (boxes are clipped to it); ``cfg`` overrides
        :attr:`postprocess_cfg` (a runtime with post-processing built in applies what it can and says so).
        """
        ...

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        """Detections of one image in input pixels (on CPU) → original-image pixels, by the family's official rule."""
        ...


__all__ = ["Predictor"]
