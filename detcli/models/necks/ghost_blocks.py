"""GhostPAN's fusion block: a stack of Ghost bottlenecks (Han et al., "GhostNet: More Features from Cheap
Operations", 2020), in the form of RangiLyu/nanodet ``nanodet/model/fpn/ghost_pan.py`` (stride 1, no SE, PyTorch
default init). The Ghost module and bottleneck are GhostNet's own (``detcli.models.backbones.ghostnet``), as the
official GhostPAN imports them from its GhostNet backbone.

Sequential indices mirror the official module so checkpoint keys match
(``blocks.<i>.ghost1.primary_conv.0`` conv, ``.1`` BN; ``shortcut.0..3``).
"""
from __future__ import annotations

from torch import Tensor, nn

from detcli.models.backbones.ghostnet import GhostBottleneck, GhostModule

__all__ = ["GhostBlocks", "GhostBottleneck", "GhostModule"]


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
