"""Training from Python: ``detcli.api.train.train("nanodet-plus-m", "data.yaml", epochs=10)`` → :class:`TrainRun`.

The same run as ``detcli train`` (which calls :func:`train_request`): the same validated presets, ``--set``-style
``overrides``, run folder (``weights/best.pt``, ``weights/last.pt``, ``results.csv``, plots, ``run.json``) and
resume rules. Errors are :class:`~detcli.errors.DetcliError` with the CLI's messages, never ``SystemExit``; Ctrl-C
is :class:`~detcli.interrupt.TrainingInterrupted` (it names the run folder and how to continue). ``hooks`` adds
your own :class:`~detcli.engine.hooks.HookBase` instances to the training loop::

    from detcli.api.train import train
    from detcli.engine.hooks import HookBase

    class PrintAP(HookBase):
        def after_epoch(self, trainer):
            if trainer.state.result is not None:
                print(trainer.state.epoch + 1, trainer.state.result.stats["AP50-95"])

    run = train("nanodet-plus-m", "data.yaml", epochs=10, tensorboard=True, hooks=[PrintAP()])
    run.best, run.metrics["best/AP50-95"]
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detcli.app.train import TrainRequest
    from detcli.config.schema import Preset
    from detcli.engine.hooks import HookBase


@dataclass(frozen=True)
class TrainRun:
    """What a finished run left.

    Attributes:
        run_dir: the run folder.
        best: ``weights/best.pt`` (the weights of the best validation AP50-95), None when no validation gave one.
        last: ``weights/last.pt`` (the resumable state of the last epoch).
        metrics: the final row: the last epoch's ``results.csv`` values (``train/<loss>``, ``lr/pg0``,
            ``metrics/AP50-95`` …), ``best/AP50-95``, ``best/epoch``, ``stopped_early``.
    """

    run_dir: Path
    best: Path | None
    last: Path
    metrics: dict[str, Any]


def train(
    preset: str | Path | Preset | None = None,
    data: str | Path | None = None,
    *,
    epochs: int | None = None,
    batch: int | None = None,
    imgsz: int | None = None,
    overrides: Sequence[str] = (),
    device: str | None = None,
    workers: int | None = None,
    project: str | Path = "runs/train",
    name: str = "train",
    exist_ok: bool = False,
    weights: str | Path | None = None,
    seed: int = 0,
    amp: bool | None = None,
    patience: int | None = None,
    tensorboard: bool | None = None,
    resume: str | Path | None = None,
    hooks: Sequence[HookBase] = (),
    quiet: bool = False,
) -> TrainRun:
    """Train a detector; the arguments are those of ``detcli train`` (``detcli train --help``).

    Args:
        preset: a built-in preset name, a preset YAML file, or a validated :class:`~detcli.config.schema.Preset`.
        data: a dataset YAML or folder; None or ``"demo"``: the built-in demo dataset with the preset's demo
            schedule.
        overrides: ``path.to.field=value`` texts, as ``--set``.
        tensorboard: log to ``<run_dir>/tensorboard/`` (None: the preset's ``train.tensorboard``); needs
            ``pip install "detcli[tensorboard]"``.
        resume: ``"latest"``, a run folder or its ``last.pt`` (``preset``, ``data`` … are then the run's own).
        hooks: extra training hooks, run after the default ones in every training process.
        quiet: no console output.
    """
    from detcli.app.train import TrainRequest
    from detcli.errors import DetcliError

    if preset is None and resume is None:
        raise DetcliError("give a preset (a built-in name, a preset YAML or a Preset) or resume=")
    preset = str(preset) if isinstance(preset, Path) else preset
    if isinstance(preset, str) and resume is None:
        from detcli.app import preflight

        preflight.check_preset(preset, list(overrides))
    req = TrainRequest(
        preset=preset, data=None if data is None else str(data), epochs=epochs, batch=batch, imgsz=imgsz,
        device=device, workers=workers, project=Path(project), name=name, exist_ok=exist_ok,
        resume=None if resume is None else str(resume), weights=None if weights is None else Path(weights),
        seed=seed, amp=amp, patience=patience, tensorboard=tensorboard, overrides=list(overrides),
        argv=list(sys.argv), force_plain=True if quiet else None,
    )
    return train_request(req, hooks, quiet=quiet)


def train_request(req: TrainRequest, hooks: Sequence[HookBase] = (), quiet: bool = False) -> TrainRun:
    """Run a parsed ``detcli train`` request (the CLI's entry): the :class:`TrainRun` it left."""
    import contextlib
    import io

    from detcli.app.train import train_command
    from detcli.errors import DetcliError

    out = io.StringIO()
    with contextlib.redirect_stdout(out) if quiet else contextlib.nullcontext():
        row = train_command(req, list(hooks))
    if not row or "run_dir" not in row:
        raise DetcliError("the training processes ended without a final row (metrics.json): see their output")
    run_dir = Path(row["run_dir"])
    best = run_dir / "weights" / "best.pt"
    return TrainRun(run_dir, best if best.is_file() else None, run_dir / "weights" / "last.pt", dict(row))


__all__ = ["TrainRun", "train", "train_request"]
