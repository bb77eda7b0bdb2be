"""Delta-(x, y, w, h) box coding of R-CNN, as MMDetection 3.x's ``DeltaXYWHBBoxCoder``.

encode: dx = (gx − px)/pw, dy = (gy − py)/ph, dw = log(gw/pw), dh = log(gh/ph), then (δ − mean)/std.
Widths are x2 − x1 (no "+1", MMDetection ≥ 2.0). decode clamps dw, dh to ±|log(16/1000)| on *both*
sides (MMDetection; torchvision clamps only from above) and clips boxes to [0, W] × [0, H].
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor


class DeltaXYWHCoder:
    """Encode GT boxes as deltas from anchors and decode them back.

    Args:
        means, stds: per-component normalisation of the deltas.
        wh_clamp: |dw|, |dh| are clamped to this before ``exp`` when decoding.
    """

    def __init__(
        self,
        means: Sequence[float] = (0.0, 0.0, 0.0, 0.0),
        stds: Sequence[float] = (1.0, 1.0, 1.0, 1.0),
        wh_clamp: float = abs(math.log(16 / 1000)),
    ) -> None:
        self.means = tuple(float(m) for m in means)
        self.stds = tuple(float(s) for s in stds)
        self.wh_clamp = float(wh_clamp)

    def encode(self, anchors: Tensor, gt: Tensor) -> Tensor:
        """(..., 4) xyxy anchors and matching (..., 4) xyxy GT boxes → (..., 4) normalised deltas."""
        anchors, gt = anchors.float(), gt.float()
        pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
        pwh = anchors[..., 2:] - anchors[..., :2]
        gxy = (gt[..., :2] + gt[..., 2:]) * 0.5
        gwh = gt[..., 2:] - gt[..., :2]
        deltas = torch.cat([(gxy - pxy) / pwh, torch.log(gwh / pwh)], dim=-1)
        return (deltas - deltas.new_tensor(self.means)) / deltas.new_tensor(self.stds)

    def decode(self, anchors: Tensor, deltas: Tensor, max_shape: Sequence[int] | Tensor | None = None) -> Tensor:
        """Apply deltas to anchors.

        Args:
            anchors: (..., 4) xyxy, broadcastable against ``deltas``.
            deltas: (..., 4) normalised deltas.
            max_shape: (h, w) to clip to, or a tensor of (h, w) pairs broadcastable against
                ``deltas[..., :2]`` (e.g. (K, 2) for (K, 4) deltas, (B, 1, 2) for (B, N, 4)); ``None`` = no clipping.
        Returns:
            (..., 4) xyxy boxes.
        """
        d = deltas * deltas.new_tensor(self.stds) + deltas.new_tensor(self.means)
        pxy = (anchors[..., :2] + anchors[..., 2:]) * 0.5
        pwh = anchors[..., 2:] - anchors[..., :2]
        gxy = pxy + pwh * d[..., :2]
        gwh = pwh * d[..., 2:].clamp(min=-self.wh_clamp, max=self.wh_clamp).exp()
        boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
        if max_shape is None:
            return boxes
        if isinstance(max_shape, Tensor):  # (..., 2) per-box (h, w), broadcast against boxes[..., :2]
            wh = max_shape.to(boxes).flip(-1)
            return torch.minimum(boxes.clamp(min=0), torch.cat([wh, wh], dim=-1))
        h, w = float(max_shape[0]), float(max_shape[1])
        return torch.minimum(boxes.clamp(min=0), boxes.new_tensor([w, h, w, h]))
