"""Conv building blocks shared by the detectors (conv → norm → act, depthwise convs, depthwise-separable convs,
Scale).

Attribute names follow the OpenMMLab/NanoDet ``ConvModule`` convention (``conv``, ``bn``/``gn``, ``act``;
NanoDet ``depthwise``/``dwnorm``/``pointwise``/``pwnorm``; mmcv ``depthwise_conv``/``pointwise_conv``) so that
official checkpoints load key-for-key.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "ReLU": nn.ReLU,
    "ReLU6": nn.ReLU6,
    "SiLU": nn.SiLU,
    "Hardswish": nn.Hardswish,
    "HardSwish": nn.Hardswish,
    "ELU": nn.ELU,
    "SELU": nn.SELU,
}


def make_act(name: str | None) -> nn.Module:
    """Activation by name; ``"LeakyReLU"`` has slope 0.1 as in NanoDet (not PyTorch's 0.01); ``None`` → Identity."""
    if name is None:
        return nn.Identity()
    if name == "LeakyReLU":
        return nn.LeakyReLU(negative_slope=0.1, inplace=True)
    if name == "GELU":
        return nn.GELU()
    if name == "PReLU":
        return nn.PReLU()
    if name not in _ACTIVATIONS:
        known = ", ".join(["LeakyReLU", "GELU", "PReLU", *_ACTIVATIONS])
        raise ValueError(f"unknown activation {name!r}; expected one of {known}")
    return _ACTIVATIONS[name](inplace=True)


def make_norm(norm: str | None, channels: int, num_groups: int = 32) -> nn.Module | None:
    """``"BN"`` → BatchNorm2d (eps 1e-5, momentum 0.1), ``"GN"`` → GroupNorm(num_groups), ``None`` → no norm."""
    if norm is None:
        return None
    if norm == "BN":
        return nn.BatchNorm2d(channels)
    if norm == "GN":
        return nn.GroupNorm(num_groups, channels)
    raise ValueError(f"unknown norm {norm!r}; expected 'BN', 'GN' or None")


def _nonlinearity(act: str | None) -> str:
    return "leaky_relu" if act == "LeakyReLU" else "relu"


def kaiming_init(conv: nn.Conv2d, act: str | None) -> None:
    """MSRA init of ConvModule: normal, mode fan_out, ``a=0`` (so the leaky_relu gain equals the ReLU gain)."""
    nn.init.kaiming_normal_(conv.weight, a=0, mode="fan_out", nonlinearity=_nonlinearity(act))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


def normal_init(conv: nn.Conv2d, std: float = 0.01, bias: float = 0.0) -> None:
    """weight ~ N(0, std²), bias = constant."""
    nn.init.normal_(conv.weight, 0.0, std)
    if conv.bias is not None:
        nn.init.constant_(conv.bias, bias)


def kaiming_uniform_init(module: nn.Module) -> None:
    """Every Conv2d in ``module``: Kaiming uniform, ``a=√5``, fan_in, leaky_relu gain (PyTorch's default conv
    weight init), bias 0 — the ``init_cfg`` of MMDetection's CSPNeXt and CSPNeXtPAFPN."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), mode="fan_in", nonlinearity="leaky_relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def norm_init(norm: nn.Module | None) -> None:
    if norm is not None:
        nn.init.ones_(norm.weight)
        nn.init.zeros_(norm.bias)


class DepthwiseConv2d(nn.Conv2d):
    """A depthwise k×k conv (``groups`` = channels, no bias by default) that runs in float32 under CPU autocast.

    oneDNN's bfloat16 kernels for depthwise convs are much slower than its float32 ones on CPU, in the backward
    above all: on a 2-core AMX Xeon the weight gradient of a 5×5 depthwise conv on (8, 192, 40, 40), channels
    last, takes 80 ms in bf16 and 17.5 ms in fp32, and a stride-2 input gradient 31 ms vs 0.8 ms. So under CPU
    autocast this conv casts its input up and runs in fp32 (its output stays fp32; the next dense conv casts
    down again): the NanoDet-Plus-m training step with ``--amp`` on CPU goes 2.30 → 1.74 s (batch 8 at 320,
    ``benchmarks/speed/cpu_amp_step.py``; fp32: 2.84 s). Elsewhere (no autocast, CUDA) it is a plain ``nn.Conv2d``: same
    parameters, same state-dict keys.

    Shapes: (B, C, H, W) → (B, C, H', W').
    """

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int | None = None,
                 bias: bool = False) -> None:
        padding = kernel_size // 2 if padding is None else padding
        super().__init__(channels, channels, kernel_size, stride, padding, groups=channels, bias=bias)

    def _conv_forward(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        if x.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return super()._conv_forward(x.float(), weight, bias)
        return super()._conv_forward(x, weight, bias)


class ConvNormAct(nn.Module):
    """k×k conv → BN/GN → activation. The conv has a bias only when there is no norm.

    The norm submodule is named ``bn`` or ``gn`` (ConvModule convention). Init: kaiming fan_out, norm (1, 0).
    Shapes: (B, in, H, W) → (B, out, ⌈H/stride⌉, ⌈W/stride⌉) with the default padding k//2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        groups: int = 1,
        norm: str | None = "BN",
        act: str | None = "ReLU",
        num_groups: int = 32,
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        if groups > 1 and groups == in_channels == out_channels:
            self.conv: nn.Conv2d = DepthwiseConv2d(in_channels, kernel_size, stride, padding, bias=norm is None)
        else:
            self.conv = nn.Conv2d(
                in_channels, out_channels, kernel_size, stride, padding, groups=groups, bias=norm is None
            )
        self.norm_name = {"BN": "bn", "GN": "gn"}.get(norm) if norm else None
        if self.norm_name:
            self.add_module(self.norm_name, make_norm(norm, out_channels, num_groups))
        self.act = make_act(act)
        kaiming_init(self.conv, act)
        norm_init(self.norm)

    @property
    def norm(self) -> nn.Module | None:
        return getattr(self, self.norm_name) if self.norm_name else None

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv(x)
        if self.norm_name:
            x = self.norm(x)
        return self.act(x)


class DepthwiseConvModule(nn.Module):
    """NanoDet's depthwise-separable conv: dw k×k → norm → act → pw 1×1 → norm → act (no conv biases).

    Submodules ``depthwise``, ``dwnorm``, ``pointwise``, ``pwnorm``, ``act`` (official key names).
    Shapes: (B, in, H, W) → (B, out, ⌈H/stride⌉, ⌈W/stride⌉) with the default padding k//2.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | None = None,
        norm: str = "BN",
        act: str | None = "LeakyReLU",
    ) -> None:
        super().__init__()
        padding = kernel_size // 2 if padding is None else padding
        self.depthwise = DepthwiseConv2d(in_channels, kernel_size, stride, padding)
        self.dwnorm = make_norm(norm, in_channels)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.pwnorm = make_norm(norm, out_channels)
        self.act = make_act(act)
        kaiming_init(self.depthwise, act)
        kaiming_init(self.pointwise, act)
        norm_init(self.dwnorm)
        norm_init(self.pwnorm)

    def forward(self, x: Tensor) -> Tensor:
        x = self.act(self.dwnorm(self.depthwise(x)))
        return self.act(self.pwnorm(self.pointwise(x)))


class DepthwiseSeparableConvModule(nn.Module):
    """mmcv's depthwise-separable conv: ``depthwise_conv`` (dw k×k ConvNormAct) → ``pointwise_conv`` (1×1
    ConvNormAct), each with its own norm and activation (no conv biases).

    Unlike :class:`DepthwiseConvModule` (NanoDet's, flat key names), the two halves are whole ConvModules,
    so the keys are ``depthwise_conv.conv.weight``, ``depthwise_conv.bn.*``, ``pointwise_conv.conv.weight``, …
    Shapes: (B, in, H, W) → (B, out, ⌈H/stride⌉, ⌈W/stride⌉) with the default padding k//2.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int | None = None, norm: str = "BN", act: str | None = "SiLU") -> None:
        super().__init__()
        self.depthwise_conv = ConvNormAct(in_channels, in_channels, kernel_size, stride, padding,
                                          groups=in_channels, norm=norm, act=act)
        self.pointwise_conv = ConvNormAct(in_channels, out_channels, 1, norm=norm, act=act)

    def forward(self, x: Tensor) -> Tensor:
        return self.pointwise_conv(self.depthwise_conv(x))


class Scale(nn.Module):
    """A learnable scalar multiplier (``scale`` parameter of ``shape``: () as mmcv's, (1,) as cvpods')."""

    def __init__(self, init: float = 1.0, shape: tuple[int, ...] = ()) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.full(shape, init, dtype=torch.float32))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale
