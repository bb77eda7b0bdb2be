"""RetinaNet head (Lin et al. 2017) as MMDetection 3.x's ``RetinaHead`` with its defaults.

Two towers of ``stacked_convs`` × [3×3 conv (with bias) + ReLU], no norm; then ``retina_cls`` 3×3 → A·C
and ``retina_reg`` 3×3 → A·4. One head is shared by all levels (no per-level scale). Init: every conv
weight ~ N(0, 0.01²), biases 0, except ``retina_cls`` bias = −log((1 − 0.01)/0.01) ≈ −4.595 (prior 0.01).
Submodule names equal MMDetection's state-dict keys (``cls_convs.i.conv``, ``retina_cls`` …).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from detcli.models.layers import ConvNormAct


class RetinaHead(nn.Module):
    """Per-level class logits and box deltas.

    Args:
        num_classes: C (sigmoid classes; no background channel).
        in_channels: channels of every FPN level.
        num_anchors: A anchors per location.
        feat_channels: tower width.
        stacked_convs: convs per tower.
        prior_prob: initial foreground probability encoded in the ``retina_cls`` bias.
    """

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 256,
        num_anchors: int = 9,
        feat_channels: int = 256,
        stacked_convs: int = 4,
        prior_prob: float = 0.01,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_anchors = num_anchors
        chans = [in_channels] + [feat_channels] * stacked_convs
        self.cls_convs = nn.ModuleList(ConvNormAct(i, o, 3, norm=None, act="ReLU") for i, o in zip(chans, chans[1:]))
        self.reg_convs = nn.ModuleList(ConvNormAct(i, o, 3, norm=None, act="ReLU") for i, o in zip(chans, chans[1:]))
        self.retina_cls = nn.Conv2d(chans[-1], num_anchors * num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(chans[-1], num_anchors * 4, 3, padding=1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - prior_prob) / prior_prob))

    def forward_single(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(B, in, H, W) → cls (B, A·C, H, W), reg (B, A·4, H, W)."""
        c = x
        for conv in self.cls_convs:
            c = conv(c)
        r = x
        for conv in self.reg_convs:
            r = conv(r)
        return self.retina_cls(c), self.retina_reg(r)

    def forward(self, feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """Apply the shared head to every level; returns (cls_scores, bbox_preds), one tensor per level."""
        cls_scores, bbox_preds = [], []
        for x in feats:
            c, r = self.forward_single(x)
            cls_scores.append(c)
            bbox_preds.append(r)
        return cls_scores, bbox_preds
