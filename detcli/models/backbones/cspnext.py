"""CSPNeXt, the backbone of RTMDet (MMDetection 3.x ``mmdet/models/backbones/cspnext.py``, arch P5).

``stem`` (three 3×3 ConvModules, the first with stride 2) → ``stage1`` … ``stage4``, each a 3×3 stride-2
ConvModule then a :class:`~detcli.models.backbones.csp_blocks.CSPLayer` with channel attention; the last
stage has an SPPBottleneck before its CSPLayer and no residuals. Outputs: stages 2, 3, 4 (strides 8, 16, 32).
Channels scale with ``widen_factor``, block counts with ``deepen_factor``, by the official formulas.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.models.backbones.csp_blocks import CSPLayer, SPPBottleneck
from detcli.models.convert import tensor_state_dict
from detcli.models.layers import ConvNormAct, kaiming_uniform_init

# P5 arch rows: (in, out, blocks, add_identity, use_spp) at widen = deepen = 1 (RTMDet-l)
ARCH_P5 = ((64, 128, 3, True, False), (128, 256, 6, True, False), (256, 512, 6, True, False),
           (512, 1024, 3, False, True))

# ImageNet checkpoints the official configs load (``init_cfg=Pretrained(prefix='backbone.')``), by widen factor:
# only RTMDet-tiny and -s start from ImageNet weights; mmengine caches downloads in the torch hub folder
IMAGENET_FILES = {0.375: "cspnext-tiny_imagenet_600e.pth", 0.5: "cspnext-s_imagenet_600e.pth"}


class CSPNeXt(nn.Module):
    """CSPNeXt P5.

    Args:
        deepen_factor: blocks per stage = max(round(n · deepen_factor), 1), n = 3, 6, 6, 3.
        widen_factor: channels = int(c · widen_factor); stem 32w/32w/64w with 32w = int(64 · w // 2).
        expand_ratio: CSPLayer mid / out.
        channel_attention: ChannelAttention in every stage's CSPLayer.
        act: activation (SiLU).

    Attributes:
        out_channels: channels of the C3, C4, C5 outputs (int(256w), int(512w), int(1024w)).

    forward: (B, 3, H, W) → (C3, C4, C5) of (B, out_channels[i], ⌈H/s⌉, ⌈W/s⌉), s = 8, 16, 32.
    """

    def __init__(self, deepen_factor: float = 1.0, widen_factor: float = 1.0, expand_ratio: float = 0.5,
                 channel_attention: bool = True, act: str = "SiLU") -> None:
        super().__init__()
        stem = int(ARCH_P5[0][0] * widen_factor // 2)
        self.stem = nn.Sequential(
            ConvNormAct(3, stem, 3, stride=2, act=act),
            ConvNormAct(stem, stem, 3, act=act),
            ConvNormAct(stem, int(ARCH_P5[0][0] * widen_factor), 3, act=act),
        )
        for i, (cin, cout, blocks, add_identity, use_spp) in enumerate(ARCH_P5):
            cin, cout = int(cin * widen_factor), int(cout * widen_factor)
            layers: list[nn.Module] = [ConvNormAct(cin, cout, 3, stride=2, act=act)]
            if use_spp:
                layers.append(SPPBottleneck(cout, cout, act=act))
            layers.append(CSPLayer(cout, cout, max(round(blocks * deepen_factor), 1), add_identity,
                                   channel_attention, expand_ratio, act=act))
            self.add_module(f"stage{i + 1}", nn.Sequential(*layers))
        self.widen_factor = widen_factor
        self.out_channels = tuple(int(row[1] * widen_factor) for row in ARCH_P5[1:])
        kaiming_uniform_init(self)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.stage1(self.stem(x))
        c3 = self.stage2(x)
        c4 = self.stage3(c3)
        return c3, c4, self.stage4(c4)


def load_imagenet_weights(backbone: CSPNeXt, weights: str) -> str:
    """Initialise ``backbone`` from a CSPNeXt ImageNet checkpoint under MMDetection key names (never downloads).

    The file's ``backbone.*`` tensors (in ``state_dict`` or at the top level; the classifier ``head.*`` is
    skipped) must cover the backbone exactly, shape for shape: a file of another width or depth is an error.

    Args:
        weights: ``"imagenet"``: the file the official config names for this width (RTMDet-tiny and -s only),
            looked up in ``torch.hub.get_dir()/checkpoints``; missing there, the backbone keeps its random init
            and the returned message says so. Any other string: the path of such a file (it must exist).

    Returns:
        A one-line message for the user describing what was loaded, or why nothing was.
    """
    if weights == "imagenet":
        name = IMAGENET_FILES.get(backbone.widen_factor)
        if name is None:
            return (f"no official ImageNet checkpoint for CSPNeXt widen_factor {backbone.widen_factor} (the official "
                    "RTMDet-m/l/x configs train from scratch); backbone initialised randomly")
        file = Path(torch.hub.get_dir()) / "checkpoints" / name
        if not file.is_file():
            return f"ImageNet weights not found at {file}; backbone initialised randomly"
    else:
        file = Path(weights).expanduser()
        if not file.is_file():
            raise DetcliError(f"backbone weights file not found: {file}")
    raw = torch.load(file, map_location="cpu", weights_only=True)
    state = tensor_state_dict(raw.get("state_dict", raw) if isinstance(raw, dict) else raw, str(file))
    state = {k.removeprefix("module.").removeprefix("backbone."): v
             for k, v in state.items() if k.removeprefix("module.").startswith("backbone.")}
    own = backbone.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    unexpected = [k for k in state if k not in own]
    if missing or wrong or unexpected:
        what = (f"{len(missing)} backbone tensors missing, e.g. backbone.{missing[0]}" if missing else
                f"shape mismatch at backbone.{wrong[0]}" if wrong else
                f"{len(unexpected)} tensors this backbone does not have, e.g. backbone.{unexpected[0]}")
        raise DetcliError(f"{file} is not a CSPNeXt checkpoint of widen_factor {backbone.widen_factor} under "
                          f"MMDetection key names (backbone.*): {what}")
    backbone.load_state_dict(state, strict=False)
    return f"loaded ImageNet weights for CSPNeXt (widen_factor {backbone.widen_factor}) from {file}"
