"""Load the few official NanoDet modules needed for parity checks from a local checkout
(``NANODET_REPO``) without Lightning. Nothing from the checkout is copied into detcli."""
from __future__ import annotations

import importlib
import types
from pathlib import Path


def load_official(repo: str | Path) -> types.SimpleNamespace:
    """Return the official ``DynamicSoftLabelAssigner``, ``NanoDetPlusHead`` module and loss helpers.

    Uses the same light import of the checkout as the benchmarks (``benchmarks/common/official_nanodet.py``), so
    every parity test sees one consistent ``nanodet`` package whatever order they run in.
    """
    from benchmarks.common.official_nanodet import import_official

    import_official(repo)
    return types.SimpleNamespace(
        dsl=importlib.import_module("nanodet.model.head.assigner.dsl_assigner"),
        head=importlib.import_module("nanodet.model.head.nanodet_plus_head"),
        gfocal=importlib.import_module("nanodet.model.loss.gfocal_loss"),
        iou=importlib.import_module("nanodet.model.loss.iou_loss"),
        box_transform=importlib.import_module("nanodet.util.box_transform"),
    )
