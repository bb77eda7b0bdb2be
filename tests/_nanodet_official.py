"""Load the few official NanoDet modules needed for parity checks, without running the package
``__init__`` files (which pull in Lightning and the whole model zoo).

Parent packages are registered as empty namespace-like modules whose ``__path__`` points at the
checkout, so ``import nanodet.model.head.nanodet_plus_head`` resolves the real files. Nothing from the
checkout is copied into detcli.
"""
from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path

_PACKAGES = [
    "nanodet",
    "nanodet.model",
    "nanodet.model.head",
    "nanodet.model.head.assigner",
    "nanodet.model.loss",
    "nanodet.model.module",
    "nanodet.data",
    "nanodet.data.transform",
]


def load_official(repo: str | Path) -> types.SimpleNamespace:
    """Return the official ``DynamicSoftLabelAssigner``, ``NanoDetPlusHead`` module and loss helpers."""
    root = Path(repo) / "nanodet"
    if not root.is_dir():
        raise FileNotFoundError(f"no nanodet package under {repo}")
    for name in _PACKAGES:
        if name not in sys.modules:
            module = types.ModuleType(name)
            module.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
            sys.modules[name] = module
    if "nanodet.util" not in sys.modules:
        util = types.ModuleType("nanodet.util")
        util.__path__ = [str(root / "util")]
        sys.modules["nanodet.util"] = util
        box_transform = importlib.import_module("nanodet.util.box_transform")
        misc = importlib.import_module("nanodet.util.misc")
        util.bbox2distance = box_transform.bbox2distance
        util.distance2bbox = box_transform.distance2bbox
        util.multi_apply = misc.multi_apply
        util.images_to_levels = misc.images_to_levels  # imported by gfl_head (Integral, reduce_mean)
        util.util_mixins = importlib.import_module("nanodet.util.util_mixins")
        util.overlay_bbox_cv = None  # visualisation only
    return types.SimpleNamespace(
        dsl=importlib.import_module("nanodet.model.head.assigner.dsl_assigner"),
        head=importlib.import_module("nanodet.model.head.nanodet_plus_head"),
        gfocal=importlib.import_module("nanodet.model.loss.gfocal_loss"),
        iou=importlib.import_module("nanodet.model.loss.iou_loss"),
        box_transform=importlib.import_module("nanodet.util.box_transform"),
    )
