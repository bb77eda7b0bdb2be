"""Ctrl-C (SIGINT): what detcli tells the user, and what to do next.

Typer turns a ``KeyboardInterrupt`` raised inside a command into a silent exit 130, so detcli re-raises it as
:class:`Interrupted` (an ordinary exception the CLI framework lets through) where it knows more: the train
command as :class:`TrainingInterrupted`, which names the run folder and the command that continues it.
:func:`detcli.cli.main` prints ``str(exc)`` on stderr and exits 130, as a shell expects of SIGINT.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

EXIT_CODE = 130  # 128 + SIGINT


class Interrupted(Exception):
    """The user pressed Ctrl-C; ``str()`` says what was kept."""

    def __init__(self, message: str = "files already written are intact"):
        super().__init__(message)


class TrainingInterrupted(Interrupted):
    """Ctrl-C during a training run in ``run_dir``; started by ``argv`` (``sys.argv`` of the run)."""

    def __init__(self, run_dir: Path, argv: Sequence[str] = ()):
        self.run_dir, self.argv = Path(run_dir), list(argv)
        super().__init__(training_interrupted_message(self.run_dir, self.argv))


def training_interrupted_message(run_dir: Path, argv: Sequence[str]) -> str:
    """The epoch in progress is lost; the checkpoints already written are intact; how to go on.

    ``--resume`` continues from ``weights/last.pt``, or restarts from epoch 1 with the settings of the run's
    start record (``run.json``) when no epoch was saved yet (:func:`detcli.engine.run_dir.resumable`).
    """
    from detcli.engine.run_dir import resumable  # pydantic and the preset schema: only once it is needed

    last = run_dir / "weights" / "last.pt"
    resume = f"detcli train --resume {shlex.quote(str(run_dir))}"
    if last.is_file():
        return (f"training stopped; the epoch in progress is lost, the checkpoints already written are intact "
                f"({last}). Continue the run with: {resume}")
    if resumable(run_dir):
        return (f"training stopped before its first checkpoint ({run_dir} holds no weights/last.pt yet); the "
                f"run's settings are recorded, so it starts again from epoch 1 with: {resume}")
    again = f": detcli {shlex.join(argv[1:])}" if len(argv) > 1 else ""
    return (f"training stopped before its first checkpoint: {run_dir} holds no weights/last.pt, so there is "
            f"nothing to resume; start the run again{again}")


__all__ = ["EXIT_CODE", "Interrupted", "TrainingInterrupted", "training_interrupted_message"]
