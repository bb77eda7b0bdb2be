"""Checkpoints: atomic writes, safe reads, the ``detcli-1`` layout.

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

Reading never runs code from a file. Every read is ``torch.load(weights_only=True)``, which rebuilds
tensors and plain containers only; official checkpoints may also name the exact classes listed in
:func:`official_globals` (config dicts, MMEngine's log buffers, NumPy arrays), read as inert data. A
TorchScript archive is refused before ``torch.load`` sees it (loading one runs its program), and a file
that names any other class or function is refused with :class:`CheckpointRefused`.
"""
from __future__ import annotations

import functools
import io
import pickle
import pickletools
import platform
import re
import textwrap
import types
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from detcli.errors import DetcliError
from detcli.fileio import atomic_write

FORMAT = "detcli-1"


class CheckpointRefused(DetcliError):
    """A checkpoint that contains code (a pickled call or class detcli does not allow, or TorchScript)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (:func:`detcli.fileio.atomic_write`).

    A crash or an error mid-write leaves the previous file at ``path`` untouched and no temporary behind;
    a folder that cannot be written raises :class:`DetcliError` naming the file.
    """
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a ``detcli-1`` checkpoint (plain ``weights_only``: no class beyond torch's own is allowed).

    Raises:
        DetcliError: the file is missing, truncated/corrupt, or not a detcli checkpoint.
        CheckpointRefused: the file contains code.
    """
    path = Path(path)
    payload = _safe_load(path, map_location, allowed=())
    if not is_detcli_checkpoint(payload, path):
        found = type(payload).__name__ if not isinstance(payload, dict) else "no 'format' key"
        raise DetcliError(
            f"{path}: not a detcli checkpoint ({found}, expected format {FORMAT!r}); "
            "official NanoDet/MMDetection weights are read with --weights and --preset"
        )
    return payload


def read_any_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """Read a detcli or an official checkpoint (Lightning ``.ckpt``, NanoDet ``.pth``, MMDetection ``.pth``,
    a plain state dict) without running any of its code.

    Raises:
        DetcliError: the file is missing, truncated or corrupt.
        CheckpointRefused: the file contains code (see the module docstring); nothing from it has run.
    """
    return _safe_load(Path(path), map_location, allowed=official_globals())


def is_detcli_checkpoint(raw: Any, path: Path) -> bool:
    """True for a ``detcli-1`` dict, False for anything without a ``format`` key (an official checkpoint).

    Raises:
        DetcliError: a ``format`` that is not ``detcli-1`` (another version, or not a string at all).
    """
    if not isinstance(raw, Mapping) or "format" not in raw:
        return False
    found = raw["format"]
    if found != FORMAT:
        kind = "" if isinstance(found, str) else f" (a {type(found).__name__}, not a string)"
        raise DetcliError(f"{path}: unknown checkpoint format {found!r}{kind}; detcli reads {FORMAT!r}")
    return True


def require_keys(ckpt: Mapping[str, Any], path: Path, keys: Iterable[str]) -> None:
    """Raise :class:`DetcliError` naming the keys of ``keys`` that the detcli checkpoint lacks."""
    missing = [k for k in keys if ckpt.get(k) is None]
    if missing:
        raise DetcliError(
            f"{path}: detcli checkpoint without {', '.join(repr(k) for k in missing)} "
            "(an incomplete or edited file); use a best.pt or last.pt written by detcli train"
        )


def inference_weights(ckpt: Mapping[str, Any], path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights to run: the EMA when the checkpoint has one (``last.pt``), else ``model``."""
    from detcli.models.convert import tensor_state_dict

    ema = ckpt.get("ema")
    if ema:
        return tensor_state_dict(ema.get("module") if isinstance(ema, Mapping) else None, f"{path}: 'ema.module'")
    return tensor_state_dict(ckpt.get("model"), f"{path}: 'model'")


# ---------------------------------------------------------------------------------------- safe reading
class ForeignObject(types.SimpleNamespace):
    """Stand-in for an object of a training framework's class (MMEngine's ``HistoryBuffer``): it only
    holds the pickled attributes; none of the framework's code exists here."""


@functools.cache
def official_globals() -> tuple[tuple[Any, str], ...]:
    """``(stand-in, "module.QualName")`` pairs that official checkpoints may name, beyond torch's own.

    Exact names only (never attribute paths). Config dicts (yacs/NanoDet ``CfgNode``, Lightning
    ``AttributeDict``) read as ``OrderedDict``: torch's reader fills only exact dict types, and sets a
    node's pickled attributes (``__immutable__``…) as plain attributes. NumPy functions are the ones
    NumPy itself pickles arrays, dtypes and scalars with, under their NumPy 1 and NumPy 2 module names.
    """
    import numpy as np

    reconstruct = np.arange(1).__reduce__()[0]  # numpy(._)core.multiarray._reconstruct
    scalar = np.float64(0).__reduce__()[0]  # numpy(._)core.multiarray.scalar
    pairs: list[tuple[Any, str]] = [
        (OrderedDict, "yacs.config.CfgNode"),
        (OrderedDict, "nanodet.util.yacs.CfgNode"),
        (OrderedDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
        (OrderedDict, "lightning_fabric.utilities.data.AttributeDict"),
        (OrderedDict, "lightning.fabric.utilities.data.AttributeDict"),
        (ForeignObject, "mmengine.logging.history_buffer.HistoryBuffer"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
    ]
    for core in ("numpy.core", "numpy._core"):
        pairs += [(reconstruct, f"{core}.multiarray._reconstruct"), (scalar, f"{core}.multiarray.scalar")]
    # the class of each dtype instance (numpy.dtypes.Float64DType, …): torch rebuilds only allowed types
    for code in ("?", "b", "B", "h", "H", "i", "I", "l", "L", "q", "Q", "e", "f", "d", "g", "F", "D", "G",
                 "S", "U", "V", "O", "M8", "m8"):
        cls = type(np.dtype(code))
        pairs.append((cls, f"{cls.__module__}.{cls.__qualname__}"))
    return tuple(pairs)


def _safe_load(path: Path, map_location: Any, allowed: Iterable[tuple[Any, str]]) -> Any:
    if not path.is_file():
        raise DetcliError(f"checkpoint not found: {path}")
    if _is_torchscript(path):
        raise CheckpointRefused(
            f"{path}: refused because it contains code: it is a TorchScript archive (a program, not only "
            "weights); nothing in it was run. Give the checkpoint the model was exported from."
        )
    allowed = list(allowed)
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols and TorchScript
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        name = _refused_global(str(e)) or _first_unknown_global(path, {n for _, n in allowed})
        if name is not None:
            raise CheckpointRefused(
                f"{path}: refused because it contains code: it refers to {name}, which detcli never loads "
                "from a file; nothing in it was run. Checkpoints may hold only tensors and plain data "
                "(detcli, NanoDet and MMDetection weights do)."
            ) from None
        raise DetcliError(f"{path}: not a readable checkpoint ({_unpickler_reason(str(e))})") from None
    except Exception as e:  # corrupt zip, truncated file, not a torch file at all
        raise DetcliError(
            f"{path}: not a readable checkpoint ({_short(e)}). "
            "The file may be truncated or corrupt, or written by another tool."
        ) from None


def _is_torchscript(path: Path) -> bool:
    """A ``torch.jit.save`` archive: a zip whose records include ``constants.pkl`` or ``code/``."""
    try:
        if not zipfile.is_zipfile(path):
            return False
        with zipfile.ZipFile(path) as archive:
            records = [name.split("/", 1)[-1] for name in archive.namelist()]
    except (OSError, zipfile.BadZipFile):
        return False  # torch.load(weights_only=True) refuses TorchScript too; this only gives the message
    return "constants.pkl" in records or any(r.startswith("code/") for r in records)


def _refused_global(message: str) -> str | None:
    """The global torch's ``weights_only`` reader names in its refusal, if any."""
    found = re.search(r"GLOBAL (\S+) (?:was not an allowed global|whose module)", message)
    return found.group(1) if found else None


def _first_unknown_global(path: Path, allowed: set[str]) -> str | None:
    """First global the file's pickle names that is neither torch's nor in ``allowed``.

    For the refusals torch does not name a global in: pickle protocol 4+ (``STACK_GLOBAL``) files,
    which torch's reader stops at before reading any name. Parsed with pickletools; nothing is run.
    """
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        allowed = allowed | set(_get_allowed_globals())
    except ImportError:  # a private torch helper: without it every global counts as unknown
        pass
    for name in _globals_in(_pickle_bytes(path)):
        if name not in allowed:
            return name
    return None


def _pickle_bytes(path: Path) -> bytes:
    """The pickle of a checkpoint: ``*/data.pkl`` of a zip checkpoint, else the (legacy) file itself."""
    try:
        with zipfile.ZipFile(path) as archive:
            pkl = next(n for n in archive.namelist() if n.endswith("/data.pkl"))
            return archive.read(pkl)
    except (zipfile.BadZipFile, StopIteration, OSError):
        return path.read_bytes()


_PUSH_NOTHING = {"MEMOIZE", "PUT", "BINPUT", "LONG_BINPUT", "FRAME", "PROTO", "STOP", "MARK"}


def _globals_in(data: bytes, max_pickles: int = 5) -> list[str]:
    """Every ``module.name`` the pickles in ``data`` refer to (GLOBAL, INST, STACK_GLOBAL), in order.

    Legacy torch files hold several pickles back to back, then raw storage bytes (where parsing stops).
    For STACK_GLOBAL the two strings pushed last are taken, following memo gets.
    """
    names: list[str] = []
    stream = io.BytesIO(data)
    for _ in range(max_pickles):
        memo: dict[Any, Any] = {}
        recent: list[Any] = [None, None]  # the two values pushed last (strings, else None)
        try:
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    names.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL":
                    names.append(f"{recent[-2]}.{recent[-1]}")
                if op.name == "MEMOIZE":
                    memo[len(memo)] = recent[-1]
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[arg] = recent[-1]
                elif op.name not in _PUSH_NOTHING:
                    value = memo.get(arg) if op.name.endswith("GET") else arg if isinstance(arg, str) else None
                    recent = [recent[-1], value]
        except Exception:  # the raw bytes after a legacy file's pickles, or a damaged pickle
            break
        if stream.tell() >= len(data):
            break
    return names


def _unpickler_reason(message: str) -> str:
    """torch's own reason in a ``weights_only`` error, without its advice around it."""
    parts = [p.strip() for p in message.split("\n\n") if p.strip()]
    inner = [p for p in parts if not p.startswith(("Weights only load failed", "Check the documentation"))]
    reason = inner[0] if inner else "unsupported pickle content"
    if "Unsupported operand" in reason:
        reason += ": not a torch checkpoint, a damaged one, or one pickled with a newer protocol than torch.save uses"
    return _short(reason)


def _short(e: BaseException | str, width: int = 300) -> str:
    """A one-paragraph message cut at a word boundary."""
    text = str(e).strip() or type(e).__name__
    return textwrap.shorten(" ".join(text.split()), width=width, placeholder=" …")


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


__all__ = [
    "FORMAT",
    "CheckpointRefused",
    "ForeignObject",
    "save_checkpoint",
    "load_checkpoint",
    "read_any_checkpoint",
    "is_detcli_checkpoint",
    "require_keys",
    "inference_weights",
    "official_globals",
    "versions",
]
