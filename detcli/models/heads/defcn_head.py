"""DeFCN's head: FCOS-style towers with GroupNorm, per-level Scale, and 3D Max Filtering + a filter conv.

As DeFCN's ``FCOSHead`` (config ``poto.res50.fpn.coco.800size.3x_ms.3dmf.aux``), shared by all levels:

* ``cls_subnet`` and ``bbox_subnet``: ``num_convs`` × [3×3 conv with bias → GroupNorm(32) → ReLU];
* ``cls_score``: 3×3 conv → C logits; ``bbox_pred``: 3×3 conv → 4; one learnable ``scales[l]`` per level;
  distances (l, t, r, b) = ReLU(scale_l · bbox_pred) · stride_l in input pixels (``NORM_REG_TARGETS=True``);
* ``max3d`` (:class:`~detcli.models.heads.max_filtering.MaxFiltering3D`) on the bbox-tower features of all
  levels, then ``filter``: 3×3 conv → 1 logit; the score of a class is σ(cls) · σ(filter).

Init: every conv N(0, 0.01) with bias 0, GroupNorm (1, 0), then ``cls_score.bias`` = −log(99) (prior 0.01).
Module names are DeFCN's (``head.cls_subnet.0.weight``, ``head.max3d.conv.weight``, ``head.scales.0.scale`` …).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from detcli.models.heads.max_filtering import MaxFiltering3D
from detcli.models.layers import Scale, normal_init


def _tower(channels: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(channels, channels, 3, 1, 1), nn.GroupNorm(32, channels), nn.ReLU()]
    return nn.Sequential(*layers)


class DeFCNHead(nn.Module):
    """FPN levels (B, C_in, H_l, W_l) → per level class logits (B, C, H_l, W_l), distances (B, 4, H_l, W_l)
    in pixels, filter logits (B, 1, H_l, W_l).

    Args:
        num_classes: C.
        channels: FPN width (also the tower width).
        strides: level strides (distances are multiplied by them).
        num_convs: tower depth.
        prior_prob: initial foreground probability of ``cls_score``.
        filter_kernel, filter_tau, filter_norm: :class:`MaxFiltering3D` settings.
    """

    def __init__(self, num_classes: int, channels: int = 256, strides: Sequence[int] = (8, 16, 32, 64, 128),
                 num_convs: int = 4, prior_prob: float = 0.01, filter_kernel: int = 3, filter_tau: int = 2,
                 filter_norm: bool = True) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.strides = tuple(int(s) for s in strides)
        self.cls_subnet = _tower(channels, num_convs)
        self.bbox_subnet = _tower(channels, num_convs)
        self.cls_score = nn.Conv2d(channels, num_classes, 3, 1, 1)
        self.bbox_pred = nn.Conv2d(channels, 4, 3, 1, 1)
        self.max3d = MaxFiltering3D(channels, filter_kernel, filter_tau, filter_norm)
        self.filter = nn.Conv2d(channels, 1, 3, 1, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                normal_init(m, 0.01)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.cls_score.bias, -math.log((1 - prior_prob) / prior_prob))
        self.scales = nn.ModuleList(Scale(1.0, shape=(1,)) for _ in self.strides)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        cls_maps, reg_maps, bbox_feats = [], [], []
        for level, x in enumerate(feats):
            cls_maps.append(self.cls_score(self.cls_subnet(x)))
            bbox_feat = self.bbox_subnet(x)
            reg_maps.append(F.relu(self.scales[level](self.bbox_pred(bbox_feat))) * self.strides[level])
            bbox_feats.append(bbox_feat)
        filter_maps = [self.filter(f) for f in self.max3d(bbox_feats)]
        return cls_maps, reg_maps, filter_maps
