"""detcli's public Python API: what the ``detcli`` commands themselves call.

::

    import detcli
    model = detcli.load("runs/train/train/weights/best.pt")     # a detcli checkpoint, an official one with
    results = model.predict("images/")                           # preset=..., or an exported .onnx file
    run = detcli.train("nanodet-plus-m", "data.yaml", epochs=10)

Names are resolved on first use, so ``import detcli`` stays light (torch loads with the first model).
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_WHERE = {
    "load": "detcli.api.model", "Model": "detcli.api.model",
    "Result": "detcli.api.results",
    "train": "detcli.api.train", "TrainRun": "detcli.api.train",
    "HookBase": "detcli.engine.hooks.base", "TrainState": "detcli.engine.hooks.base",
    "RunSpec": "detcli.run_spec",
    "Predictor": "detcli.inference.predictor",
    "PostprocessConfig": "detcli.postprocess",
    "Detections": "detcli.structures",
    "EvalResult": "detcli.evaluation.evaluator",
    "DetcliError": "detcli.errors",
}

if TYPE_CHECKING:
    from detcli.api.model import Model, load
    from detcli.api.results import Result
    from detcli.api.train import TrainRun, train
    from detcli.engine.hooks.base import HookBase, TrainState
    from detcli.errors import DetcliError
    from detcli.evaluation.evaluator import EvalResult
    from detcli.inference.predictor import Predictor
    from detcli.postprocess import PostprocessConfig
    from detcli.run_spec import RunSpec
    from detcli.structures import Detections


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'detcli.api' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_WHERE])


__all__ = ["DetcliError", "Detections", "EvalResult", "HookBase", "Model", "PostprocessConfig", "Predictor",
           "Result", "RunSpec", "TrainRun", "TrainState", "load", "train"]  # = sorted(_WHERE)
