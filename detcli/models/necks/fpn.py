"""Feature Pyramid Network (Lin et al., 2017) with RetinaNet's two extra levels, in the variants the families use.

Default = MMDetection 3.x's RetinaNet, ``FPN(in_channels=[…C3, C4, C5], out_channels=256, start_level=1,
num_outs=5, add_extra_convs='on_input')``:

* lateral 1×1 and output 3×3 convs, both with bias (no norm, no activation);
* top-down path: nearest-neighbour resize **to the lateral's size** (not a fixed ×2), then add;
* P6 = 3×3 stride-2 conv on **C5** ('on_input'), P7 = 3×3 stride-2 conv on P6 **without** a ReLU
  in between (``relu_before_extra_convs=False``); torchvision's RetinaNet differs on both points;
* Xavier-uniform weights, zero biases.

DeFCN (cvpods ``build_retinanet_resnet_fpn_p5_backbone``): ``extra_source="output"`` (P6 from **P5**),
``relu_before_extra=True`` (P7 = conv(ReLU(P6))), ``init="c2_xavier"`` (Kaiming-uniform with a = 1, Caffe2's
"Xavier"). cvpods upsamples by a fixed ×2, which equals the resize-to-size here on inputs padded to 32.

Submodule names (``lateral_convs.i.conv``, ``fpn_convs.i.conv``) equal MMDetection's state-dict keys.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

from detcli.models.layers import ConvNormAct


class FPN(nn.Module):
    """(C3, C4, C5) → (P3, P4, P5, P6, P7), each with ``out_channels`` channels.

    Shapes: C_l (B, in_l, H_l, W_l) → P3..P5 at the sizes of C3..C5, P6 = ⌈H5/2⌉, P7 = ⌈H6/2⌉.

    Args:
        in_channels: channels of C3..C5.
        out_channels: width of every output level.
        num_extra: stride-2 levels added on top (P6, P7).
        extra_source: the first extra conv's input, "input" = C5 (MMDetection) or "output" = P5 (cvpods/DeFCN).
        relu_before_extra: ReLU on the input of every extra conv after the first (DeFCN: P7 = conv(ReLU(P6))).
        init: "xavier" (Xavier uniform, MMDetection) or "c2_xavier" (Kaiming uniform a = 1, detectron2/cvpods).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        out_channels: int = 256,
        num_extra: int = 2,
        extra_source: Literal["input", "output"] = "input",
        relu_before_extra: bool = False,
        init: Literal["xavier", "c2_xavier"] = "xavier",
    ) -> None:
        super().__init__()
        self.extra_source, self.relu_before_extra = extra_source, relu_before_extra
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=None, act=None) for c in in_channels
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=None, act=None) for _ in in_channels
        )
        for i in range(num_extra):
            src = in_channels[-1] if i == 0 and extra_source == "input" else out_channels
            self.fpn_convs.append(ConvNormAct(src, out_channels, 3, stride=2, norm=None, act=None))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                if init == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.kaiming_uniform_(m.weight, a=1)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        n = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n)]
        extra_src = feats[-1] if self.extra_source == "input" else outs[-1]  # P6 from C5 or from P5
        for conv in self.fpn_convs[n:]:
            outs.append(conv(extra_src))
            extra_src = F.relu(outs[-1]) if self.relu_before_extra else outs[-1]  # P7 from (ReLU of) P6
        return outs
