"""NanoDet-Plus detection head (RangiLyu/nanodet ``nanodet/model/head/nanodet_plus_head.py``), layers only.

Decoding lives in the detector, assignment and losses in ``detcli.assigners`` / ``detcli.losses``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from detcli.models.layers import DepthwiseConvModule, normal_init

PRIOR_PROB_BIAS = -4.595  # ≈ -log((1 - 0.01) / 0.01): initial sigmoid score 0.01, as the official head


class NanoDetPlusHead(nn.Module):
    """Per-level (unshared) towers of ``stacked_convs`` DepthwiseConvModules and one 1×1 ``gfl_cls`` conv per
    level that predicts class logits and the GFL box distribution together (no separate reg branch, no Scale).

    Args:
        num_classes: C.
        in_channels: channels of every input level.
        feat_channels: tower width.
        stacked_convs: tower depth.
        kernel_size: dw kernel of the tower convs.
        strides: one per level.
        reg_max: R; each side has R + 1 distribution bins.

    forward: list of (B, in_channels, H_l, W_l) → (B, N, C + 4(R+1)) with N = Σ H_l·W_l, levels concatenated
    fine → coarse, row-major inside a level; the first C channels are class logits, then 4 × (R+1) box logits
    in the side order (left, top, right, bottom).
    """

    def __init__(self, num_classes: int, in_channels: int, feat_channels: int = 96, stacked_convs: int = 2,
                 kernel_size: int = 5, strides: tuple[int, ...] = (8, 16, 32, 64), reg_max: int = 7,
                 act: str = "LeakyReLU") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.reg_max = reg_max
        self.strides = tuple(strides)
        self.cls_convs = nn.ModuleList([
            nn.ModuleList([
                DepthwiseConvModule(in_channels if i == 0 else feat_channels, feat_channels, kernel_size, act=act)
                for i in range(stacked_convs)
            ])
            for _ in self.strides
        ])
        out = num_classes + 4 * (reg_max + 1)
        self.gfl_cls = nn.ModuleList([nn.Conv2d(feat_channels, out, 1) for _ in self.strides])
        self.init_weights()

    def init_weights(self) -> None:
        """Tower convs N(0, 0.01²); ``gfl_cls`` N(0, 0.01²) with bias -4.595 on *all* outputs (official)."""
        for m in self.cls_convs.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, std=0.01)
        for conv in self.gfl_cls:
            normal_init(conv, std=0.01, bias=PRIOR_PROB_BIAS)

    def forward(self, feats: list[Tensor] | tuple[Tensor, ...]) -> Tensor:
        outputs = []
        for x, tower, pred in zip(feats, self.cls_convs, self.gfl_cls):
            for conv in tower:
                x = conv(x)
            outputs.append(pred(x).flatten(start_dim=2))
        return torch.cat(outputs, dim=2).permute(0, 2, 1)
