"""Feature Pyramid Network of RetinaNet as configured in MMDetection 3.x.

``FPN(in_channels=[…C3, C4, C5], out_channels=256, start_level=1, num_outs=5, add_extra_convs='on_input')``:

* lateral 1×1 and output 3×3 convs, both with bias (no norm, no activation);
* top-down path: nearest-neighbour resize **to the lateral's size** (not a fixed ×2), then add;
* P6 = 3×3 stride-2 conv on **C5** ('on_input'), P7 = 3×3 stride-2 conv on P6 **without** a ReLU
  in between (``relu_before_extra_convs=False``); torchvision's RetinaNet differs on both points;
* Xavier-uniform weights, zero biases.
Submodule names (``lateral_convs.i.conv``, ``fpn_convs.i.conv``) equal MMDetection's state-dict keys.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detcli.models.layers import ConvNormAct


class FPN(nn.Module):
    """(C3, C4, C5) → (P3, P4, P5, P6, P7), each with ``out_channels`` channels.

    Shapes: C_l (B, in_l, H_l, W_l) → P3..P5 at the sizes of C3..C5, P6 = ⌈H5/2⌉, P7 = ⌈H6/2⌉.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256, num_extra: int = 2) -> None:
        super().__init__()
        self.lateral_convs = nn.ModuleList(
            ConvNormAct(c, out_channels, 1, norm=None, act=None) for c in in_channels
        )
        self.fpn_convs = nn.ModuleList(
            ConvNormAct(out_channels, out_channels, 3, norm=None, act=None) for _ in in_channels
        )
        for i in range(num_extra):
            src = in_channels[-1] if i == 0 else out_channels
            self.fpn_convs.append(ConvNormAct(src, out_channels, 3, stride=2, norm=None, act=None))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, feats: Sequence[Tensor]) -> list[Tensor]:
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:], mode="nearest")
        n = len(laterals)
        outs = [self.fpn_convs[i](laterals[i]) for i in range(n)]
        extra_src = feats[-1]  # 'on_input': P6 from C5
        for conv in self.fpn_convs[n:]:
            outs.append(conv(extra_src))
            extra_src = outs[-1]  # P7 from P6, no ReLU
        return outs
