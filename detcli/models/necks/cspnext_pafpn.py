"""CSPNeXtPAFPN: the RTMDet neck (MMDetection 3.x ``mmdet/models/necks/cspnext_pafpn.py``).

A PAFPN whose fusion blocks are CSPLayers of CSPNeXt blocks (no residuals, no channel attention), nearest ×2
upsampling, 3×3 stride-2 ConvModule downsampling, and a 3×3 ConvModule per output level. No extra levels.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.backbones.csp_blocks import CSPLayer
from detcli.models.layers import ConvNormAct, kaiming_uniform_init


class CSPNeXtPAFPN(nn.Module):
    """With inputs (C3, C4, C5) of channels (c3, c4, c5):

    - top-down: R5 = ``reduce_layers[0]`` (1×1 c5→c4) (C5); TD4 = ``top_down_blocks[0]`` (concat(up(R5), C4));
      R4 = ``reduce_layers[1]`` (1×1 c4→c3) (TD4); TD3 = ``top_down_blocks[1]`` (concat(up(R4), C3));
    - bottom-up: BU4 = ``bottom_up_blocks[0]`` (concat(``downsamples[0]``(TD3), R4));
      BU5 = ``bottom_up_blocks[1]`` (concat(``downsamples[1]``(BU4), R5)) — the laterals are the *reduced*
      R4 and R5, as in the official code;
    - outputs: ``out_convs[i]`` (3×3 → out_channels) of TD3, BU4, BU5.

    Args:
        in_channels: (c3, c4, c5).
        out_channels: channels of every output level (= the head's).
        num_csp_blocks: CSPNeXt blocks per CSPLayer.
        expand_ratio: CSPLayer mid / out.

    forward: three (B, c_l, H_l, W_l) with H_l = 2·H_(l+1) → three (B, out_channels, H_l, W_l). Inputs whose
    sizes do not halve exactly (an input that is not a multiple of 32) fail at the concatenation, as in the
    official neck.
    """

    def __init__(self, in_channels: tuple[int, int, int], out_channels: int, num_csp_blocks: int = 3,
                 expand_ratio: float = 0.5, act: str = "SiLU") -> None:
        super().__init__()
        c = tuple(in_channels)
        if len(c) != 3:
            raise ValueError(f"CSPNeXtPAFPN takes three levels, got in_channels {in_channels}")
        self.in_channels = c

        def csp(cin: int, cout: int) -> CSPLayer:
            return CSPLayer(cin, cout, num_csp_blocks, add_identity=False, channel_attention=False,
                            expand_ratio=expand_ratio, act=act)

        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")
        # coarse → fine: index 0 works on C5, index 1 on TD4
        self.reduce_layers = nn.ModuleList([ConvNormAct(c[i], c[i - 1], 1, act=act) for i in (2, 1)])
        self.top_down_blocks = nn.ModuleList([csp(2 * c[i - 1], c[i - 1]) for i in (2, 1)])
        # fine → coarse
        self.downsamples = nn.ModuleList([ConvNormAct(c[i], c[i], 3, stride=2, act=act) for i in (0, 1)])
        self.bottom_up_blocks = nn.ModuleList([csp(2 * c[i], c[i + 1]) for i in (0, 1)])
        self.out_convs = nn.ModuleList([ConvNormAct(c[i], out_channels, 3, act=act) for i in (0, 1, 2)])
        kaiming_uniform_init(self)

    def forward(self, feats: tuple[Tensor, ...] | list[Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        c3, c4, c5 = feats
        r5 = self.reduce_layers[0](c5)
        td4 = self.top_down_blocks[0](torch.cat([self.upsample(r5), c4], dim=1))
        r4 = self.reduce_layers[1](td4)
        td3 = self.top_down_blocks[1](torch.cat([self.upsample(r4), c3], dim=1))
        bu4 = self.bottom_up_blocks[0](torch.cat([self.downsamples[0](td3), r4], dim=1))
        bu5 = self.bottom_up_blocks[1](torch.cat([self.downsamples[1](bu4), r5], dim=1))
        return tuple(conv(x) for conv, x in zip(self.out_convs, (td3, bu4, bu5)))
