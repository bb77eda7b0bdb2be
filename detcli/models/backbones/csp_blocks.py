"""The CSP building blocks of RTMDet's CSPNeXt backbone and CSPNeXtPAFPN neck (Lyu et al., "RTMDet", 2022).

Layouts as MMDetection 3.x ``mmdet/models/layers/csp_layer.py`` (``CSPNeXtBlock``, ``CSPLayer``),
``se_layer.py`` (``ChannelAttention``) and ``backbones/csp_darknet.py`` (``SPPBottleneck``); module names equal
their state-dict keys. Every conv is a :class:`~detcli.models.layers.ConvNormAct` (conv without bias → BN →
SiLU) unless said otherwise.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.layers import ConvNormAct, DepthwiseSeparableConvModule


class CSPNeXtBlock(nn.Module):
    """``conv1`` 3×3 → ``conv2`` depthwise-separable k×k (5×5 in RTMDet: the large-kernel depthwise conv comes
    second), plus the input when ``add_identity``.

    Shapes: (B, C, H, W) → (B, C, H, W) (RTMDet uses it with in = out = C and expansion 1).
    """

    def __init__(self, channels: int, add_identity: bool, kernel_size: int = 5, act: str = "SiLU") -> None:
        super().__init__()
        self.conv1 = ConvNormAct(channels, channels, 3, act=act)
        self.conv2 = DepthwiseSeparableConvModule(channels, channels, kernel_size, act=act)
        self.add_identity = add_identity

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(self.conv1(x))
        return out + x if self.add_identity else out


class ChannelAttention(nn.Module):
    """RTMDet's channel attention: global average pool → ``fc`` (1×1 conv C→C *with* bias, no reduction) →
    Hardsigmoid → multiply the input channel-wise.

    Shapes: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.global_avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Conv2d(channels, channels, 1, bias=True)
        self.act = nn.Hardsigmoid(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return x * self.act(self.fc(self.global_avgpool(x)))


class CSPLayer(nn.Module):
    """Cross Stage Partial layer with CSPNeXt blocks.

    ``main_conv`` (1×1, in→mid) → ``blocks`` (num_blocks × :class:`CSPNeXtBlock`(mid)) and ``short_conv``
    (1×1, in→mid) → concat (main, short) → [``attention``: :class:`ChannelAttention`(2·mid)] → ``final_conv``
    (1×1, 2·mid→out), with mid = ⌊out · expand_ratio⌋.

    Args:
        in_channels, out_channels: channels in and out.
        num_blocks: CSPNeXt blocks on the main path.
        add_identity: residual in every block (backbone stages 1–3; not the last stage, never in the neck).
        channel_attention: backbone only.
        expand_ratio: mid / out (0.5).

    Shapes: (B, in, H, W) → (B, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, add_identity: bool,
                 channel_attention: bool, expand_ratio: float = 0.5, act: str = "SiLU") -> None:
        super().__init__()
        mid = int(out_channels * expand_ratio)
        self.main_conv = ConvNormAct(in_channels, mid, 1, act=act)
        self.short_conv = ConvNormAct(in_channels, mid, 1, act=act)
        self.final_conv = ConvNormAct(2 * mid, out_channels, 1, act=act)
        self.blocks = nn.Sequential(*[CSPNeXtBlock(mid, add_identity, act=act) for _ in range(num_blocks)])
        self.attention = ChannelAttention(2 * mid) if channel_attention else None

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([self.blocks(self.main_conv(x)), self.short_conv(x)], dim=1)
        if self.attention is not None:
            x = self.attention(x)
        return self.final_conv(x)


class SPPBottleneck(nn.Module):
    """Spatial pyramid pooling (YOLOv3-SPP): ``conv1`` 1×1 C→C/2 → concat(x, maxpool 5, 9, 13 of x; stride 1,
    same padding) → ``conv2`` 1×1 2C→out.

    Shapes: (B, C, H, W) → (B, out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...] = (5, 9, 13),
                 act: str = "SiLU") -> None:
        super().__init__()
        mid = in_channels // 2
        self.conv1 = ConvNormAct(in_channels, mid, 1, act=act)
        self.poolings = nn.ModuleList([nn.MaxPool2d(k, stride=1, padding=k // 2) for k in kernel_sizes])
        self.conv2 = ConvNormAct(mid * (len(kernel_sizes) + 1), out_channels, 1, act=act)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)
        return self.conv2(torch.cat([x] + [pool(x) for pool in self.poolings], dim=1))
