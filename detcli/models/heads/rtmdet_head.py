"""RTMDet's detection head, ``RTMDetSepBNHead`` of MMDetection 3.x (``mmdet/models/dense_heads/rtmdet_head.py``),
layers only: decoding lives in the detector, assignment and losses in ``detcli.assigners`` / ``detcli.losses``.
"""
from __future__ import annotations

from torch import Tensor, nn

from detcli.models.layers import ConvNormAct, normal_init

PRIOR_PROB_BIAS = -4.595  # ≈ -log((1 - 0.01) / 0.01): initial sigmoid score 0.01 (mmengine bias_init_with_prob)


class RTMDetSepBNHead(nn.Module):
    """Separate cls and reg towers of ``stacked_convs`` 3×3 ConvModules per level whose **conv weights are shared
    across the levels while each level keeps its own BN** ("shared conv, separated BN"), then a per-level 1×1
    ``rtm_cls`` (C outputs) and ``rtm_reg`` (4 outputs), both with bias. No Scale, no objectness.

    Sharing is done as in the official head: level n's ``cls_convs[n][i].conv`` *is* the module
    ``cls_convs[0][i].conv``. The state dict therefore lists the shared weight under every level
    (``cls_convs.{0,1,2}.{i}.conv.weight``, one tensor), exactly as an MMDetection checkpoint does, while
    ``parameters()`` yields it once.

    Args:
        num_classes: C.
        in_channels: channels of every input level (= feat_channels in RTMDet).
        feat_channels: tower width.
        stacked_convs: tower depth.
        strides: one per level; the regression output is multiplied by the level's stride.
        exp_on_reg: distances = exp(rtm_reg(x)) · stride (RTMDet-m/l/x); else rtm_reg(x) · stride (tiny/s, not
            forced positive).

    forward: levels (B, in_channels, H_l, W_l) → (cls maps [(B, C, H_l, W_l)], distance maps
    [(B, 4, H_l, W_l)]), distances (l, t, r, b) in input pixels.
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int, stacked_convs: int = 2,
                 strides: tuple[int, ...] = (8, 16, 32), exp_on_reg: bool = False, act: str = "SiLU") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.exp_on_reg = exp_on_reg

        def tower() -> nn.ModuleList:
            return nn.ModuleList([ConvNormAct(in_channels if i == 0 else feat_channels, feat_channels, 3, act=act)
                                  for i in range(stacked_convs)])

        self.cls_convs = nn.ModuleList([tower() for _ in self.strides])
        self.reg_convs = nn.ModuleList([tower() for _ in self.strides])
        self.rtm_cls = nn.ModuleList([nn.Conv2d(feat_channels, num_classes, 1) for _ in self.strides])
        self.rtm_reg = nn.ModuleList([nn.Conv2d(feat_channels, 4, 1) for _ in self.strides])
        for towers in (self.cls_convs, self.reg_convs):
            for level in towers[1:]:
                for i, conv_module in enumerate(level):
                    conv_module.conv = towers[0][i].conv  # one conv, one BN per level
        self.init_weights()

    def init_weights(self) -> None:
        """Every conv N(0, 0.01²), bias 0; BN (1, 0); ``rtm_cls`` bias -4.595 (official ``init_weights``)."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for conv in self.rtm_cls:
            normal_init(conv, std=0.01, bias=PRIOR_PROB_BIAS)

    def forward(self, feats: tuple[Tensor, ...] | list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        cls_maps, reg_maps = [], []
        for x, stride, cls_tower, reg_tower, rtm_cls, rtm_reg in zip(
                feats, self.strides, self.cls_convs, self.reg_convs, self.rtm_cls, self.rtm_reg):
            cls_feat, reg_feat = x, x
            for conv in cls_tower:
                cls_feat = conv(cls_feat)
            for conv in reg_tower:
                reg_feat = conv(reg_feat)
            reg = rtm_reg(reg_feat)
            cls_maps.append(rtm_cls(cls_feat))
            reg_maps.append((reg.exp() if self.exp_on_reg else reg) * stride)
        return cls_maps, reg_maps
