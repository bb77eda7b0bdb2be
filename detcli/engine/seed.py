"""Seeding and capture/restore of every random state a training process uses.

States are stored as tensors, lists and numbers only, so a checkpoint holding them loads with
``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import random
from typing import Any, Iterable

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> int:
    """Seed Python, NumPy and torch (CPU and every CUDA device) with ``seed + rank``; returns that seed."""
    s = int(seed) + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
    return s


def get_rng_state(generators: Iterable[torch.Generator] = ()) -> dict[str, Any]:
    """Python, NumPy, torch CPU/CUDA states, plus the states of extra ``generators`` (e.g. a DataLoader's)."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [int(version), list(internal), gauss],
        "numpy": [str(kind), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else [],
        "generators": [g.get_state() for g in generators],
    }


def set_rng_state(state: dict[str, Any], generators: Iterable[torch.Generator] = ()) -> None:
    """Restore what :func:`get_rng_state` captured (CUDA states only when the device count matches)."""
    version, internal, gauss = state["python"]
    random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    torch.set_rng_state(state["torch"].cpu())
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in cuda])
    gens = list(generators)
    saved = state.get("generators") or []
    if len(saved) == len(gens):
        for g, s in zip(gens, saved):
            g.set_state(s.cpu())


__all__ = ["seed_everything", "get_rng_state", "set_rng_state"]
