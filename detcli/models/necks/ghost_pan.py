"""GhostPAN: the NanoDet-Plus neck (RangiLyu/nanodet ``nanodet/model/fpn/ghost_pan.py``).

A PAN whose fusion blocks are GhostBottlenecks, with depthwise-separable downsampling and extra
stride-doubling levels.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.layers import ConvNormAct, DepthwiseConvModule
from detcli.models.necks.ghost_blocks import GhostBlocks


class GhostPAN(nn.Module):
    """1×1 reduce of every input → top-down (bilinear ×2 upsample, concat, GhostBlocks) →
    bottom-up (dw-separable k×k s2 conv, concat, GhostBlocks) → extra levels.

    Extra level i (stride doubles): ``extra_lvl_in_conv[i](R_top) + extra_lvl_out_conv[i](P_last)``, where
    R_top is the *reduced* coarsest input (not the PAN output), as in the official code.

    Args:
        in_channels: channels of the backbone features, fine → coarse (1.0x: 116, 232, 464).
        out_channels: channels of every output level (1.0x: 96).
        kernel_size: kernel of the dw convs (downsample, extra levels, ghost shortcut).
        num_extra_level: extra stride-2 levels appended after the coarsest one.
        act: activation name.

    forward: tuple of (B, in_channels[l], H_l, W_l) → tuple of len(in)+num_extra_level (B, out, H_l, W_l),
    each extra level of size ⌈H/2⌉ × ⌈W/2⌉ of the previous one.
    """

    def __init__(
        self,
        in_channels: list[int] | tuple[int, ...],
        out_channels: int,
        kernel_size: int = 5,
        num_extra_level: int = 1,
        expand: int = 1,
        num_blocks: int = 1,
        act: str = "LeakyReLU",
    ) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.out_channels = out_channels
        n = len(in_channels)
        pad = kernel_size // 2
        # bilinear, align_corners left at its default (False), as the official upsample_cfg
        self.upsample = nn.Upsample(scale_factor=2, mode="bilinear")
        self.reduce_layers = nn.ModuleList(
            [ConvNormAct(c, out_channels, 1, norm="BN", act=act) for c in in_channels]
        )

        def fuse() -> GhostBlocks:
            return GhostBlocks(out_channels * 2, out_channels, expand, kernel_size, num_blocks, act)

        def down() -> DepthwiseConvModule:
            return DepthwiseConvModule(out_channels, out_channels, kernel_size, 2, pad, act=act)

        self.top_down_blocks = nn.ModuleList([fuse() for _ in range(n - 1)])
        self.downsamples = nn.ModuleList([down() for _ in range(n - 1)])
        self.bottom_up_blocks = nn.ModuleList([fuse() for _ in range(n - 1)])
        self.extra_lvl_in_conv = nn.ModuleList([down() for _ in range(num_extra_level)])
        self.extra_lvl_out_conv = nn.ModuleList([down() for _ in range(num_extra_level)])

    def forward(self, inputs: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, ...]:
        if len(inputs) != len(self.in_channels):
            raise ValueError(f"GhostPAN expects {len(self.in_channels)} feature maps, got {len(inputs)}")
        reduced = [reduce(x) for reduce, x in zip(self.reduce_layers, inputs)]
        # top-down: inner[l] for l = coarsest..finest (inner[-1] = R_top)
        inner = [reduced[-1]]
        for i, lateral in enumerate(reversed(reduced[:-1])):
            fused = self.top_down_blocks[i](torch.cat([self.upsample(inner[0]), lateral], dim=1))
            inner.insert(0, fused)
        # bottom-up
        outs = [inner[0]]
        for i in range(len(reduced) - 1):
            down = self.downsamples[i](outs[-1])
            outs.append(self.bottom_up_blocks[i](torch.cat([down, inner[i + 1]], dim=1)))
        for conv_in, conv_out in zip(self.extra_lvl_in_conv, self.extra_lvl_out_conv):
            outs.append(conv_in(reduced[-1]) + conv_out(outs[-1]))
        return tuple(outs)
