"""Fixtures shared by the test modules."""
from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from detcli.config.loader import presets_dir
from detcli.data.demo import ensure_demo_dataset
from tests.support.official_pickles import AttributeDict, CfgNode, HistoryBuffer
from tests.support.official_weights import official_checkpoint


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """``demo.yaml`` of a tiny demo copy (8 train, 4 val images), made afresh for each test module."""
    root = tmp_path_factory.mktemp("tiny") / "demo"
    ensure_demo_dataset(root, num_train=8, num_val=4)
    return root / "demo.yaml"


@pytest.fixture
def one_thread():
    """torch on one thread for the test: the same float32 summation order every run, whatever the machine's load
    or core count (parity tests against fixed official numbers)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image(tiny_data: Path) -> Path:
    return sorted((tiny_data.parent / "val").glob("*.*"))[0]


@pytest.fixture
def official_names(monkeypatch):
    """Registers the stand-ins under the official module names, so that pickle writes those names."""
    where = {
        "nanodet.util.yacs": {"CfgNode": CfgNode},
        "pytorch_lightning.utilities.parsing": {"AttributeDict": AttributeDict},
        "mmengine.logging.history_buffer": {"HistoryBuffer": HistoryBuffer},
    }
    for module, classes in where.items():
        parts = module.split(".")
        for i in range(1, len(parts) + 1):
            name = ".".join(parts[:i])
            if name not in sys.modules:
                monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
        for cls_name, cls in classes.items():
            monkeypatch.setattr(cls, "__module__", module)
            monkeypatch.setattr(sys.modules[module], cls_name, cls, raising=False)


@pytest.fixture(scope="module")
def nanodet_weights(tmp_path_factory) -> Path:
    """NanoDet-Plus: its GFL decode is the graph that needed ``aten::unflatten`` (opset 13) before."""
    return official_checkpoint(presets_dir() / "nanodet-plus-m.yaml", tmp_path_factory.mktemp("w"))
