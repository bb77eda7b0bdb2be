"""What a command checks before torch, torchvision and OpenCV are imported.

Those imports take seconds (tens of seconds on a loaded machine). A misspelt preset or ``--set`` field, a
missing dataset file, checkpoint or predict source is therefore checked first, with the YAML/pydantic side
of detcli only, and reported at once (exit 2). ``tests/e2e/test_cli_late_imports.py`` holds every command to it:
none of the checks here may import torch, torchvision or cv2, and neither may the modules they live in.
"""
from __future__ import annotations

from pathlib import Path

from detcli.errors import DetcliError


def check_preset(preset: str, overrides: list[str]) -> None:
    """The preset resolves (a built-in name or a YAML file) and validates with ``overrides`` applied."""
    from detcli.config.loader import load_preset

    load_preset(preset, overrides)


def resolve_data(data: str | None):
    """The dataset ``--data`` names, resolved and checked (:func:`~detcli.data.dataset_config.resolve_dataset`);
    None without ``--data`` or for ``demo`` (the demo data is made, if need be, by the command itself)."""
    if not data or data == "demo":
        return None
    from detcli.data.dataset_config import resolve_dataset

    return resolve_dataset(data)


def check_weights(weights: Path | None, default_latest: bool = True) -> None:
    """``--weights`` is a regular file (it is not read here). Without one, a command that defaults to the latest
    run's ``best.pt`` (``default_latest``) needs such a run: :func:`~detcli.inference.loading.latest_best`."""
    if weights is None:
        if default_latest:
            from detcli.inference.loading import latest_best

            latest_best()
        return
    path = Path(weights)
    if not path.is_file():
        what = "not a regular file" if path.exists() else "no such file"
        raise DetcliError(f"--weights {path}: {what}")


def check_source(source: str) -> list[str]:
    """The files ``detcli predict SOURCE`` names (:func:`detcli.sources.resolve_source`)."""
    from detcli.sources import resolve_source

    return resolve_source(source)


__all__ = ["check_preset", "check_source", "check_weights", "resolve_data"]
