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
:func:`official_globals` (config dicts, MMEngine's log buffers, NumPy arrays), read as inert data: NumPy's
names are bound to stand-ins that build plain numeric arrays, dtypes and scalars only
(:mod:`detcli.checkpoints.safe_numpy`). A TorchScript archive is refused before ``torch.load`` sees it (loading one
runs its program), and a file that names any other class or function is refused with :class:`CheckpointRefused`.
Around the read (:mod:`detcli.checkpoints.checks`): a zip whose records declare more than a bounded
multiple of the file's size is refused before anything is read (a zip bomb), and a loaded object nested too
deeply, holding itself, or sharing containers into a pickle bomb is refused. A ``detcli-1`` file is then
validated once, as a :class:`~detcli.checkpoints.record.RunRecord` (:func:`read_any_checkpoint` returns it).
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from detcli.checkpoints.record import FORMAT, RunRecord
from detcli.errors import DetcliError
from detcli.fileio import atomic_write




class CheckpointRefused(DetcliError):
    """A checkpoint that contains code (a pickled call or class detcli does not allow, or TorchScript)."""


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically (:func:`detcli.fileio.atomic_write`).

    A crash or an error mid-write leaves the previous file at ``path`` untouched and no temporary behind;
    a folder that cannot be written raises :class:`DetcliError` naming the file.
    """
    return atomic_write(path, lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> RunRecord:
    """Read a ``detcli-1`` checkpoint as its validated :class:`~detcli.checkpoints.record.RunRecord`.

    Raises:
        DetcliError: the file is missing, truncated/corrupt, refused (see the module docstring), not a detcli
            checkpoint, or a field does not fit the record (the message names it).
        CheckpointRefused: the file contains code.
    """
    path = Path(path)
    found = read_any_checkpoint(path, map_location)
    if not is_detcli_checkpoint(found, path):
        kind = type(found).__name__ if not isinstance(found, dict) else "no 'format' key"
        raise DetcliError(
            f"{path}: not a detcli checkpoint ({kind}, expected format {FORMAT!r}); "
            "official NanoDet/MMDetection weights are read with --weights and --preset"
        )
    return found


def read_any_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> RunRecord | Any:
    """Read a detcli or an official checkpoint (Lightning ``.ckpt``, NanoDet ``.pth``, MMDetection ``.pth``,
    a plain state dict) without running any of its code.

    Returns:
        a ``detcli-1`` file as its validated :class:`~detcli.checkpoints.record.RunRecord`; any other file as
        torch read it (dicts, lists, tensors, the stand-ins of :func:`official_globals`).

    Raises:
        DetcliError: the file is missing, truncated, corrupt or refused, or a detcli file whose fields do not
            fit the record (naming the field).
        CheckpointRefused: the file contains code (see the module docstring); nothing from it has run.
    """

    path = Path(path)
    raw = _safe_load(path, map_location)
    return RunRecord.read(raw, path) if is_detcli_checkpoint(raw, path) else raw


def is_detcli_checkpoint(raw: Any, path: Path) -> bool:
    """True for a ``detcli-1`` dict or record, False for anything without a ``format`` key (an official checkpoint).

    Raises:
        DetcliError: a ``format`` that is not ``detcli-1`` (another version, or not a string at all).
    """

    if isinstance(raw, RunRecord):
        return True
    if not isinstance(raw, Mapping) or "format" not in raw:
        return False
    found = raw["format"]
    if found != FORMAT:
        kind = "" if isinstance(found, str) else f" (a {type(found).__name__}, not a string)"
        raise DetcliError(f"{path}: unknown checkpoint format {found!r}{kind}; detcli reads {FORMAT!r}")
    return True


def inference_weights(record: RunRecord, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights to run: the EMA when the checkpoint has one (``last.pt``), else ``model``
    (:meth:`RunRecord.weights_to_run <detcli.checkpoints.record.RunRecord.weights_to_run>`)."""
    return record.weights_to_run(path)


# ---------------------------------------------------------------------------------------- safe reading
class ForeignObject(types.SimpleNamespace):
    """Stand-in for an object of a training framework's class (MMEngine's ``HistoryBuffer``): it only
    holds the pickled attributes; none of the framework's code exists here."""


@functools.cache
def official_globals() -> tuple[tuple[Any, str], ...]:
    """``(stand-in, "module.QualName")`` pairs that official checkpoints may name, beyond torch's own.

    Exact names only (never attribute paths). Config dicts (yacs/NanoDet ``CfgNode``, Lightning
    ``AttributeDict``) read as ``OrderedDict``: torch's reader fills only exact dict types, and sets a
    node's pickled attributes (``__immutable__``…) as plain attributes. NumPy's names (the ones NumPy pickles
    arrays, dtypes and scalars with) are bound to detcli's checking stand-ins, never to NumPy's own functions.
    """
    from detcli.checkpoints.safe_numpy import numpy_globals

    pairs: list[tuple[Any, str]] = [
        (OrderedDict, "yacs.config.CfgNode"),
        (OrderedDict, "nanodet.util.yacs.CfgNode"),
        (OrderedDict, "pytorch_lightning.utilities.parsing.AttributeDict"),
        (OrderedDict, "lightning_fabric.utilities.data.AttributeDict"),
        (OrderedDict, "lightning.fabric.utilities.data.AttributeDict"),
        (ForeignObject, "mmengine.logging.history_buffer.HistoryBuffer"),
        *numpy_globals(),
    ]
    return tuple(pairs)


def _safe_load(path: Path, map_location: Any) -> Any:
    """``torch.load(weights_only=True)`` with :func:`official_globals`, between the checks of
    :mod:`detcli.checkpoints.checks`."""
    from detcli.checkpoints.checks import finish_loaded, zip_records
    from detcli.checkpoints.safe_numpy import NumpyRefused

    if not path.is_file():
        raise DetcliError(f"checkpoint not found: {path}")
    records = zip_records(path)  # a zip bomb is refused here, before any record is read
    if records is not None and _is_torchscript(records):
        raise CheckpointRefused(
            f"{path}: refused because it contains code: it is a TorchScript archive (a program, not only "
            "weights); nothing in it was run. Give the checkpoint the model was exported from."
        )
    allowed = list(official_globals())
    try:
        with warnings.catch_warnings(), torch.serialization.safe_globals(allowed):
            warnings.simplefilter("ignore")  # torch's notes on pickle protocols and TorchScript
            loaded = torch.load(path, map_location=map_location, weights_only=True)
    except NumpyRefused as e:
        raise DetcliError(f"{path}: refused: it holds {e}. Nothing from it was used.") from None
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
            f"{path}: not a readable checkpoint ({_reason(e)}). "
            "The file may be truncated or corrupt, or written by another tool."
        ) from None
    return finish_loaded(loaded, path)


def _is_torchscript(records: list[str]) -> bool:
    """A ``torch.jit.save`` archive: a zip whose records include ``constants.pkl`` or ``code/``.

    torch.load(weights_only=True) refuses TorchScript too; this gives the message."""
    inner = [name.split("/", 1)[-1] for name in records]
    return "constants.pkl" in inner or any(r.startswith("code/") for r in inner)


def _reason(e: BaseException) -> str:
    """Why torch could not read a file, in words: an exception whose text is only a number or empty (a
    ``KeyError: 101`` for a pickle that refers to a memo entry it never stored) is named by its kind."""
    text = _short(e)
    if re.search(r"[A-Za-z]{3}", text) and text != type(e).__name__:
        return text
    kind = {KeyError: "refers to data it never stored", EOFError: "ends too early",
            IndexError: "takes more values than it pushed"}.get(type(e), "cannot be parsed")
    detail = "" if text == type(e).__name__ else f": {type(e).__name__} {text}"
    return f"its pickled data {kind}{detail}"


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
    "inference_weights",
    "official_globals",
    "versions",
]
