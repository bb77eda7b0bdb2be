"""Fixtures shared by the test modules."""
from __future__ import annotations

from pathlib import Path

import pytest

from detcli.data.demo import ensure_demo_dataset


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
