"""Training-step golden fixtures: one step from the golden weights on a fixed batch, official code vs detcli.

A fixture ``tests/golden/train_step/<preset>.json`` holds, numbers and key names only::

    {
      "preset": "...", "weights": "<golden raw fixture whose spec + seed give the weights>",
      "source": {...},                      # official code, versions, the official loss entry point
      "input_shape": [B, 3, H, W], "input_seed": 123,   # the batch: golden.weights.golden_input(shape, seed)
      "img_shapes": [[h, w], ...],          # each image's valid (unpadded) size inside the batch
      "targets": [{"boxes": [[x1, y1, x2, y2], ...], "labels": [...]}, ...],   # input pixels
      "epoch": 0,                            # 0-indexed epoch the step runs in (NanoDet's AGM phase)
      "losses": {"<detcli loss name>": value, ...},   # the official losses, under detcli's names
      "loss_names": {"<detcli loss name>": "<official name>"},
      "grads": {"<official parameter name>": [sum, sum_of_abs], ...}   # float64 checksums of each gradient
    }

The model is in training mode as the official recipe has it (BatchNorm uses the batch's statistics, unless the official
config sets ``norm_eval``: the fixture then records ``"norm_eval": true``); the gradients are of the summed losses.
:func:`grad_problems` compares the checksums with a tolerance scaled to each tensor's gradient magnitude.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Mapping

import torch

GOLDEN = Path(__file__).resolve().parent
TRAIN_STEP = GOLDEN / "train_step"
LOSS_RTOL = 1e-6
GRAD_RTOL = 1e-4  # of the gradient's sum of |g|: float32 summation order in the backward passes


def train_step_fixture(preset: str) -> dict:
    """The training-step fixture of ``preset``."""
    return json.loads((TRAIN_STEP / f"{preset}.json").read_text())


def grad_checksums(named_parameters: Iterable[tuple[str, torch.nn.Parameter]]) -> dict[str, list[float]]:
    """name → ``[Σ g, Σ |g|]`` in float64 of every parameter that received a gradient."""
    out = {}
    for name, p in named_parameters:
        if p.grad is not None:
            g = p.grad.detach().double()
            out[name] = [float(g.sum()), float(g.abs().sum())]
    return out


def loss_problems(official: Mapping[str, float], ours: Mapping[str, float], rtol: float = LOSS_RTOL) -> list[str]:
    """Losses that are missing or differ by more than ``rtol`` relative (1e-12 absolute for exact zeros)."""
    problems = []
    for name, ref in official.items():
        if name not in ours:
            problems.append(f"{name}: missing (detcli has {sorted(ours)})")
        elif abs(ours[name] - ref) > rtol * abs(ref) + 1e-12:
            problems.append(f"{name}: {ours[name]!r}, official {ref!r} (rel {abs(ours[name] - ref) / max(abs(ref), 1e-30):.2e})")
    return problems


def grad_problems(official: Mapping[str, list[float]], ours: Mapping[str, list[float]],
                  rtol: float = GRAD_RTOL) -> list[str]:
    """Parameters whose gradient checksums differ: a missing gradient, or ``Σ g`` / ``Σ |g|`` off by more than
    ``rtol ·`` the largest official ``Σ |g|`` among the parameters of its module (plus 1e-12 for all-zero gradients).

    The module's scale, not the tensor's own: the bias of a BatchNorm followed by a linear layer and another
    batch-statistics BatchNorm (ShuffleNetV2's and GhostNet's depthwise conv → BN → 1×1 conv → BN) has a gradient
    that is zero in exact arithmetic; what float32 leaves of it is cancellation noise of the size of the BN
    weight's gradient × eps (it differs 5-30 % between the official code's own 1- and 2-thread runs)."""
    scale: dict[str, float] = {}
    for name, (_, a) in official.items():
        module = name.rpartition(".")[0]
        scale[module] = max(scale.get(module, 0.0), a)
    problems = []
    for name, (s, a) in official.items():
        if name not in ours:
            problems.append(f"{name}: no gradient in detcli")
            continue
        s2, a2 = ours[name]
        tol = rtol * scale[name.rpartition(".")[0]] + 1e-12
        if abs(s2 - s) > tol or abs(a2 - a) > tol:
            problems.append(f"{name}: Σg {s2:.6e} / Σ|g| {a2:.6e}, official {s:.6e} / {a:.6e}")
    extra = sorted(set(ours) - set(official))
    if extra:
        problems.append(f"{len(extra)} detcli gradients the official step has not, e.g. {extra[:3]}")
    return problems
