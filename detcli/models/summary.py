"""The model summary ``train`` and ``eval`` print: parameters, GFLOPs, strides and assigner of a detector."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from detcli.config.schema import Preset
    from detcli.console import Reporter
    from detcli.models.base import Detector


def model_summary(reporter: Reporter, preset: Preset, model: Detector, size: tuple[int, int]) -> None:
    """Parameters, GFLOPs at the input ``size`` (w, h), strides and assigner.

    The parameter count the family's reference publishes (``Detector.param_count_convention``) is labelled
    with who counts that way, and the GFLOPs are counted as that reference counts them
    (``Detector.flop_count_convention``), so both can be compared with the paper's or the README's figure.
    """
    from detcli.models import assigner_name, strides_of
    from detcli.models.complexity import inference_params, reported_gflops, total_params

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    try:
        flops, counted = reported_gflops(model, (size[1], size[0]))  # size is (w, h), the count takes (h, w)
        flops_text = f"{flops:.2f} G ({counted}) at {size[0]}×{size[1]}"
    except Exception as e:  # a summary must not stop a run
        flops_text = f"n/a ({e})"
    infer = inference_params(model)
    infer_params, infer_conv = infer["all"], infer["conv"]
    counted_as = {"conv": "", "all": ""}
    if model.param_count_source:
        counted_as[model.param_count_convention] = f" (as {model.param_count_source} counts)"
    reporter.key_values(
        f"preset {preset.name} ({preset.model.type})",
        {
            "description": preset.description,
            "parameters (inference graph)": f"{infer_params:,}{counted_as['all']}",
            "parameters (training graph)": f"{total_params(model):,} ({trainable:,} trainable)",
            "conv parameters (inference graph)": f"{infer_conv:,}{counted_as['conv']}",
            "GFLOPs": flops_text,
            "strides": ", ".join(map(str, strides_of(preset))),
            "assigner": assigner_name(preset),
            "reference": preset.reference,
        },
    )


__all__ = ["model_summary"]
