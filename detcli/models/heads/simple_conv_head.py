"""SimpleConvHead: the AGM auxiliary head of NanoDet-Plus, used only in training to produce the predictions
the label assigner sees (RangiLyu/nanodet ``nanodet/model/head/simple_conv_head.py``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.heads.nanodet_plus_head import PRIOR_PROB_BIAS
from detcli.models.layers import ConvNormAct, Scale, normal_init


class SimpleConvHead(nn.Module):
    """GFL-style head: separate cls / reg towers of ``stacked_convs`` × (3×3 conv + GN(32) + act) shared across
    levels; 3×3 ``gfl_cls`` (C outputs) and ``gfl_reg`` (4(R+1) outputs); a learnable per-level Scale on reg.

    Args:
        num_classes: C.
        in_channels: input channels (NanoDet-Plus: 2 × neck channels, main and aux features concatenated).
        feat_channels: tower width.
        stacked_convs: tower depth.
        strides: one per level.
        reg_max: R.
        norm: tower norm; the official default GN with 32 groups (the yml does not override it).

    forward: list of (B, in_channels, H_l, W_l) → (B, N, C + 4(R+1)), same layout as NanoDetPlusHead.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 192, stacked_convs: int = 4,
                 strides: tuple[int, ...] = (8, 16, 32, 64), reg_max: int = 7, act: str = "LeakyReLU",
                 norm: str = "GN", num_groups: int = 32) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)

        def tower() -> nn.ModuleList:
            return nn.ModuleList([
                ConvNormAct(in_channels if i == 0 else feat_channels, feat_channels, 3, norm=norm, act=act,
                            num_groups=num_groups)
                for i in range(stacked_convs)
            ])

        self.cls_convs = tower()
        self.reg_convs = tower()
        self.gfl_cls = nn.Conv2d(feat_channels, num_classes, 3, padding=1)
        self.gfl_reg = nn.Conv2d(feat_channels, 4 * (reg_max + 1), 3, padding=1)
        self.scales = nn.ModuleList([Scale(1.0) for _ in self.strides])
        self.init_weights()

    def init_weights(self) -> None:
        """Tower convs and gfl_reg N(0, 0.01²), gfl_cls bias -4.595 (official); norms (1, 0)."""
        for m in list(self.cls_convs) + list(self.reg_convs):
            normal_init(m.conv, std=0.01)
        normal_init(self.gfl_cls, std=0.01, bias=PRIOR_PROB_BIAS)
        normal_init(self.gfl_reg, std=0.01)

    def forward(self, feats: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        outputs = []
        for x, scale in zip(feats, self.scales):
            cls_feat, reg_feat = x, x
            for conv in self.cls_convs:
                cls_feat = conv(cls_feat)
            for conv in self.reg_convs:
                reg_feat = conv(reg_feat)
            out = torch.cat([self.gfl_cls(cls_feat), scale(self.gfl_reg(reg_feat))], dim=1)
            outputs.append(out.flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)
