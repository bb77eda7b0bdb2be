"""Checkpoints: atomic writes, safe reads (``weights_only``), the ``detcli-1`` layout.

A ``detcli-1`` checkpoint is a dict of tensors, dicts, lists, strings and numbers only:

    format        "detcli-1"
    epoch         epochs completed (training resumes at this 0-indexed epoch)
    model         state dict of the trained model (``best.pt``: the EMA weights when there is an EMA)
    ema           ModelEMA.state_dict() or None (``best.pt``: None, the EMA already is ``model``)
    optimizer     optimizer state dict (None in ``best.pt``)
    scaler        GradScaler state dict (None in ``best.pt``)
    schedule_state LRSchedule.state_dict()
    best_map      best metrics/AP50-95 so far (-1.0 before any validation)
    metrics       the last validation (EvalResult.to_dict()) or None
    train_time    seconds of training so far
    preset        Preset.model_dump(mode="json") with the train section actually used
    class_names, cat_ids, dataset (ann files, image dirs, fingerprint, config), rng, train_args, versions
"""
from __future__ import annotations

import pickle
import platform
import types
from pathlib import Path
from typing import Any

import torch

from detcli.errors import DetcliError
from detcli.fileio import atomic_write

FORMAT = "detcli-1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (:func:`detcli.fileio.atomic_write`).

    A crash or an error mid-write leaves the previous file at ``path`` untouched and no temporary behind;
    a folder that cannot be written raises :class:`DetcliError` naming the file.
    """
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``detcli-1`` checkpoint with ``torch.load(weights_only=True)``.

    Raises:
        DetcliError: the file is missing, truncated/corrupt, or not a detcli checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise DetcliError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # corrupt zip, truncated file, pickle with code in it, ...
        raise DetcliError(
            f"{path}: not a readable detcli checkpoint ({_first_line(e)}). "
            "The file may be truncated or corrupt, or written by another tool."
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise DetcliError(
            f"{path}: not a detcli checkpoint (format {found!r}, expected {FORMAT!r}); "
            "official NanoDet/MMDetection weights are read with --weights and --preset"
        )
    return payload


def read_any_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read any torch checkpoint (detcli, Lightning, MMEngine, plain state dict) without running its code.

    Tries ``weights_only=True``; when the file names other classes (a Lightning ``hyper_parameters``
    config, MMEngine ``message_hub`` objects…), reads it again with a restricted unpickler: tensors,
    containers and NumPy arrays come back intact, every other class or function the file names becomes an
    inert :class:`OpaqueObject` that only keeps its arguments and state, so no code from the file runs.
    """
    path = Path(path)
    if not path.is_file():
        raise DetcliError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception:
        pass
    try:
        return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_restricted_pickle)
    except Exception as e:
        raise DetcliError(f"{path}: not a readable checkpoint ({_first_line(e)})") from None


class OpaqueObject(dict):
    """Stands for an object of a class that a checkpoint names but detcli does not import.

    A dict (so dict subclasses such as yacs' ``CfgNode`` keep their items) that also records its
    constructor arguments (``args``, ``kwargs``), its pickled state (``state``) and appended ``items``.
    """

    args: tuple = ()
    kwargs: dict = {}
    state: Any = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    @property
    def items_list(self) -> list:
        return self.__dict__.setdefault("_items", [])

    def append(self, item: Any) -> None:
        self.items_list.append(item)

    def extend(self, items: Any) -> None:
        self.items_list.extend(items)


# Globals a checkpoint may use that only rebuild data (tensors, containers, NumPy arrays).
_SAFE_GLOBALS = {
    "collections.OrderedDict", "collections.defaultdict", "builtins.set", "builtins.frozenset",
    "builtins.bytearray", "builtins.complex", "builtins.slice", "builtins.range", "_codecs.encode",
    "torch.Size", "torch.Tensor", "torch.nn.parameter.Parameter", "torch._tensor._rebuild_from_type_v2",
    "torch._utils._rebuild_tensor", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor_v3",
    "torch._utils._rebuild_parameter", "torch._utils._rebuild_parameter_with_state",
    "torch._utils._rebuild_device_tensor_from_numpy", "torch._utils._rebuild_device_tensor_from_cpu_tensor",
    "torch.device", "torch.float32", "torch.float16", "torch.bfloat16", "torch.float64", "torch.int64",
    "torch.int32", "torch.int16", "torch.int8", "torch.uint8", "torch.bool",
    "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct",
    "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar", "numpy.ndarray", "numpy.dtype",
}
_STAND_INS: dict[str, type] = {}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        qualified = f"{module}.{name}"
        if qualified in _SAFE_GLOBALS or module == "numpy.dtypes":
            return super().find_class(module, name)
        if qualified not in _STAND_INS:
            _STAND_INS[qualified] = type(name, (OpaqueObject,), {"__module__": module})
        return _STAND_INS[qualified]


_restricted_pickle = types.SimpleNamespace(
    __name__="detcli_restricted_pickle",
    Unpickler=_RestrictedUnpickler,
    load=lambda f, **kw: _RestrictedUnpickler(f, **kw).load(),
)


def inference_weights(ckpt: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to run: the EMA when the checkpoint has one (``last.pt``), else ``model``."""
    ema = ckpt.get("ema")
    return ema["module"] if ema else ckpt["model"]


def versions() -> dict[str, str | None]:
    """Versions recorded in checkpoints and the run manifest."""
    import torchvision

    from detcli import __version__

    found = {
        "detcli": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,  # a TorchVersion (str subclass): made a plain str below for weights_only
        "torchvision": torchvision.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }
    return {k: (None if v is None else str(v)) for k, v in found.items()}


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


__all__ = [
    "FORMAT",
    "save_checkpoint",
    "load_checkpoint",
    "read_any_checkpoint",
    "inference_weights",
    "versions",
    "OpaqueObject",
]
