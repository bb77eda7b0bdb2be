"""ShuffleNetV2 backbone as configured in NanoDet-Plus (Ma et al., 2018; RangiLyu/nanodet
``nanodet/model/backbone/shufflenetv2.py``): LeakyReLU(0.1), no conv5, outputs C3/C4/C5.

Module names equal torchvision's ``ShuffleNetV2`` (``conv1``, ``stage2..4``, ``branch1``/``branch2``
Sequentials), so torchvision ImageNet weights load key-for-key (``conv5``/``fc`` are skipped).
torchvision's own ``InvertedResidual`` hard-codes ReLU, hence the block below.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.models.layers import DepthwiseConv2d, make_act

STAGE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "0.5x": (24, 48, 96, 192),
    "1.0x": (24, 116, 232, 464),
    "1.5x": (24, 176, 352, 704),
    "2.0x": (24, 244, 488, 976),
}
STAGE_REPEATS = (4, 8, 4)

# torchvision ImageNet checkpoints (file names of download.pytorch.org/models); never downloaded here.
IMAGENET_FILES: dict[str, str] = {
    "0.5x": "shufflenetv2_x0.5-f707e7126e.pth",
    "1.0x": "shufflenetv2_x1-5666bf0f80.pth",
    "1.5x": "shufflenetv2_x1_5-3c479a10.pth",
    "2.0x": "shufflenetv2_x2_0-8be3c8ee.pth",
}


def _dw3x3(channels: int, stride: int) -> nn.Conv2d:
    return DepthwiseConv2d(channels, 3, stride)


def _pw(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 1, bias=False)


class ShuffleV2Block(nn.Module):
    """ShuffleNetV2 unit. stride 1: split channels, transform one half; stride 2: two branches, both downsample.

    branch1 (stride 2 only): dw3×3 s2 → BN → pw → BN → act.
    branch2: pw → BN → act → dw3×3 → BN → pw → BN → act. No activation after the dw convs.
    Output = channel_shuffle(concat(branch1 or identity half, branch2), 2), see :func:`concat_shuffle`.
    Shapes: (B, in, H, W) → (B, out, H/stride, W/stride).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, act: str = "LeakyReLU") -> None:
        super().__init__()
        self.stride = stride
        half = out_channels // 2
        if stride == 1 and in_channels != 2 * half:
            raise ValueError(f"stride-1 block needs in_channels == out_channels, got {in_channels} → {out_channels}")
        if stride > 1:
            self.branch1 = nn.Sequential(
                _dw3x3(in_channels, stride), nn.BatchNorm2d(in_channels),
                _pw(in_channels, half), nn.BatchNorm2d(half), make_act(act),
            )
        else:
            self.branch1 = nn.Sequential()
        self.branch2 = nn.Sequential(
            _pw(in_channels if stride > 1 else half, half), nn.BatchNorm2d(half), make_act(act),
            _dw3x3(half, stride), nn.BatchNorm2d(half),
            _pw(half, half), nn.BatchNorm2d(half), make_act(act),
        )

    def forward(self, x: Tensor) -> Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            return concat_shuffle(x1, self.branch2(x2))
        return concat_shuffle(self.branch1(x), self.branch2(x))


def concat_shuffle(a: Tensor, b: Tensor) -> Tensor:
    """``channel_shuffle(torch.cat((a, b), dim=1), groups=2)`` in one copy: output channel 2i is ``a``'s
    channel i, 2i+1 is ``b``'s. (B, C, H, W) twice → (B, 2C, H, W), contiguous whatever the inputs' layout
    (one copy instead of torchvision's two: ~2.5× faster on CPU for NCHW maps).
    """
    return torch.stack((a, b), dim=2).flatten(1, 2)


class ShuffleNetV2(nn.Module):
    """conv1 (3×3 s2) → maxpool (3×3 s2) → stage2/3/4 (repeats 4/8/4, first block stride 2).

    Args:
        width: "0.5x" | "1.0x" | "1.5x" | "2.0x".
        out_stages: subset of (2, 3, 4); stage s has stride 2**(s+1).
        act: activation name (NanoDet-Plus: LeakyReLU, slope 0.1).

    forward: (B, 3, H, W) → tuple of (B, C_s, H/2**(s+1), W/2**(s+1)) for s in out_stages;
    1.0x at 320²: 116×40×40, 232×20×20, 464×10×10.
    """

    def __init__(self, width: str = "1.0x", out_stages: tuple[int, ...] = (2, 3, 4), act: str = "LeakyReLU") -> None:
        super().__init__()
        if width not in STAGE_CHANNELS:
            raise ValueError(f"unknown ShuffleNetV2 width {width!r}; expected one of {list(STAGE_CHANNELS)}")
        if not set(out_stages) <= {2, 3, 4}:
            raise ValueError(f"out_stages must be a subset of (2, 3, 4), got {out_stages}")
        self.width = width
        self.out_stages = tuple(out_stages)
        channels = STAGE_CHANNELS[width]
        self.out_channels = tuple(channels[s - 1] for s in self.out_stages)
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, channels[0], 3, 2, 1, bias=False), nn.BatchNorm2d(channels[0]), make_act(act)
        )
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = channels[0]
        for stage, repeats, out_ch in zip((2, 3, 4), STAGE_REPEATS, channels[1:]):
            blocks = [ShuffleV2Block(in_ch, out_ch, 2, act)]
            blocks += [ShuffleV2Block(out_ch, out_ch, 1, act) for _ in range(repeats - 1)]
            setattr(self, f"stage{stage}", nn.Sequential(*blocks))
            in_ch = out_ch
        self.init_weights()

    def init_weights(self) -> None:
        """Random init of the official code: conv ~ N(0, (1/fan_in_per_group)²), BN weight 1, bias 1e-4."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 1.0 / m.weight.shape[1])
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.constant_(m.bias, 1e-4)
                nn.init.zeros_(m.running_mean)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        x = self.maxpool(self.conv1(x))
        outs = []
        for stage in (2, 3, 4):
            x = getattr(self, f"stage{stage}")(x)
            if stage in self.out_stages:
                outs.append(x)
        return tuple(outs)


def find_imagenet_weights(width: str, path: str | Path | None = None) -> Path:
    """Where the torchvision ImageNet file for ``width`` is expected: ``path`` if given, else the torch hub cache."""
    if path is not None:
        return Path(path).expanduser()
    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[width]


def load_imagenet_weights(backbone: ShuffleNetV2, path: str | Path | None = None) -> str:
    """Initialise ``backbone`` from a local torchvision ShuffleNetV2 ImageNet checkpoint (never downloads).

    ``path=None`` looks in ``torch.hub.get_dir()/checkpoints``; a missing file there is not an error: the
    backbone keeps its random init and the returned message says so. A missing explicit ``path`` raises.
    Keys absent from the backbone (torchvision's ``conv5``, ``fc``) are skipped, as the official
    ``load_state_dict(strict=False)`` does. Note the weights were trained with ReLU and RGB input.

    Returns:
        A one-line message for the user describing what was loaded.
    """
    file = find_imagenet_weights(backbone.width, path)
    if not file.is_file():
        if path is not None:
            raise DetcliError(f"backbone weights file not found: {file}")
        return f"ImageNet weights not found at {file}; backbone initialised randomly"
    state = torch.load(file, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = backbone.state_dict()
    used = {k: v for k, v in state.items() if k in own}
    bad = [k for k, v in used.items() if v.shape != own[k].shape]
    if bad or not used:
        raise DetcliError(
            f"{file} is not a ShuffleNetV2 {backbone.width} checkpoint "
            f"({'shape mismatch at ' + bad[0] if bad else 'no matching keys'})"
        )
    backbone.load_state_dict(used, strict=False)
    missing = [k for k in own if k not in used and not k.endswith("num_batches_tracked")]
    note = f" ({len(missing)} backbone tensors not in the file kept their random init)" if missing else ""
    return f"loaded ImageNet weights for ShuffleNetV2 {backbone.width} from {file}{note}"
