"""What a training hook is, and the state of a run that hooks see (detectron2's ``HookBase`` is the model).

The :class:`~detcli.engine.trainer.Trainer` is a short step loop; everything around the steps (validation and
early stopping, checkpoints, run files, plots, the non-finite guard, console and TensorBoard logging) is a hook.
Hooks run in every process (a hook that writes files checks ``trainer.rank``); their order is the list's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detcli.evaluation.evaluator import EvalResult
    from detcli.structures import Batch


@dataclass
class TrainState:
    """Where a run is; hooks read it and the evaluation hook writes its part.

    Attributes:
        epoch: the epoch in progress (0-based); after the run, the last one run.
        iteration: the step in progress within the epoch (0-based).
        start_epoch: the first epoch this process runs (the resumed epoch, or 0).
        batch: the step's collated :class:`~detcli.structures.Batch`, on the CPU (set before ``before_step``).
        losses: the step's loss terms as floats (set before ``after_step``); ``total`` their sum.
        lr: the lr of the step (during the epoch) or of the epoch's last step (after it).
        epoch_losses: mean of each loss term over the epoch and all processes (set before ``after_epoch``).
        result: the epoch's :class:`~detcli.evaluation.evaluator.EvalResult` (None: no validation this epoch).
        improved: the epoch's validation raised ``best_map``.
        last_result / last_result_epoch: the latest validation of the run and its 1-based epoch.
        best_map / best_epoch: best AP50-95 so far (-1: none) and its 1-based epoch (0: none).
        stale_validations: validations since ``best_map`` last improved (``train.patience``).
        stopped_early: patience ran out; the loop stops after this epoch.
        train_time: seconds spent in training and validation, all epochs of the run (resumes included).
        row: the epoch's ``results.csv`` row (set by the run-files hook).
        summary: the final row :meth:`Trainer.fit` returns (set before ``after_train``).
    """

    epoch: int = 0
    iteration: int = 0
    start_epoch: int = 0
    batch: Batch | None = None
    losses: dict[str, float] = field(default_factory=dict)
    total: float = 0.0
    lr: float = 0.0
    epoch_losses: dict[str, float] = field(default_factory=dict)
    result: EvalResult | None = None
    improved: bool = False
    last_result: EvalResult | None = None
    last_result_epoch: int = 0
    best_map: float = -1.0
    best_epoch: int = 0
    stale_validations: int = 0
    stopped_early: bool = False
    train_time: float = 0.0
    row: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)


class HookBase:
    """A hook of the training loop: override the stages it needs; each gets the trainer (``trainer.state``).

    Stages, in order: ``before_train`` (after the model, optimizer and resumed state are set up), then per epoch
    ``before_epoch``, per step ``before_step`` / ``after_loss`` (before backward) / ``after_step``, ``after_epoch`` (after the epoch's training),
    and ``after_train`` once the loop ends (not after an error).
    """

    def before_train(self, trainer: Any) -> None:
        pass

    def before_epoch(self, trainer: Any) -> None:
        pass

    def before_step(self, trainer: Any) -> None:
        pass

    def after_loss(self, trainer: Any) -> None:
        """After the step's forward pass, before backward (``state.losses`` and ``state.total`` set)."""

    def after_step(self, trainer: Any) -> None:
        pass

    def after_epoch(self, trainer: Any) -> None:
        pass

    def after_train(self, trainer: Any) -> None:
        pass


__all__ = ["HookBase", "TrainState"]
