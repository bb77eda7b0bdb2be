"""The shipped presets as pytest parameters, for the tests that run every preset at an input size of their own."""
from __future__ import annotations

import functools
import json
from fractions import Fraction
from pathlib import Path

import pytest
import torch

from detcli.config.loader import load_preset, presets_dir

# Per-preset cases of presets larger than this run with -m slow: their architecture is a scaled copy of a
# smaller default preset's (rtmdet-l and -x of rtmdet-m), and the golden fixtures check their raw outputs anyway.
HEAVY_PARAMS = 40_000_000


def _network_key(path: Path) -> str:
    """The preset without its names and with only the shape (w:h) of its input size."""
    data = load_preset(path)[0].model_dump(mode="json")
    for descriptive in ("name", "description", "reference", "zoo"):
        data.pop(descriptive)
    w, h = data["input"].pop("size")
    data["input"]["aspect"] = str(Fraction(w, h))
    return json.dumps(data, sort_keys=True)


@functools.lru_cache(maxsize=None)
def parameter_count(path: Path) -> int:
    """Parameters of the preset's model with 80 classes, built on the meta device (no memory, no init cost)."""
    from detcli.models import build_model

    with torch.device("meta"):
        return sum(p.numel() for p in build_model(load_preset(path)[0], 80, pretrained=False).parameters())


def preset_params(one_per_model_type: bool = False) -> list:
    """Every shipped preset (globbed from ``presets/``, so one added later is covered), id'd by its name.

    Presets that differ only in their input size (``nanodet-plus-m-416`` is ``nanodet-plus-m`` at 416) build
    the same network and, at the fixed input size of the tests that use this, compute the same numbers: of such
    a group the shortest name runs by default, the others are marked ``slow`` (``pytest -m slow``). Presets of
    more than :data:`HEAVY_PARAMS` parameters are marked ``slow`` too.
    ``one_per_model_type``: only the first preset of each ``model.type`` (shortest name: the smallest network)
    runs by default, for the heavy tests whose per-preset part test_contract checks on every preset.
    """
    paths = sorted(presets_dir().glob("*.yaml"), key=lambda p: (len(p.stem), p.stem))
    seen: set[str] = set()
    params = []
    for path in paths:
        key = _network_key(path)
        kind = load_preset(path)[0].model.type
        repeat = key in seen or (one_per_model_type and kind in seen) or parameter_count(path) > HEAVY_PARAMS
        seen.update((key, kind))
        params.append(pytest.param(path, id=path.stem, marks=[pytest.mark.slow] if repeat else []))
    return sorted(params, key=lambda p: p.id)
