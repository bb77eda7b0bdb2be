"""GhostNet (Han et al., "GhostNet: More Features from Cheap Operations", CVPR 2020) as a detection backbone, in the
form NanoDet ships it (RangiLyu/nanodet ``nanodet/model/backbone/ghostnet.py``): no classifier, the outputs of
chosen stages (default 4, 6, 9: strides 8, 16, 32), the activation configurable, Squeeze-and-Excitation with ReLU.

Also the paper's two building blocks, which NanoDet-Plus' GhostPAN reuses (``detcli.models.necks.ghost_blocks``):
the Ghost module (a few "intrinsic" maps from a 1×1 conv, as many "ghost" maps from a cheap depthwise conv on them)
and the Ghost bottleneck (two Ghost modules, a stride-2 depthwise conv between them where the stage downsamples,
optional SE, a shortcut).

Module names are the official ones, which are also those of Huawei's ImageNet checkpoint
(``state_dict_73.98.pth``; its classifier ``conv_head`` / ``classifier`` is skipped): ``conv_stem``, ``bn1``,
``blocks.<stage>.<block>.{ghost1, conv_dw, bn_dw, se.conv_reduce, se.conv_expand, ghost2, shortcut.0..3}``, Ghost
modules ``primary_conv.0`` (conv) / ``.1`` (BN) and ``cheap_operation.0`` / ``.1``, the last stage
``blocks.9.0.{conv, bn1}``.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.models.layers import DepthwiseConv2d, make_act

# Huawei's GhostNet 1.0× ImageNet checkpoint (top-1 73.98 %), the file the official NanoDet code downloads from
# github.com/huawei-noah/CV-Backbones (ghostnet_pytorch/models/); never downloaded here. No other width has one.
IMAGENET_FILE = "state_dict_73.98.pth"
IMAGENET_WIDTH = 1.0
SE_RATIO = 0.25


class BlockSpec(NamedTuple):
    """One Ghost bottleneck of the paper's Table 1 (GhostNet 1.0×)."""

    kernel: int  # depthwise kernel (the stride-2 conv and the shortcut's)
    expansion: int  # channels between the two Ghost modules ("#exp")
    out: int
    se: bool
    stride: int


# Table 1 of the paper, grouped into the ten stages NanoDet indexes (``out_stages``); stage 9 is the final
# 1×1 conv 160 → 960. Output stride of each stage: 2, 4, 4, 8, 8, 16, 16, 32, 32, 32.
STAGES: tuple[tuple[BlockSpec, ...], ...] = (
    (BlockSpec(3, 16, 16, False, 1),),
    (BlockSpec(3, 48, 24, False, 2),),
    (BlockSpec(3, 72, 24, False, 1),),
    (BlockSpec(5, 72, 40, True, 2),),
    (BlockSpec(5, 120, 40, True, 1),),
    (BlockSpec(3, 240, 80, False, 2),),
    (BlockSpec(3, 200, 80, False, 1), BlockSpec(3, 184, 80, False, 1), BlockSpec(3, 184, 80, False, 1),
     BlockSpec(3, 480, 112, True, 1), BlockSpec(3, 672, 112, True, 1)),
    (BlockSpec(5, 672, 160, True, 2),),
    (BlockSpec(5, 960, 160, False, 1), BlockSpec(5, 960, 160, True, 1), BlockSpec(5, 960, 160, False, 1),
     BlockSpec(5, 960, 160, True, 1)),
)
STAGE_STRIDES = (2, 4, 4, 8, 8, 16, 16, 32, 32, 32)
NUM_STAGES = len(STAGES) + 1


def make_divisible(value: float, divisor: int = 4) -> int:
    """``value`` rounded to the nearest multiple of ``divisor`` (halves up), at least ``divisor``, and never
    more than 10 % below ``value`` (the channel rounding of the MobileNet family, which GhostNet uses)."""
    rounded = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded


class SqueezeExcite(nn.Module):
    """Channel attention: ``x · hard_sigmoid(conv_expand(ReLU(conv_reduce(mean over H, W of x))))``.

    ``conv_reduce``: 1×1 C → make_divisible(C · se_ratio), with bias; ``conv_expand`` back to C, with bias. The
    activation is ReLU whatever the network's (the official GhostNet builds its SE without passing it on).
    Shapes: (B, C, H, W) → (B, C, H, W).
    """

    def __init__(self, channels: int, se_ratio: float = SE_RATIO) -> None:
        super().__init__()
        reduced = make_divisible(channels * se_ratio)
        self.conv_reduce = nn.Conv2d(channels, reduced, 1)
        self.act1 = nn.ReLU(inplace=True)
        self.conv_expand = nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.conv_expand(self.act1(self.conv_reduce(x.mean((2, 3), keepdim=True))))
        return x * F.hardsigmoid(gate)


class GhostModule(nn.Module):
    """Half the outputs from a 1×1 conv ("primary"), the other half from a cheap 3×3 depthwise conv on them.

    primary: 1×1 in→⌈out/2⌉ + BN (+ act); cheap: dw3×3 + BN (+ act); output concat → (B, 2⌈out/2⌉, H, W)
    (= out for the even widths of GhostNet and GhostPAN). ``act=None`` gives the linear variant used as ``ghost2``.
    """

    def __init__(self, in_channels: int, out_channels: int, act: str | None = "LeakyReLU", dw_size: int = 3) -> None:
        super().__init__()
        init_channels = math.ceil(out_channels / 2)
        self.primary_conv = nn.Sequential(
            nn.Conv2d(in_channels, init_channels, 1, bias=False),
            nn.BatchNorm2d(init_channels),
            make_act(act),
        )
        self.cheap_operation = nn.Sequential(
            DepthwiseConv2d(init_channels, dw_size),
            nn.BatchNorm2d(init_channels),
            make_act(act),
        )

    def forward(self, x: Tensor) -> Tensor:
        x1 = self.primary_conv(x)
        return torch.cat([x1, self.cheap_operation(x1)], dim=1)


class GhostBottleneck(nn.Module):
    """ghost1 (with act) → [stride > 1: dw k×k stride s + BN, no act] → [SE] → ghost2 (linear), plus the shortcut;
    no activation after the sum.

    Shortcut: identity when in == out and stride 1, else dw k×k stride s + BN → 1×1 + BN (k = ``dw_kernel_size``,
    5 in GhostPAN). Shapes: (B, in, H, W) → (B, out, ⌈H/stride⌉, ⌈W/stride⌉).
    """

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, dw_kernel_size: int = 3,
                 act: str = "LeakyReLU", stride: int = 1, se_ratio: float = 0.0) -> None:
        super().__init__()
        self.stride = stride
        pad = (dw_kernel_size - 1) // 2
        self.ghost1 = GhostModule(in_channels, mid_channels, act=act)
        if stride > 1:
            self.conv_dw = DepthwiseConv2d(mid_channels, dw_kernel_size, stride, pad)
            self.bn_dw = nn.BatchNorm2d(mid_channels)
        self.se = SqueezeExcite(mid_channels, se_ratio) if se_ratio > 0 else None
        self.ghost2 = GhostModule(mid_channels, out_channels, act=None)
        if in_channels == out_channels and stride == 1:
            self.shortcut = nn.Sequential()
        else:
            self.shortcut = nn.Sequential(
                DepthwiseConv2d(in_channels, dw_kernel_size, stride, pad),
                nn.BatchNorm2d(in_channels),
                nn.Conv2d(in_channels, out_channels, 1, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.ghost1(x)
        if self.stride > 1:
            out = self.bn_dw(self.conv_dw(out))
        if self.se is not None:
            out = self.se(out)
        out = self.ghost2(out)
        out += self.shortcut(x)  # in place: out is a fresh concat result
        return out


class FinalConv(nn.Module):
    """GhostNet's last stage (9): 1×1 conv + BN + act, named ``conv`` / ``bn1`` / ``act1`` as in the checkpoints."""

    def __init__(self, in_channels: int, out_channels: int, act: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.act1 = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.act1(self.bn1(self.conv(x)))


class GhostNet(nn.Module):
    """conv_stem (3×3 s2) + BN + act → ten stages (``blocks``): the Ghost bottlenecks of :data:`STAGES`, then the
    final 1×1 conv to make_divisible(960 · width). Every width is ``make_divisible(c · width_mult, 4)``.

    Args:
        width_mult: channel multiplier (1.0: the paper's GhostNet 1.0×, the one with ImageNet weights).
        out_stages: the stages whose outputs are returned (0..9); NanoDet's default (4, 6, 9) gives strides 8,
            16, 32. The stages after the last one do not run (their parameters stay in the state dict, as
            the official module has them).
        act: activation of the stem, the Ghost modules and the final conv (NanoDet-Plus: LeakyReLU, slope 0.1;
            the paper and the ImageNet weights: ReLU). SE always uses ReLU.

    forward: (B, 3, H, W) → tuple of (B, C_s, H/stride_s, W/stride_s) for s in out_stages; 1.0× at 320² with the
    default stages: 40×40×40, 112×20×20, 960×10×10.
    """

    def __init__(self, width_mult: float = 1.0, out_stages: tuple[int, ...] = (4, 6, 9),
                 act: str = "LeakyReLU") -> None:
        super().__init__()
        out_stages = tuple(int(s) for s in out_stages)
        increasing = list(out_stages) == sorted(set(out_stages))
        if not out_stages or not increasing or not set(out_stages) <= set(range(NUM_STAGES)):
            raise ValueError(f"out_stages must be increasing stages of 0..{NUM_STAGES - 1}, got {out_stages}")
        self.width_mult = float(width_mult)
        self.out_stages = out_stages
        in_ch = make_divisible(16 * width_mult)
        self.conv_stem = nn.Conv2d(3, in_ch, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.act1 = make_act(act)
        stages, channels = [], []
        for specs in STAGES:
            blocks = []
            for spec in specs:
                out_ch = make_divisible(spec.out * width_mult)
                blocks.append(GhostBottleneck(in_ch, make_divisible(spec.expansion * width_mult), out_ch, spec.kernel,
                                              act, stride=spec.stride, se_ratio=SE_RATIO if spec.se else 0.0))
                in_ch = out_ch
            stages.append(nn.Sequential(*blocks))
            channels.append(in_ch)
        final = make_divisible(STAGES[-1][-1].expansion * width_mult)
        stages.append(nn.Sequential(FinalConv(in_ch, final, act)))
        channels.append(final)
        self.blocks = nn.Sequential(*stages)
        self.stage_channels = tuple(channels)
        self.out_channels = tuple(channels[s] for s in out_stages)
        self.init_weights()

    def init_weights(self) -> None:
        """Random init of the official code: conv_stem ~ N(0, 0.01²), every other conv ~ N(0, (1/fan_in_per_group)²)
        with bias 0, BN weight 1, bias 1e-4, running mean 0."""
        for name, m in self.named_modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01 if name == "conv_stem" else 1.0 / m.weight.shape[1])
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)
                nn.init.zeros_(m.running_mean)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.act1(self.bn1(self.conv_stem(x)))
        outs = []
        for i, stage in enumerate(self.blocks[: self.out_stages[-1] + 1]):
            x = stage(x)
            if i in self.out_stages:
                outs.append(x)
        return tuple(outs)


def find_imagenet_weights(path: str | Path | None = None) -> Path:
    """Where the GhostNet ImageNet file is expected: ``path`` if given, else the torch hub cache (where
    ``torch.hub.load_state_dict_from_url`` of the official code leaves it)."""
    if path is not None:
        return Path(path).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILE


def load_imagenet_weights(backbone: GhostNet, path: str | Path | None = None) -> str:
    """Initialise ``backbone`` from a local GhostNet ImageNet checkpoint under the official key names (never
    downloads).

    ``path=None`` looks for :data:`IMAGENET_FILE` in ``torch.hub.get_dir()/checkpoints``; a missing file there, or a
    width without ImageNet weights (only 1.0× has them), is not an error: the backbone keeps its random init and
    the returned message says so. A missing explicit ``path`` raises :class:`DetcliError`, and so does a file whose
    tensors do not cover the backbone shape for shape. The classifier (``conv_head``, ``classifier``) is skipped,
    as the official ``load_state_dict(strict=False)`` does. Note the weights were trained with ReLU on RGB input.

    Returns:
        A one-line message for the user describing what was loaded, or why nothing was.
    """
    if path is None and backbone.width_mult != IMAGENET_WIDTH:
        return (f"no ImageNet checkpoint for GhostNet width {backbone.width_mult:g}× (Huawei publishes 1.0× only); "
                "backbone initialised randomly")
    file = find_imagenet_weights(path)
    if not file.is_file():
        if path is not None:
            raise DetcliError(f"backbone weights file not found: {file}")
        return f"ImageNet weights not found at {file}; backbone initialised randomly"
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise DetcliError(f"{file} holds no state dict (a {type(state).__name__})")
    state = {str(k).removeprefix("module."): v for k, v in state.items()}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and tuple(getattr(state[k], "shape", ())) != tuple(own[k].shape)]
    if missing or wrong:
        what = (f"shape mismatch at {wrong[0]}" if wrong else
                f"{len(missing)} backbone tensors missing, e.g. {missing[0]}")
        raise DetcliError(f"{file} is not a GhostNet {backbone.width_mult:g}× checkpoint under the official key "
                          f"names (conv_stem, bn1, blocks.*): {what}")
    backbone.load_state_dict({k: state[k] for k in own if k in state}, strict=False)
    return f"loaded ImageNet weights for GhostNet {backbone.width_mult:g}× from {file}"
