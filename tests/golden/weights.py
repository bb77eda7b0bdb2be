"""The one recipe for the golden-fixture weights (used by ``benchmarks/make_golden_fixtures.py`` and the tests).

Weights are never stored: a fixture holds the official state-dict key names and shapes, in the official
order, and a seed. :func:`golden_state_dict` rebuilds the same tensors from them, with one
``torch.Generator`` seeded once and consumed key by key in the fixture's order:

- BN ``running_mean``: ``0.1 * randn``; ``running_var``: ``0.5 + rand`` (positive);
  ``num_batches_tracked``: ``randint(1, 100000)`` (int64); ``weight``: ``1 + 0.1 * randn``; ``bias``:
  ``0.1 * randn`` (a BN module is one whose key set has a ``.running_var``);
- classifier conv (module ``*.gfl_cls.<i>`` or ``*.retina_cls``): weight ``3 * randn / sqrt(fan_in)``, bias
  ``-4.595 + 0.5 * randn`` (the official prior-probability init, plus noise);
- any other tensor of 2 or more dims (conv weights): ``randn / sqrt(fan_in)``, fan_in = prod(shape[1:]);
- any other 1-D tensor (conv biases): ``0.5 * randn``;
- ``*.distribution_project.project`` (NanoDet's constant Integral bins): ``arange(n)``, no draw.

The classifier rule spreads the class scores the way a trained detector's are (most below the 0.05
test threshold, a few hundred candidates over a wide range): with every score near 0.5, thousands of
overlapping candidates would sit within float noise of each other and the official detections would test
tie-breaking instead of the model. (For NanoDet's combined cls+reg conv the box bins get the same rule;
the common -4.595 cancels in their softmax.)

The BN statistics are random rather than calibrated, so an eval-mode BN is not an identity and a
swapped mean/var or a dropped BN shows in the outputs. Every generated tensor's float64 sum is stored in
the fixture too (``checksums``) so that a change of the recipe or of torch's RNG stream is reported as
such, not as a model mismatch.
"""
from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import torch

CLASSIFIER_MODULE = re.compile(r"(^|\.)(gfl_cls\.\d+|retina_cls)$")
CLASSIFIER_GAIN = 3.0
CLASSIFIER_BIAS = -4.595  # -log((1 - 0.01) / 0.01)


def golden_state_dict(spec: Iterable[tuple[str, Sequence[int]]], seed: int) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` for ``spec`` = [(official key, shape), …] in the fixture's order."""
    spec = [(str(k), tuple(int(s) for s in shape)) for k, shape in spec]
    bn_modules = {k.rpartition(".")[0] for k, _ in spec if k.endswith(".running_var")}
    g = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for key, shape in spec:
        module, _, leaf = key.rpartition(".")
        if key.endswith(".distribution_project.project"):
            value = torch.arange(shape[0], dtype=torch.float32)
        elif leaf == "num_batches_tracked":
            value = torch.randint(1, 100000, shape, generator=g, dtype=torch.int64)
        elif module in bn_modules:
            if leaf == "running_var":
                value = 0.5 + torch.rand(shape, generator=g)
            elif leaf == "weight":
                value = 1.0 + 0.1 * torch.randn(shape, generator=g)
            else:  # bias, running_mean
                value = 0.1 * torch.randn(shape, generator=g)
        elif CLASSIFIER_MODULE.search(module):
            if len(shape) >= 2:
                value = torch.randn(shape, generator=g) * (CLASSIFIER_GAIN / math.sqrt(math.prod(shape[1:])))
            else:
                value = CLASSIFIER_BIAS + 0.5 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            value = 0.5 * torch.randn(shape, generator=g)
        out[key] = value
    return out


def checksums(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """float64 sum of every tensor (a fingerprint of the recipe and the RNG stream)."""
    return {k: float(v.double().sum()) for k, v in state.items()}
