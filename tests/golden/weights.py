"""The one recipe for the golden-fixture weights (used by ``benchmarks/fixtures/make_golden_fixtures.py`` and the tests).

Weights are never stored: a fixture holds the official state-dict key names and shapes, in the official
order, and a seed. :func:`golden_state_dict` rebuilds the same tensors from them, with one
``torch.Generator`` seeded once and consumed key by key in the fixture's order:

- BN ``running_mean``: ``0.1 * randn``; ``running_var``: ``0.5 + rand`` (positive);
  ``num_batches_tracked``: ``randint(1, 100000)`` (int64); ``weight``: ``1 + 0.1 * randn``; ``bias``:
  ``0.1 * randn`` (a BN module is one whose key set has a ``.running_var``);
- classifier conv (module ``*.gfl_cls.<i>``, ``*.retina_cls``, ``*.rtm_cls.<i>`` or DeFCN's ``*.cls_score``):
  weight ``3 * randn / sqrt(fan_in)``, bias ``-4.595 + 0.5 * randn`` (the official prior-probability init, plus
  noise);
- distance conv (RTMDet's ``*.rtm_reg.<i>``, DeFCN's ``*.bbox_pred``): weight as any conv, bias
  ``distance_bias + 0.25 * randn`` (``distance_bias`` 1 unless the fixture records another), so that the
  distances of RTMDet-tiny/s (``reg · stride``, not forced positive) are positive, about one stride, and those of
  m/l/x (``exp(reg) · stride``) a few strides, as a trained head's (the full RTMDet-tiny fixture uses 3: boxes of
  6 strides overlap their neighbours' beyond the NMS threshold, as a trained dense detector's do; DeFCN's
  ``ReLU(scale · reg) · stride`` uses 2: distances of 1.3 to 3.6 strides, none clipped to 0);
- any other tensor of 2 or more dims (conv weights): ``randn / sqrt(fan_in)``, fan_in = prod(shape[1:]);
- any other 1-D tensor (conv biases): ``0.5 * randn``;
- ``*.distribution_project.project`` (NanoDet's constant Integral bins): ``arange(n)``, no draw.

Optional parts, recorded in a fixture when it uses them (RTMDet's, DeFCN's):

- ``aliases`` {key: earlier key}: the key is the *same tensor* as the earlier one (no draw), as a module shared
  by several parents is in the official state dict (RTMDet's head convs shared across levels);
- ``bn_scales`` {BN module: [m, s]}: that BatchNorm's statistics are ``running_mean = m + s · (0.1 · randn)``,
  ``running_var = (s / 0.3)² · (0.5 + rand)`` (the same draws, rescaled): m and s are the mean and standard
  deviation of the BN's input on the fixture's input, measured layer after layer on the official model by
  :func:`calibrate_batchnorms_`, so every BN output has a standard deviation of about 0.3. A deep SiLU network
  (RTMDet) with uncalibrated statistics shrinks the input's trace to ~1e-5 of its outputs, where a raw-output
  comparison would no longer see the early layers; calibrated to 1, it is chaotic (float32 rounding grows to
  4e-3 in RTMDet-l's logits); at 0.3 SiLU works near its linear part and the rounding stays at the 1e-6 of a
  trained model;
- ``norm_affine`` (DeFCN): the affine weights of a normalisation layer *without* running statistics (GroupNorm:
  a module whose ``weight`` is 1-D and that has no ``running_var``) are drawn as a BN's, weight
  ``1 + 0.1 · randn`` and bias ``0.1 · randn``, instead of ``0.5 · randn`` each. With the generic rule DeFCN's
  GroupNorm towers (4 + 4 GN layers, then 3DMF's GN) are dominated by input-independent per-channel offsets: the
  class logits vary by 0.1 over the image and by 4 % between two inputs (their scores a plateau of near-ties);
  with it, by 0.6 to 0.9 and by 8 to 27 %. (NanoDet-Plus' AGM GroupNorms keep the generic rule.)
- ``level_scale`` (DeFCN): the learnable per-level ``Scale`` of the regression (``*.scales.<i>.scale``) is
  ``level_scale + 0.1 · randn`` instead of ``0.5 · randn``, which is negative half the time and would make
  ``ReLU(scale · x)`` zero the distances of that level. (NanoDet-Plus' AGM scales keep the generic rule.)
- ``filter_gain`` (DeFCN): the weight of DeFCN's 3D-max-filtering output conv (``*.filter``) is
  ``filter_gain · randn / sqrt(fan_in)`` (bias generic), so that the filter logits spread around 0 (standard
  deviation about 0.5 to 1) as a trained filter's do, instead of sigmoid(filter) ≈ 0.6 ± 0.03 everywhere.

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
from collections.abc import Iterable, Mapping, Sequence

import torch

CLASSIFIER_MODULE = re.compile(r"(^|\.)(gfl_cls\.\d+|retina_cls|rtm_cls\.\d+|cls_score)$")
DISTANCE_MODULE = re.compile(r"(^|\.)(rtm_reg\.\d+|bbox_pred)$")
LEVEL_SCALE_MODULE = re.compile(r"(^|\.)scales\.\d+$")  # leaf ``scale``: per-level Scale, only with level_scale
FILTER_MODULE = re.compile(r"(^|\.)filter$")  # DeFCN's 3DMF output conv, only with filter_gain
CLASSIFIER_GAIN = 3.0
CLASSIFIER_BIAS = -4.595  # -log((1 - 0.01) / 0.01)
DISTANCE_BIAS = 1.0
CALIBRATED_STD = 0.3  # of every BN output, see bn_scales


def golden_state_dict(
    spec: Iterable[tuple[str, Sequence[int]]],
    seed: int,
    aliases: Mapping[str, str] | None = None,
    bn_scales: Mapping[str, Sequence[float]] | None = None,
    distance_bias: float = DISTANCE_BIAS,
    norm_affine: bool = False,
    level_scale: float | None = None,
    filter_gain: float | None = None,
) -> dict[str, torch.Tensor]:
    """``{key: tensor}`` for ``spec`` = [(official key, shape), …] in the fixture's order (``aliases``,
    ``bn_scales``, ``distance_bias``, ``norm_affine``, ``level_scale``, ``filter_gain``: see the module
    docstring)."""
    spec = [(str(k), tuple(int(s) for s in shape)) for k, shape in spec]
    bn_modules = {k.rpartition(".")[0] for k, _ in spec if k.endswith(".running_var")}
    norm_modules = set()
    if norm_affine:  # GroupNorm-like: a 1-D weight, no running statistics
        norm_modules = {k.rpartition(".")[0] for k, shape in spec
                        if k.endswith(".weight") and len(shape) == 1} - bn_modules
    aliases, bn_scales = aliases or {}, bn_scales or {}
    g = torch.Generator().manual_seed(int(seed))
    out: dict[str, torch.Tensor] = {}
    for key, shape in spec:
        module, _, leaf = key.rpartition(".")
        if key in aliases:
            value = out[aliases[key]]
        elif key.endswith(".distribution_project.project"):
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
            if module in bn_scales and leaf in ("running_mean", "running_var"):
                value = calibrated(leaf, value, *bn_scales[module])
        elif module in norm_modules and leaf in ("weight", "bias"):
            value = (1.0 if leaf == "weight" else 0.0) + 0.1 * torch.randn(shape, generator=g)
        elif level_scale is not None and leaf == "scale" and LEVEL_SCALE_MODULE.search(module):
            value = level_scale + 0.1 * torch.randn(shape, generator=g)
        elif filter_gain is not None and leaf == "weight" and FILTER_MODULE.search(module):
            value = torch.randn(shape, generator=g) * (filter_gain / math.sqrt(math.prod(shape[1:])))
        elif CLASSIFIER_MODULE.search(module):
            if len(shape) >= 2:
                value = torch.randn(shape, generator=g) * (CLASSIFIER_GAIN / math.sqrt(math.prod(shape[1:])))
            else:
                value = CLASSIFIER_BIAS + 0.5 * torch.randn(shape, generator=g)
        elif DISTANCE_MODULE.search(module) and len(shape) == 1:
            value = distance_bias + 0.25 * torch.randn(shape, generator=g)
        elif len(shape) >= 2:
            value = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        else:
            value = 0.5 * torch.randn(shape, generator=g)
        out[key] = value
    return out


def fixture_state_dict(doc: Mapping) -> dict[str, torch.Tensor]:
    """:func:`golden_state_dict` of a fixture's ``.json`` (its spec, seed and whatever optional parts it records)."""
    return golden_state_dict(doc["spec"], doc["seed"], doc.get("aliases"), doc.get("bn_scales"),
                             doc.get("distance_bias", DISTANCE_BIAS), doc.get("norm_affine", False),
                             doc.get("level_scale"), doc.get("filter_gain"))


def golden_input(shape: Sequence[int], seed: int) -> torch.Tensor:
    """The fixture's input: ``randn(shape)`` from a generator seeded with ``1000 + seed``. Fixtures that record
    ``input_recipe`` store no input: it is rebuilt here (and checked against ``input_checksum``)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(1000 + int(seed)))


def calibrated(leaf: str, base: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """A BN statistic drawn for a unit-scale input (``base``) rescaled to an input of this ``mean`` and ``std``
    (and an output of standard deviation ``CALIBRATED_STD``)."""
    if leaf == "running_mean":
        return mean + std * base
    scale = std / CALIBRATED_STD
    return (scale * scale) * base


def calibrate_batchnorms_(model: torch.nn.Module, images: torch.Tensor) -> dict[str, list[float]]:
    """Rescale every BatchNorm's running statistics (:func:`calibrated`) to the mean and standard deviation of
    what it sees when ``model`` (eval mode) runs on ``images``, layer after layer in one forward pass (each BN is
    rescaled before it runs, so the ones after it see calibrated inputs).

    Returns:
        ``bn_scales`` {BN module name: [mean, std]} for :func:`golden_state_dict` (which then gives the same
        statistics from the uncalibrated draws).
    """
    names = {m: n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}
    scales: dict[str, list[float]] = {}

    def rescale(bn: torch.nn.Module, args: tuple) -> None:
        name = names[bn]
        if name in scales:  # a BN run twice keeps its first calibration
            return
        x = args[0].detach().double()
        scales[name] = [float(x.mean()), float(x.std())]
        for leaf in ("running_mean", "running_var"):
            getattr(bn, leaf).copy_(calibrated(leaf, getattr(bn, leaf), *scales[name]))

    handles = [bn.register_forward_pre_hook(rescale) for bn in names]
    try:
        model.eval()
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return scales


def trained_like_(model: torch.nn.Module, images: torch.Tensor, seed: int = 0) -> torch.nn.Module:
    """Weights of this recipe for ``model``'s own state dict, BatchNorms calibrated on ``images``, eval mode: O(1)
    activations that depend on the image, class scores spread and boxes of the sizes a trained detector gives
    (a freshly initialised RTMDet-tiny head predicts one score everywhere and boxes of 1e-9 px). A DeFCN head (a
    ``filter`` conv) gets the options its fixture records (GN affine drawn, Scale 1, filter gain 3, distances 2) and
    its class bias raised by 3: its score is a product of two sigmoids, and the tests' small inputs (a few hundred
    priors) need a few hundred pairs above their thresholds."""
    spec = [(k, v.shape) for k, v in model.state_dict().items()]
    defcn = any(k.endswith("head.filter.weight") for k, _ in spec)
    options = dict(distance_bias=2.0, norm_affine=True, level_scale=1.0, filter_gain=3.0) if defcn else {}
    state = golden_state_dict(spec, seed, **options)
    for key in [k for k in state if defcn and k.endswith("head.cls_score.bias")]:
        state[key] = state[key] + 3.0
    model.load_state_dict(state)
    calibrate_batchnorms_(model, images)
    return model.eval()


def checksums(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """float64 sum of every tensor (a fingerprint of the recipe and the RNG stream)."""
    return {k: float(v.double().sum()) for k, v in state.items()}
