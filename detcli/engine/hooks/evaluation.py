"""Validation when due, the best AP50-95 so far, and early stopping (``train.patience``)."""
from __future__ import annotations

import math
import time
from typing import Any

from detcli.engine.hooks.base import HookBase


class EvalHook(HookBase):
    """After each epoch's training: :meth:`Trainer.validate` when :meth:`Trainer.validation_due`, then the best
    AP50-95 (``state.improved``: ``best.pt`` is written) and the count of validations without improvement."""

    def after_epoch(self, trainer: Any) -> None:
        s = trainer.state
        s.result = trainer.validate(s.epoch) if trainer._validation_due(s.epoch) else None
        done = s.epoch + 1
        ap = s.result.stats["AP50-95"] if s.result is not None else math.nan
        s.improved = s.result is not None and math.isfinite(ap) and ap > s.best_map
        if s.improved:
            s.best_map, s.best_epoch, s.stale_validations = ap, done, 0
        if s.result is not None:
            s.last_result, s.last_result_epoch = s.result, done
            s.stale_validations += 0 if s.improved else 1
            s.stopped_early = trainer.cfg.patience is not None and s.stale_validations >= trainer.cfg.patience


class EpochClock(HookBase):
    """Adds each epoch's training and validation time to ``state.train_time`` (after :class:`EvalHook`)."""

    def before_epoch(self, trainer: Any) -> None:
        self.started = time.monotonic()

    def after_epoch(self, trainer: Any) -> None:
        trainer.state.train_time += time.monotonic() - self.started


__all__ = ["EvalHook", "EpochClock"]
