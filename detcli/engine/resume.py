"""Continuing a run from its ``last.pt``: the training state restored and checked against this run, and the
random states of every process (with the collectives that gather them)."""
from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from detcli.distributed import is_dist, world_size
from detcli.checkpoints.record import RunRecord
from detcli.engine.seed import seed_everything, set_rng_state
from detcli.engine.train_data import loader_generators
from detcli.errors import DetcliError


def restore_training_state(trainer: Any, ckpt: RunRecord) -> None:
    """Weights, optimizer, scaler, epoch, best AP and early-stopping state from ``last.pt``'s validated record into
    ``trainer`` (and ``trainer.state``); parts that do not fit this run (edited, or another model) are a
    :class:`DetcliError` naming the field."""
    path, rep = trainer.resume_from, trainer.reporter
    if ckpt.optimizer is None:
        raise DetcliError(f"{path} has no optimizer state (a best.pt?); resume from weights/last.pt")
    ckpt.require(path, "epoch", "model")
    if ckpt.class_names != list(trainer.class_names):
        raise DetcliError(f"{path} was trained on classes {ckpt.class_names} but the data has {trainer.class_names}")

    def restore(field: str, load) -> None:
        try:
            load()
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
            raise DetcliError(f"{path}: {field} does not fit this run ({first}); an edited checkpoint, or "
                              "one of another model") from None

    restore("model", lambda: trainer.model.load_state_dict(ckpt.model))
    own = {k: v.shape for k, v in trainer.model.state_dict().items()}
    if ckpt.ema is not None and {k: v.shape for k, v in ckpt.ema.module.items()} != own:
        raise DetcliError(f"{path}: ema.module holds other tensors than the model (an edited checkpoint)")
    restore("optimizer", lambda: trainer.optimizer.load_state_dict(ckpt.optimizer.stored()))
    for param, buffers in trainer.optimizer.state.items():
        if any(isinstance(b, torch.Tensor) and b.dim() > 0 and b.shape != param.shape for b in buffers.values()):
            raise DetcliError(f"{path}: optimizer.state holds buffers of another shape than their parameters "
                              "(an edited checkpoint, or one of another model)")
    if ckpt.scaler:
        restore("scaler", lambda: trainer.scaler.load_state_dict(dict(ckpt.scaler)))
    s, epochs = trainer.state, trainer.cfg.epochs
    s.start_epoch = ckpt.epoch
    s.best_map = ckpt.best_map if ckpt.best_map is not None else -1.0
    s.train_time = ckpt.train_time or 0.0
    early = ckpt.early_stopping
    s.best_epoch, s.stale_validations = (early.best_epoch, early.stale) if early else (0, 0)
    if early and early.stopped:
        raise DetcliError(f"{path}: training stopped early at epoch {s.start_epoch}/{epochs} "
                          f"(train.patience {trainer.cfg.patience}); nothing to resume (start a new run)")
    if s.start_epoch >= epochs:
        raise DetcliError(f"{path}: training already finished ({s.start_epoch}/{epochs} epochs); "
                          "nothing to resume (start a new run, or raise --epochs)")
    changed = trainer.schedule.differences(ckpt.schedule_state or {})
    if changed:
        rep.warn("the lr schedule differs from the interrupted run: " + "; ".join(changed))
    best = f", best AP50-95 {s.best_map:.4f}" if s.best_map >= 0 else ""
    rep.info(f"resuming {path}: epoch {s.start_epoch + 1}/{epochs}{best}")


def restore_rng(trainer: Any, ckpt: dict[str, Any]) -> None:
    """This process' random states from ``ckpt`` (reseeded, with a warning, under another process count)."""
    per_rank = (ckpt.get("rng") or {}).get("per_rank") or []
    if len(per_rank) == trainer.world:
        set_rng_state(per_rank[trainer.rank], loader_generators(trainer.train_loader))
    else:
        trainer.reporter.warn(
            f"the checkpoint holds random states of {len(per_rank)} process(es), this run has {trainer.world}: "
            "reseeding (the run will not repeat the uninterrupted one exactly)"
        )
        seed_everything(trainer.seed + 1000 * trainer.state.start_epoch, trainer.rank)


def gather(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` without DDP)."""
    if not is_dist():
        return [obj]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


__all__ = ["restore_training_state", "restore_rng", "gather"]
