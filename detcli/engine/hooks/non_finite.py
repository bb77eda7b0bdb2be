"""The non-finite guard: a NaN/inf loss or weight stops the run (every process together) before anything of
the bad epoch is saved, with what the run folder still holds and what to try."""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from detcli.distributed import is_dist
from detcli.engine.hooks.base import HookBase
from detcli.engine.hooks.checkpoint import kept
from detcli.errors import DetcliError, NonFiniteLossError


class NonFiniteGuard(HookBase):
    """Checks the loss terms of each step (before backward) and the model and EMA weights after each epoch's training (first
    of the epoch-end hooks: before validation and before any checkpoint)."""

    def after_loss(self, trainer: Any) -> None:
        s = trainer.state
        ok = math.isfinite(s.total) and all(math.isfinite(v) for v in s.losses.values())
        if _everywhere(ok, trainer.device):
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in s.losses.items())
        where = "" if not ok or not is_dist() else " (on another process; this one had finite terms)"
        raise NonFiniteLossError(
            f"non-finite loss at epoch {s.epoch + 1}/{trainer.cfg.epochs}, iteration {s.iteration + 1}/"
            f"{trainer.iters_per_epoch}{where}: {terms}. Training stopped; {kept(trainer, s.epoch)}. Try a lower "
            "train.optimizer.lr, train.grad_clip, --no-amp, or check the dataset for broken boxes."
        )

    def after_epoch(self, trainer: Any) -> None:
        bad = {"model": non_finite(trainer.model.state_dict())}
        if trainer.ema is not None:
            bad["EMA"] = non_finite(trainer.ema.module.state_dict())
        if _everywhere(not any(bad.values()), trainer.device):
            return
        found = "; ".join(f"{where}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                          for where, names in bad.items() if names) or "on another process"
        epoch = trainer.state.epoch
        raise DetcliError(
            f"non-finite weights after epoch {epoch + 1}/{trainer.cfg.epochs} ({found}). Training stopped before "
            f"saving: {kept(trainer, epoch)}. Try a lower train.optimizer.lr, train.grad_clip or --no-amp."
        )


def _everywhere(ok: bool, device: torch.device) -> bool:
    """``ok`` on every process (an all-reduce under DDP: all ranks stop together, or the others hang)."""
    if not is_dist():
        return ok
    flag = torch.tensor([1.0 if ok else 0.0], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item() == 1.0)


def non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or inf (one device sync)."""
    floats = [(k, v) for k, v in state.items() if v.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(v).all() for _, v in floats]).tolist()
    return [k for (k, _), ok in zip(floats, finite) if not ok]


__all__ = ["NonFiniteGuard", "non_finite"]
