"""ResNet-18/50 backbone (torchvision layers) behaving like MMDetection 3.x's ``ResNet`` (pytorch style).

* Layers and parameter names come from ``torchvision.models.resnet18/50`` (``conv1``, ``bn1``,
  ``layer1.0.conv1`` …), which are also MMDetection's names, so both checkpoints load key-for-key.
* ``frozen_stages=1``: the stem (conv1 + bn1) and layer1 get ``requires_grad=False`` and stay in eval mode.
* ``norm_eval=True``: every BatchNorm stays in eval mode during training (running stats frozen); the affine
  weights of the non-frozen stages are still trained (``norm_cfg=dict(type='BN', requires_grad=True)``).
* Random init as MMDetection without a checkpoint: Kaiming-normal fan_out convs, BN (1, 0), and the last BN
  of each residual block zeroed (``zero_init_residual=True``). ImageNet init comes from a *local*
  torchvision checkpoint only; nothing is ever downloaded.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torchvision
from torch import Tensor, nn

# MMDetection's ``torchvision://resnet50`` resolves to the V1 file (mmengine ``hub/torchvision_0.12.json``);
# the V2 file is accepted as a fallback.
IMAGENET_FILES: dict[int, tuple[str, ...]] = {
    18: ("resnet18-f37072fd.pth",),
    50: ("resnet50-0676ba61.pth", "resnet50-11ad3fa6.pth"),
}
STAGE_CHANNELS: dict[int, tuple[int, int, int]] = {18: (128, 256, 512), 50: (512, 1024, 2048)}


def find_imagenet_weights(depth: int, search_dirs: list[Path] | None = None) -> Path | None:
    """First existing torchvision ImageNet checkpoint for ``depth`` in ``search_dirs``
    (default: ``torch.hub.get_dir()/checkpoints``), or None."""
    dirs = search_dirs if search_dirs is not None else [Path(torch.hub.get_dir()) / "checkpoints"]
    for d in dirs:
        for name in IMAGENET_FILES[depth]:
            if (Path(d) / name).is_file():
                return Path(d) / name
    return None


class ResNet(nn.Module):
    """ResNet returning (C3, C4, C5) with strides (8, 16, 32).

    Args:
        depth: 18 or 50.
        frozen_stages: −1 freezes nothing, 0 the stem, k ≥ 1 the stem and layer1..layer_k.
        norm_eval: keep every BatchNorm in eval mode in ``train()``.
    Shapes: (B, 3, H, W) → [(B, c3, H/8, W/8), (B, c4, H/16, W/16), (B, c5, H/32, W/32)],
    (c3, c4, c5) = (128, 256, 512) for R18 and (512, 1024, 2048) for R50.
    """

    def __init__(self, depth: int = 50, frozen_stages: int = 1, norm_eval: bool = True) -> None:
        super().__init__()
        if depth not in IMAGENET_FILES:
            raise ValueError(f"ResNet depth must be 18 or 50, got {depth}")
        self.depth = depth
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        self.out_channels = STAGE_CHANNELS[depth]
        builder = torchvision.models.resnet18 if depth == 18 else torchvision.models.resnet50
        net = builder(weights=None, zero_init_residual=True)
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
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
        """Initialise from a torchvision ImageNet checkpoint.

        Args:
            weights: ``"imagenet"`` (search ``torch.hub.get_dir()/checkpoints`` for the torchvision file)
                or a path to such a file.
        Returns:
            None on success, else a message for the caller to print (the backbone stays randomly initialised).
        """
        if weights is None:
            return None
        name = f"resnet{self.depth}"
        if str(weights).lower() == "imagenet":
            path = find_imagenet_weights(self.depth)
            where = Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[self.depth][0]
        else:
            path = Path(weights).expanduser()
            where = path
            path = path if path.is_file() else None
        if path is None:
            return f"ImageNet weights for {name} not found at {where}; backbone initialised randomly"
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("fc.")}
        self.load_state_dict(state, strict=True)
        return None

    def forward(self, x: Tensor) -> list[Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return [c3, c4, c5]
