"""GhostNet blocks used by GhostPAN (Han et al., "GhostNet: More Features from Cheap Operations", 2020),
in the form of RangiLyu/nanodet ``nanodet/model/backbone/ghostnet.py`` (no SE, stride 1, PyTorch default init).

Sequential indices mirror the official module so checkpoint keys match
(``primary_conv.0`` conv, ``.1`` BN; ``shortcut.0..3``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from detcli.models.layers import DepthwiseConv2d, make_act


class GhostModule(nn.Module):
    """Half the outputs from a 1×1 conv ("primary"), the other half from a cheap 3×3 depthwise conv on them.

    primary: 1×1 in→⌈out/2⌉ + BN (+ act); cheap: dw3×3 + BN (+ act); output concat → (B, out, H, W).
    ``act=None`` gives the linear variant used as ``ghost2``.
    """

    def __init__(self, in_channels: int, out_channels: int, act: str | None = "LeakyReLU", dw_size: int = 3) -> None:
        super().__init__()
        init_channels = math.ceil(out_channels / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init_channels, 1, bias=False),
            nn.BatchNorm2d(init_channels),
            make_act(act),
        )
        self.cheap_operation = nn.Sequential(
            DepthwiseConv2d(init_channels, dw_size),
            nn.BatchNorm2d(init_channels),
            make_act(act),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """ghost1 (with act) → ghost2 (linear) + shortcut; no activation after the sum.

    Shortcut: identity when in == out, else dw k×k + BN → 1×1 + BN (k = ``dw_kernel_size``, 5 in GhostPAN).
    Shapes: (B, in, H, W) → (B, out, H, W).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dw_kernel_size: int = 3,
                 act: str = "LeakyReLU") -> None:
        super().__init__()
        self.ghost1 = GhostModule(in_channels, mid_channels, act=act)
        self.ghost2 = GhostModule(mid_channels, out_channels, act=None)
        if in_channels == out_channels:
            self.shortcut = nn.Sequential()
        else:
            pad = (dw_kernel_size - 1) // 2
            self.shortcut = nn.Sequential(
                DepthwiseConv2d(in_channels, dw_kernel_size, 1, pad),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.ghost2(self.ghost1(x))
        out += self.shortcut(x)  # in place: out is a fresh concat result
        return out


class GhostBlocks(nn.Module):
    """A stack of ``num_blocks`` GhostBottlenecks (``blocks``), mid channels = out × expand.

    GhostPAN uses one block, expand 1, no residual: (B, 2C, H, W) → (B, C, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, expand: int = 1, kernel_size: int = 5,
                 num_blocks: int = 1, act: str = "LeakyReLU") -> None:
        super().__init__()
        mid = int(out_channels * expand)
        self.blocks = nn.Sequential(*[
            GhostBottleneck(in_channels if i == 0 else out_channels, mid, out_channels, kernel_size, act)
            for i in range(num_blocks)
        ])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)
