"""Official-like checkpoint files: stand-ins pickled under NanoDet's, Lightning's and MMEngine's class names,
and torch zips whose ``data.pkl`` is replaced."""
from __future__ import annotations

import io
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from detcli.config.loader import load_preset
from detcli.models import build_model


def torch_zip(path: Path, pkl: bytes) -> None:
    """A ``torch.save`` zip whose ``data.pkl`` is replaced by ``pkl``."""
    buf = io.BytesIO()
    torch.save({"x": 1}, buf)
    src = zipfile.ZipFile(io.BytesIO(buf.getvalue()))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as out:
        for info in src.infolist():
            out.writestr(info.filename, pkl if info.filename.endswith("/data.pkl") else src.read(info))


# stand-ins named as the official classes; the fixture below gives them the official module names
class CfgNode(dict):
    """Pickles like yacs' / NanoDet's CfgNode: dict items plus attributes in ``__dict__``."""

    def __init__(self, init: dict | None = None) -> None:
        super().__init__({k: CfgNode(v) if isinstance(v, dict) else v for k, v in (init or {}).items()})
        self.__dict__["__immutable__"] = False
        self.__dict__["__deprecated_keys__"] = set()
        self.__dict__["__new_allowed__"] = False


class AttributeDict(dict):
    """Pickles like Lightning's AttributeDict."""


class HistoryBuffer:
    """Pickles like MMEngine's HistoryBuffer."""

    def __init__(self) -> None:
        self.max_length = 1000000
        self._log_history = np.array([0.5, 0.25])
        self._count_history = np.array([1, 1])


def _weights(preset: str, classes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return build_model(load_preset(preset)[0], classes, pretrained=False).state_dict()


def mmdet3_ckpt(classes: int, class_names: list[str] | None) -> dict:
    meta = {"epoch": 12, "iter": 1000, "cfg": "model = dict(type='RetinaNet')", "seed": 0,
            "mmengine_version": "0.10.3", "time": "20240101_000000"}
    if class_names is not None:
        meta["dataset_meta"] = {"classes": tuple(class_names), "palette": [(220, 20, 60)] * len(class_names)}
    return {
        "meta": meta,
        "state_dict": _weights("retinanet-r18-fpn", classes),
        "message_hub": {"log_scalars": OrderedDict(loss=HistoryBuffer()),
                        "runtime_info": OrderedDict(epoch=12, best_score=np.float64(0.36)),
                        "resumed_keys": OrderedDict(loss=True)},
    }
