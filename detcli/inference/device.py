"""``--device`` parsed (:func:`parse_device`, also for training's processes) and the one device a single-process
command (eval, predict, export, inspect-anchors) or a loaded model runs on (:func:`select_device`)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from detcli.errors import DetcliError

if TYPE_CHECKING:  # torch loads when a device is chosen: a command reports bad input before that
    import torch


def parse_device(spec: str | None) -> tuple[str, list[int]]:
    """``"cpu"`` → ("cpu", []); ``"0"``/``"cuda:0"``/``"cuda"`` → ("cuda", [0]); ``"0,1"`` → ("cuda", [0, 1]);
    ``"mps"`` → ("mps", []); ``""``/None → GPU 0 when CUDA is available, else CPU.

    Raises:
        DetcliError: malformed spec, CUDA or MPS unavailable, or an id beyond the visible devices.
    """
    import torch

    text = (spec or "").strip().lower()
    if text == "":
        return ("cuda", [0]) if torch.cuda.is_available() else ("cpu", [])
    if text == "cpu":
        return text, []
    if text == "mps":
        if not torch.backends.mps.is_available():
            built = "not built with MPS" if not torch.backends.mps.is_built() else "no MPS device on this machine"
            raise DetcliError(f"--device mps: Apple's MPS is not available (torch {torch.__version__}: {built}); "
                              f"use --device {'0' if torch.cuda.is_available() else 'cpu'}")
        return text, []
    body = text.removeprefix("cuda").removeprefix(":") or "0"
    parts = [p.strip() for p in body.split(",")]
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise DetcliError(f"--device {spec!r}: expected cpu, mps, a GPU id (0, cuda:0) or GPU ids (0,1)")
    ids = [int(p) for p in parts]
    if len(set(ids)) != len(ids):
        raise DetcliError(f"--device {spec!r}: a device is listed twice")
    if not torch.cuda.is_available():
        raise DetcliError(
            f"--device {spec}: CUDA is not available (torch {torch.__version__}, CUDA build "
            f"{torch.version.cuda or 'none'}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if max(ids) >= count:
        raise DetcliError(f"--device {spec}: only {count} CUDA device(s) visible (ids 0..{count - 1})")
    return "cuda", ids


def select_device(spec: str | None) -> torch.device:
    """'cpu', '0', 'cuda:0' or None (GPU 0 when there is one) → the device of a single-process command.

    Raises:
        DetcliError: an unknown or unavailable device, or several ids (eval and predict run on one device).
    """
    import torch

    device_type, ids = parse_device(spec)
    if len(ids) > 1:
        raise DetcliError(f"--device {spec}: eval and predict run on one device; give one id")
    return torch.device(device_type, ids[0]) if device_type == "cuda" else torch.device(device_type)


__all__ = ["parse_device", "select_device"]
