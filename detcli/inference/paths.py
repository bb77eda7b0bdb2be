"""Inference paths: which form of a loaded network ``predict`` and ``eval`` run, and what each is called.

"exact": the network as loaded (the official numbers); "optimised": BatchNorms folded and channels_last on CPU
(the default, equal to float32 rounding only); "exported": an ONNX graph run by onnxruntime.
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch and the models load when a model is built
    from detcli.console import Reporter
    from detcli.inference.predictor import Predictor

NO_FUSE_ENV = "DETCLI_NO_FUSE"  # =1: as --exact (kept for scripts written before the flag)
INFERENCE_PATHS = {  # what inference_path() names, as predict prints it and eval's metrics.json records it
    "exact": "the network as loaded: float32, NCHW, BatchNorms unfolded, as the official code runs it",
    "optimised": "BatchNorms folded, channels_last on CPU: equal to float32 rounding, not bit for bit "
                 "(--exact for the official numbers)",
    "exported": "an exported graph run by onnxruntime",
}


def exact_requested(flag: bool) -> bool:
    """``--exact``, or the environment's ``DETCLI_NO_FUSE=1`` (its equivalent)."""
    return flag or os.environ.get(NO_FUSE_ENV, "").strip() not in ("", "0")


def inference_batch(batch: int, exact: bool) -> int:
    """Images per forward pass: ``batch``, or 1 on the exact path. The official tests run one image at a time,
    and the conv kernels pick their algorithm by batch size, so even equal-shape images stacked together agree
    with a pass of one only to float32 rounding (benchmarks/parity/batch_exactness.py)."""
    return 1 if exact_requested(exact) else batch


def inference_model(model: Predictor, reporter: Reporter | None = None, exact: bool = False) -> Predictor:
    """What ``predict`` and ``eval`` run (:func:`inference_path` names it).

    Default: the fastest form of ``model`` (:func:`detcli.models.fuse.fuse_for_inference`: BatchNorms folded,
    channels_last on CPU), equal to float32 rounding only. ``exact`` (``--exact``, or ``DETCLI_NO_FUSE=1``):
    ``model`` as loaded (float32, as every checkpoint loads), in eval mode, and no TF32 for CUDA convs and matmuls
    (PyTorch lets cuDNN use it by default), so each conv sums in float32 in the official layout: the official
    code's numbers. Also ``model`` as loaded when the optimisation fails (``reporter`` says why); an exported
    (onnxruntime) model is returned as it is.
    """
    import torch

    from detcli.models.base import Detector
    from detcli.models.fuse import fuse_for_inference

    if not isinstance(model, Detector):
        return model  # an exported (onnxruntime) model is already optimised
    if exact_requested(exact):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        return model.eval()
    try:
        return fuse_for_inference(model)
    except Exception as e:  # an optimisation must not stop a run
        if reporter is not None:
            reporter.warn(f"running the model as loaded: optimising it for inference failed ({e}); "
                          f"--exact skips the attempt")
        return model


def inference_path(model: object) -> str:
    """The key in :data:`INFERENCE_PATHS` of a model :func:`inference_model` returned."""
    from detcli.models.base import Detector
    from detcli.models.fuse import InferenceDetector

    if isinstance(model, InferenceDetector):
        return "optimised"
    return "exact" if isinstance(model, Detector) else "exported"


__all__ = ["INFERENCE_PATHS", "NO_FUSE_ENV", "exact_requested", "inference_batch", "inference_model",
           "inference_path"]
