"""The run folder's pictures (:class:`detcli.plots.training.TrainingPlots`, imported when the run starts: the
engine itself does not import :mod:`detcli.plots`). Drawn on rank 0; a failed picture never stops the run."""
from __future__ import annotations

from typing import Any

from detcli.engine.hooks.base import HookBase


class PlotsHook(HookBase):
    """``labels.jpg`` (a new run), ``train_batch0..2.jpg`` (the first steps), ``results.png`` (every epoch), and
    the curves and confusion matrix of the last validation at the end."""

    def __init__(self) -> None:
        self.plots: Any = None  # TrainingPlots on rank 0
        self.batches = 0
        self.written: list = []  # the pictures of the last validation (after_train)

    def before_train(self, trainer: Any) -> None:
        if trainer.rank != 0:
            return
        from detcli.plots.training import TRAIN_BATCHES, TrainingPlots

        self.batches = TRAIN_BATCHES
        self.plots = TrainingPlots(trainer.run_dir, trainer.spec.preset.input, trainer.class_names, trainer.reporter)
        if trainer.resume_from is None:
            self.plots.labels(trainer.train_loader.dataset)

    def before_step(self, trainer: Any) -> None:
        s = trainer.state
        if self.plots is not None and s.epoch == 0 and s.iteration < self.batches:
            self.plots.train_batch(s.batch, s.iteration)

    def after_epoch(self, trainer: Any) -> None:
        if self.plots is not None:
            self.plots.results(trainer.results)

    def after_train(self, trainer: Any) -> None:
        s = trainer.state
        if self.plots is None or s.last_result is None:
            return
        self.written = self.plots.validation(s.last_result)
        if self.written:
            epoch, best = s.last_result_epoch, s.best_epoch
            weights = "EMA" if trainer.ema is not None else "model"
            which = ("the weights of best.pt" if best == epoch
                     else f"best.pt holds epoch {best}" if best > 0 else "no best.pt")
            trainer.reporter.info(
                f"validation plots from the last validation, epoch {epoch} ({weights} weights; {which}): "
                + ", ".join(p.name for p in self.written)
            )
        trainer.reporter.info(f"plots drawn in {self.plots.seconds:.1f} s in all")


__all__ = ["PlotsHook"]
