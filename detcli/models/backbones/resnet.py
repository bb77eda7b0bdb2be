"""ResNet-18/50 backbone (torchvision layers) behaving like MMDetection 3.x's ``ResNet`` (pytorch style).

* Layers and parameter names come from ``torchvision.models.resnet18/50`` (``conv1``, ``bn1``,
  ``layer1.0.conv1`` …), which are also MMDetection's names, so both checkpoints load key-for-key.
* ``frozen_stages=1``: the stem (conv1 + bn1) and layer1 get ``requires_grad=False`` and stay in eval mode.
* ``norm_eval=True``: every BatchNorm stays in eval mode during training (running stats frozen); the affine
  weights of the non-frozen stages are still trained (``norm_cfg=dict(type='BN', requires_grad=True)``).
* Random init as MMDetection without a checkpoint: Kaiming-normal fan_out convs, BN (1, 0), and the last BN
  of each residual block zeroed (``zero_init_residual=True``). ImageNet init comes from a *local*
  torchvision checkpoint only; nothing is ever downloaded.

Two options give the detectron2/cvpods ResNet of DeFCN (same layers, same parameter count):

* ``style="caffe"`` (``STRIDE_IN_1X1=True``, MSRA weights): a stage's stride sits in the first block's 1×1
  ``conv1`` instead of its 3×3 ``conv2``;
* ``norm="frozen_bn"``: ``torchvision.ops.FrozenBatchNorm2d`` (statistics and affine are buffers, as cvpods'
  ``FrozenBatchNorm2d``: y = (x − mean) · w / √(var + 1e-5) + b). The last norm of a block is then not
  zeroed (it could never leave 0).
"""
from __future__ import annotations

from pathlib import Path

from typing import Literal

import torch
import torchvision
from torch import Tensor, nn
from torchvision.ops import FrozenBatchNorm2d

# MMDetection's ``torchvision://resnet50`` resolves to the V1 file (mmengine ``hub/torchvision_0.12.json``);
# the V2 file is accepted as a fallback.
IMAGENET_FILES: dict[int, tuple[str, ...]] = {
    18: ("resnet18-f37072fd.pth",),
    50: ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}
# Caffe-style (STRIDE_IN_1X1) MSRA weights, detectron2's ``ImageNetPretrained/MSRA/R-50.pkl`` (DeFCN's config)
MSRA_FILES: dict[int, tuple[str, ...]] = {50: ("R-50.pkl",)}
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {18: (128, 256, 512), 50: (512, 1024, 2048)}


def find_imagenet_weights(depth: int, search_dirs: list[Path] | None = None, style: str = "pytorch") -> Path | None:
    """First existing ImageNet checkpoint for ``depth`` in ``search_dirs`` (default:
    ``torch.hub.get_dir()/checkpoints``): torchvision's file, or for ``style="caffe"`` the MSRA ``R-50.pkl``."""
    dirs = search_dirs if search_dirs is not None else [Path(torch.hub.get_dir()) / "checkpoints"]
    files = MSRA_FILES.get(depth, ()) if style == "caffe" else IMAGENET_FILES[depth]
    for d in dirs:
        for name in files:
            if (Path(d) / name).is_file():
                return Path(d) / name
    return None


class ResNet(nn.Module):
    """ResNet returning (C3, C4, C5) with strides (8, 16, 32).

    Args:
        depth: 18 or 50.
        frozen_stages: −1 freezes nothing, 0 the stem, k ≥ 1 the stem and layer1..layer_k.
        norm_eval: keep every BatchNorm in eval mode in ``train()``.
        style: "pytorch" (stride in the 3×3 conv) or "caffe" (stride in the first 1×1 conv; bottlenecks only).
        norm: "bn" (BatchNorm2d) or "frozen_bn" (FrozenBatchNorm2d, no parameters).
    Shapes: (B, 3, H, W) → [(B, c3, H/8, W/8), (B, c4, H/16, W/16), (B, c5, H/32, W/32)],
    (c3, c4, c5) = (128, 256, 512) for R18 and (512, 1024, 2048) for R50.
    """

    def __init__(
        self,
        depth: int = 50,
        frozen_stages: int = 1,
        norm_eval: bool = True,
        style: Literal["pytorch", "caffe"] = "pytorch",
        norm: Literal["bn", "frozen_bn"] = "bn",
    ) -> None:
        super().__init__()
        if depth not in IMAGENET_FILES:
            raise ValueError(f"ResNet depth must be 18 or 50, got {depth}")
        if style == "caffe" and depth == 18:
            raise ValueError("style='caffe' moves the stride of a bottleneck; ResNet-18 has none")
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.style, self.norm = style, norm
        self.out_channels = STAGE_CHANNELS[depth]
        builder = torchvision.models.resnet18 if depth == 18 else torchvision.models.resnet50
        frozen = norm == "frozen_bn"
        net = builder(weights=None, zero_init_residual=not frozen,
                      norm_layer=FrozenBatchNorm2d if frozen else None)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        if style == "caffe":
            for layer in (self.layer2, self.layer3, self.layer4):
                first = layer[0]
                first.conv1.stride, first.conv2.stride = first.conv2.stride, (1, 1)
        self._freeze_stages()

    def _frozen_modules(self) -> list[nn.Module]:
        mods: list[nn.Module] = []
        if self.frozen_stages >= 0:
            mods += [self.conv1, self.bn1]
        mods += [getattr(self, f"layer{i}") for i in range(1, self.frozen_stages + 1)]
        return mods

    def _freeze_stages(self) -> None:
        for m in self._frozen_modules():
            m.eval()
            for p in m.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "ResNet":
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    m.eval()
        return self

    def load_imagenet(self, weights: str | Path | None) -> str | None:
        """Initialise from an ImageNet checkpoint: torchvision's (pytorch style) or detectron2's MSRA ``.pkl``
        (caffe style, Caffe2 blob names; see :mod:`detcli.models.cvpods_keys`).

        Args:
            weights: ``"imagenet"`` (search ``torch.hub.get_dir()/checkpoints`` for the style's file)
                or a path to such a file.
        Returns:
            None on success, else a message for the caller to print (the backbone stays randomly initialised).
        """
        if weights is None:
            return None
        name = f"resnet{self.depth}"
        files = MSRA_FILES[self.depth] if self.style == "caffe" else IMAGENET_FILES[self.depth]
        if str(weights).lower() == "imagenet":
            path = find_imagenet_weights(self.depth, style=self.style)
            where = Path(torch.hub.get_dir()) / "checkpoints" / files[0]
        else:
            path = Path(weights).expanduser()
            where = path
            path = path if path.is_file() else None
        if path is None:
            style = " (caffe style, MSRA)" if self.style == "caffe" else ""
            return f"ImageNet weights for {name}{style} not found at {where}; backbone initialised randomly"
        if path.suffix == ".pkl":
            from detcli.models.cvpods_keys import msra_resnet_state_dict, read_msra_pickle

            state = msra_resnet_state_dict(read_msra_pickle(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        if self.norm == "frozen_bn":  # FrozenBatchNorm2d keeps no batch counter
            state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
        missing, unexpected = self.load_state_dict(state, strict=False)
        if missing or unexpected:
            from detcli.errors import DetcliError

            raise DetcliError(f"{path}: not {name} {self.style}-style ImageNet weights ({len(missing)} missing, e.g. "
                              f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})")
        return None

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]
