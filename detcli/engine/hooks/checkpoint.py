"""``last.pt`` after every epoch and ``best.pt`` when the AP50-95 improves, each written atomically.

``best.pt`` is written before ``last.pt``, so the best AP that ``last.pt`` records is always held by ``best.pt``
(stopped between the two writes, ``best.pt`` is one epoch ahead; the resumed run repeats that epoch). A file that
cannot be written stops the run with what the folder keeps and the ``--resume`` command.
"""
from __future__ import annotations

from typing import Any

from detcli.checkpoints.io import FORMAT, save_checkpoint, versions
from detcli.engine.hooks.base import HookBase
from detcli.engine.resume import gather
from detcli.engine.run_dir import now_iso, resolved_preset, resumable
from detcli.engine.seed import get_rng_state
from detcli.engine.train_data import loader_generators
from detcli.errors import DetcliError, WriteError


class Checkpointer(HookBase):
    """Saves the epoch's checkpoints on rank 0 (every rank takes part in gathering the random states)."""

    def after_epoch(self, trainer: Any) -> None:
        s = trainer.state
        rng = gather(get_rng_state(loader_generators(trainer.train_loader)))  # a collective: every rank
        if trainer.rank != 0:
            return
        done, best_written = s.epoch + 1, False
        try:
            payload = checkpoint_payload(trainer, done, rng, s.result)
            if s.improved:  # first: the best AP that last.pt records must already be in best.pt
                save_checkpoint(trainer.best_path, best_payload(trainer, payload))
                best_written = True
            save_checkpoint(trainer.last_path, payload)
        except WriteError as e:  # a full disk, a folder made read-only: the previous files are intact
            stopped = f"Training stopped at epoch {done}/{trainer.cfg.epochs}: {kept(trainer, s.epoch, best_written)}"
            raise write_failed(trainer, e, stopped) from None


def checkpoint_payload(trainer: Any, epochs_done: int, rng: list[dict], result: Any) -> dict[str, Any]:
    """The :class:`~detcli.checkpoints.record.RunRecord` layout of ``last.pt`` after ``epochs_done`` epochs."""
    s = trainer.state
    return {
        "format": FORMAT,
        "epoch": epochs_done,
        "model": trainer.model.state_dict(),
        "ema": trainer.ema.state_dict() if trainer.ema is not None else None,
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict() if trainer.scaler.is_enabled() else None,
        "schedule_state": trainer.schedule.state_dict(),
        "best_map": float(s.best_map),
        "early_stopping": {"best_epoch": s.best_epoch, "stale": s.stale_validations, "stopped": s.stopped_early},
        "metrics": result.to_dict() if result is not None else None,
        "train_time": float(s.train_time),
        "preset": resolved_preset(trainer.spec.preset, trainer.cfg),
        **trainer.spec.record_fields(),  # input_size [w, h] trained at, class_names, cat_ids, dataset
        "rng": {"per_rank": rng},
        "train_args": trainer.train_args,
        "versions": versions(),
        "date": now_iso(),
    }


def best_payload(trainer: Any, payload: dict[str, Any]) -> dict[str, Any]:
    """``best.pt``: the weights to run (EMA when present) as ``model``; no optimizer, no EMA copy."""
    weights = trainer.ema.module.state_dict() if trainer.ema is not None else payload["model"]
    return {**payload, "model": weights, "ema": None, "optimizer": None, "scaler": None, "rng": None}


def kept(trainer: Any, epoch: int, best_written: bool = False) -> str:
    """What the run folder holds when epoch ``epoch`` (0-indexed) did not finish saving."""
    last, best = trainer.last_path, trainer.best_path
    if not best_written:
        if not last.exists():
            return "no checkpoint was written"
        return f"{last} still holds epoch {epoch} and best.pt is unchanged"
    held = f"{last} still holds epoch {epoch}" if last.exists() else "no last.pt was written"
    return f"{best} holds epoch {epoch + 1} (the best so far), {held}"


def write_failed(trainer: Any, error: DetcliError, kept_note: str) -> WriteError:
    """``error`` (a file not written: full disk, read-only folder) with what the run folder holds and, when
    ``--resume`` can continue from it, the command."""
    resume = (f"; fix that and continue with: detcli train --resume {trainer.run_dir}"
              if resumable(trainer.run_dir) else "")
    return WriteError(f"{error}. {kept_note}{resume}")


__all__ = ["Checkpointer", "checkpoint_payload", "best_payload", "kept", "write_failed"]
