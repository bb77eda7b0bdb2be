"""3D Max Filtering (Wang et al., "End-to-End Object Detection with Fully Convolutional Network", CVPR 2021, §3.3).

Duplicate predictions of one object sit next to each other in space and across neighbouring FPN levels; a
max filter over that 3-D (level, y, x) neighbourhood lets the head see which prediction is the local maximum,
so that the one-to-one assignment can suppress the others without NMS. As DeFCN's ``MaxFiltering``
(``FILTER_KERNEL_SIZE=3``, ``FILTER_TAU=2``):

1. one 3×3 conv (with bias) shared by the levels, applied to each level's regression-tower feature;
2. for level l, the convolved neighbours l − τ/2 … l + τ/2 (clipped at the first and last level) bilinearly
   resized to level l's size (``align_corners=False``), stacked on a new level axis: (B, C, S, H_l, W_l),
   S = τ + 1 inside the pyramid and τ/2 + 1 at the boundary levels;
3. ``MaxPool3d(kernel=(τ+1, k, k), stride 1, padding (τ/2, k/2, k/2))``, the slice of level l kept;
4. plus the level's input (residual), GroupNorm(32), ReLU.

Submodule names (``conv``, ``norm``) are DeFCN's, so its checkpoints load key for key.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MaxFiltering3D(nn.Module):
    """Per-level features (B, C, H_l, W_l) → max-filtered features of the same shapes.

    Args:
        channels: C (a multiple of 32 for the GroupNorm).
        kernel_size: spatial window k.
        tau: level window τ (τ + 1 levels).
        use_norm: GroupNorm(32) before the ReLU (DeFCN; its "wo_gn" variant drops it).
    """

    def __init__(self, channels: int, kernel_size: int = 3, tau: int = 2, use_norm: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, 1, 1)
        self.norm = nn.GroupNorm(32, channels) if use_norm else nn.Identity()
        self.margin = tau // 2
        self.max_pool = nn.MaxPool3d((tau + 1, kernel_size, kernel_size), stride=1,
                                     padding=(tau // 2, kernel_size // 2, kernel_size // 2))

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        convolved = [self.conv(x) for x in feats]
        out = []
        for level, x in enumerate(feats):
            lo, hi = max(0, level - self.margin), min(len(feats), level + self.margin + 1)
            size = convolved[level].shape[-2:]
            stack = torch.stack([
                convolved[k] if k == level else F.interpolate(convolved[k], size=size, mode="bilinear",
                                                              align_corners=False)
                for k in range(lo, hi)
            ], dim=2)  # (B, C, S, H_l, W_l)
            pooled = self.max_pool(stack)[:, :, level - lo]
            out.append(F.relu(self.norm(pooled + x)))
        return out
