"""Model size and cost, counted the way the model zoos count them.

NanoDet's README: "Params" = parameters of Conv2d layers only (BN excluded); "FLOPs" = 2 × multiply-accumulates
of the Conv2d (and Linear) layers of the inference graph, i.e. 0.90 G for NanoDet-Plus-m 1.0x at 320².
MMDetection's (RTMDet's README): every parameter; one multiply-accumulate counted as one FLOP (8.04 G of conv
MACs for RTMDet-tiny at 640², README 8.1 with the few non-conv ops). :func:`reported_gflops` follows the
family's ``flop_count_convention``.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def total_params(model: nn.Module) -> int:
    """All ``nn.Parameter`` elements (BN/GN affine and Scale included; buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


def conv_params(model: nn.Module) -> int:
    """Weight + bias elements of every ``nn.Conv2d`` in ``model``."""
    return sum(p.numel() for m in model.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))


def count_parameters(model: nn.Module) -> dict[str, int]:
    """``{"conv": conv_params, "total": total_params}``."""
    return {"conv": conv_params(model), "total": total_params(model)}


def inference_params(model: nn.Module) -> dict[str, int]:
    """``{"conv": …, "all": …}`` parameters of the inference graph: the names of ``model.inference_state_dict()``
    when the model has one (training-only modules such as NanoDet-Plus' AGM left out), else every parameter."""
    keys = set(model.inference_state_dict()) if hasattr(model, "inference_state_dict") else None
    named = [(n, p) for n, p in model.named_parameters() if keys is None or n in keys]
    conv = {f"{name}.{n}" if name else n for name, m in model.named_modules() if isinstance(m, nn.Conv2d)
            for n, _ in m.named_parameters(recurse=False)}
    return {"conv": sum(p.numel() for n, p in named if n in conv), "all": sum(p.numel() for _, p in named)}


def reported_params(model: nn.Module) -> tuple[int, str]:
    """Parameters of the inference graph the way the model's family reference counts them, and how, in words.

    ``model.param_count_convention`` (:class:`~detcli.models.base.Detector`) ``"conv"``: Conv2d weights and
    biases only; ``"all"`` (the default, also for any other module): every parameter.
    """
    return inference_params(model)[getattr(model, "param_count_convention", "all")], param_count_words(model)


def param_count_words(model: nn.Module | type) -> str:
    """How :func:`reported_params` counts for this model (or detector class), e.g. "every parameter, as
    MMDetection counts"."""
    conv = getattr(model, "param_count_convention", "all") == "conv"
    source = getattr(model, "param_count_source", None)
    return ("Conv2d weights and biases" if conv else "every parameter") + (f", as {source} counts" if source else "")


def flop_count_words(model: nn.Module | type) -> str:
    """How :func:`reported_gflops` counts for this model (or detector class): "MACs, as MMDetection counts",
    "2×MACs"."""
    source = getattr(model, "flop_count_source", None)
    unit = "MACs" if getattr(model, "flop_count_convention", "2macs") == "macs" else "2×MACs"
    return unit + (f", as {source} counts" if source else "")


def _macs_hook(counter: list[int]):
    def hook(module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:  # nn.Linear
            per_output = module.in_features
        counter[0] += output.numel() * per_output

    return hook


def conv_macs(model: nn.Module, input_size: int | tuple[int, int]) -> int:
    """Multiply-accumulates of Conv2d/Linear layers for one (1, 3, H, W) forward of ``model`` (bias adds not counted).

    Only modules that ``model.forward`` actually runs are counted (e.g. NanoDet-Plus' AGM is not).
    """
    h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
    counter = [0]
    handles = [m.register_forward_hook(_macs_hook(counter)) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else "cpu"
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, 3, h, w, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return counter[0]


def gflops(model: nn.Module, input_size: int | tuple[int, int]) -> float:
    """2 × conv MACs / 1e9 for a single image of ``input_size`` (int or (h, w))."""
    return 2 * conv_macs(model, input_size) / 1e9


def reported_gflops(model: nn.Module, input_size: int | tuple[int, int]) -> tuple[float, str]:
    """GFLOPs of one image the way the model's family reference counts them, and how, in words.

    ``model.flop_count_convention`` (:class:`~detcli.models.base.Detector`) ``"macs"``: conv MACs / 1e9, said
    as "MACs" (with ``flop_count_source``); ``"2macs"`` (the default, also for any other module): :func:`gflops`,
    said as "2×MACs".
    """
    if getattr(model, "flop_count_convention", "2macs") == "macs":
        return conv_macs(model, input_size) / 1e9, flop_count_words(model)
    return gflops(model, input_size), flop_count_words(model)
