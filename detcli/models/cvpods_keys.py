"""Key names of detectron2/cvpods ResNet-FPN weights ↔ detcli's (torchvision ResNet, MMDetection-style FPN).

Two sources are read:

* the MSRA ImageNet file of DeFCN's config (``detectron2://ImageNetPretrained/MSRA/R-50.pkl``): a pickle of
  Caffe2 blobs (``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w`` …; the BN as a folded scale ``_s`` and
  shift ``_b``, no statistics). :func:`msra_resnet_state_dict` turns it into torchvision ResNet keys with
  running mean 0 and variance 1 − 1e-5, so that the FrozenBatchNorm2d scale √(var + eps) is exactly 1 (what
  detectron2's FrozenBatchNorm2d does when it upgrades such a file);
* a cvpods checkpoint (``{"model": state_dict}``, keys ``backbone.bottom_up.*``, ``backbone.fpn_*``,
  ``backbone.top_block.*``, ``head.*``): :func:`cvpods_to_detcli` renames the backbone and FPN keys and keeps
  ``head.*`` (detcli's DeFCN head uses cvpods' names).
"""
from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detcli.errors import DetcliError

_FROZEN_BN_EPS = 1e-5
_NORM_LEAF = {"s": "weight", "b": "bias", "rm": "running_mean", "riv": "running_var"}
_BRANCH_CONV = {"branch2a": "conv1", "branch2b": "conv2", "branch2c": "conv3"}
_FPN = {"fpn_lateral3": "lateral_convs.0", "fpn_lateral4": "lateral_convs.1", "fpn_lateral5": "lateral_convs.2",
        "fpn_output3": "fpn_convs.0", "fpn_output4": "fpn_convs.1", "fpn_output5": "fpn_convs.2",
        "top_block.p6": "fpn_convs.3", "top_block.p7": "fpn_convs.4"}


class _NumpyOnly(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (a weights file has no business calling anything else)."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
               ("numpy._core.multiarray", "scalar"), ("collections", "OrderedDict")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a weights file")
        return super().find_class(module, name)


def read_msra_pickle(path: Path) -> dict[str, np.ndarray]:
    """The Caffe2 blobs of a detectron2 ``.pkl`` weights file (``{"blobs": …}`` or the bare dict)."""
    try:
        with open(path, "rb") as f:
            data = _NumpyOnly(f, encoding="latin1").load()
    except (OSError, pickle.UnpicklingError, EOFError, ValueError) as e:
        raise DetcliError(f"{path}: not a readable detectron2/Caffe2 .pkl weights file ({e})") from None
    if isinstance(data, Mapping) and "blobs" in data:
        data = data["blobs"]
    if not isinstance(data, Mapping):
        raise DetcliError(f"{path}: expected a dict of Caffe2 blobs, found {type(data).__name__}")
    return {str(k): v for k, v in data.items() if isinstance(v, np.ndarray) and not str(k).endswith("_momentum")}


def msra_resnet_state_dict(blobs: Mapping[str, np.ndarray]) -> dict[str, Tensor]:
    """Caffe2 ResNet blobs → torchvision ResNet keys (``conv1``, ``bn1``, ``layer1.0.conv1``, ``…downsample.0``);
    the classifier (``fc1000_*``, ``pred_*``) dropped; missing BN statistics filled (see the module docstring)."""
    out: dict[str, Tensor] = {}
    for name, value in blobs.items():
        key = _msra_key(name)
        if key is not None:
            out[key] = torch.from_numpy(np.ascontiguousarray(value)).float()
    for key in [k for k in out if k.endswith(".weight") and k.rpartition(".")[0] + ".bias" in out]:
        module = key.rpartition(".")[0]
        if out[key].ndim == 1:  # a norm: add the statistics the file does not carry
            out.setdefault(module + ".running_mean", torch.zeros_like(out[key]))
            out.setdefault(module + ".running_var", torch.full_like(out[key], 1.0 - _FROZEN_BN_EPS))
    return out


def _msra_key(name: str) -> str | None:
    if name == "conv1_w":
        return "conv1.weight"
    m = re.fullmatch(r"res_conv1_bn_(s|b|rm|riv)", name)
    if m:
        return f"bn1.{_NORM_LEAF[m[1]]}"
    m = re.fullmatch(r"res(\d)_(\d+)_(branch1|branch2[abc])(_bn)?_(w|s|b|rm|riv)", name)
    if not m:
        return None
    stage, block, branch, bn, leaf = int(m[1]), int(m[2]), m[3], m[4], m[5]
    prefix = f"layer{stage - 1}.{block}."
    if branch == "branch1":
        return prefix + ("downsample.1." + _NORM_LEAF[leaf] if bn else "downsample.0.weight")
    conv = _BRANCH_CONV[branch]
    return prefix + (f"bn{conv[-1]}." + _NORM_LEAF[leaf] if bn else f"{conv}.weight")


def cvpods_to_detcli(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A cvpods ResNet-FPN detector's state dict under detcli's names (``backbone.*`` torchvision ResNet,
    ``neck.*`` FPN, ``head.*`` unchanged); keys of other modules are returned unchanged (the caller reports
    them as unexpected)."""
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        out[_cvpods_key(key.removeprefix("module."))] = value
    return out


def _cvpods_key(key: str) -> str:
    if key.startswith("backbone.bottom_up."):
        rest = key.removeprefix("backbone.bottom_up.")
        m = re.fullmatch(r"stem\.conv1\.(norm\.)?(\w+)", rest)
        if m:
            return "backbone." + ("bn1." if m[1] else "conv1.") + m[2]
        m = re.fullmatch(r"res(\d)\.(\d+)\.(conv[123]|shortcut)\.(norm\.)?(\w+)", rest)
        if m:
            stage, block, conv, norm, leaf = int(m[1]), m[2], m[3], m[4], m[5]
            prefix = f"backbone.layer{stage - 1}.{block}."
            if conv == "shortcut":
                return prefix + ("downsample.1." if norm else "downsample.0.") + leaf
            return prefix + (f"bn{conv[-1]}." if norm else f"{conv}.") + leaf
        return key
    for old, new in _FPN.items():
        if key.startswith(f"backbone.{old}."):
            return f"neck.{new}.conv." + key.removeprefix(f"backbone.{old}.")
    return key
