"""Learning-rate schedule: linear warmup per iteration × cosine or step decay per epoch.

The lr is a pure function of (epoch, iteration in epoch), so resuming only needs the epoch.

* Warmup (NanoDet ``optimizer_step``, mmdet ``LinearLR(by_epoch=False)``): at global iteration
  ``g = epoch · iters_per_epoch + it`` the factor is ``1 − (1 − g/steps)·(1 − ratio)`` for ``g < steps``,
  1 afterwards. It multiplies the scheduled lr, as mmdet chains its schedulers. NanoDet instead replaces
  the lr by ``initial_lr·factor``; the two agree while warmup stays within epoch 0 (and differ by the cosine
  factor of epoch 1, ≈ 1 − 3·10⁻⁵ for 300 epochs, when it spills over).
* Warmup bound: ``steps`` is at most half of the run's iterations (:data:`MAX_WARMUP_SHARE`; YOLOv5 notes
  the same bound, "limit warmup to < 1/2 of training"). A short fine-tune under a preset's 500-iteration
  warmup would otherwise end inside it, never at its lr; :attr:`LRSchedule.warmup_capped` says when it applied.
* Cosine (``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=epochs, eta_min)`` stepped once per epoch,
  as in NanoDet): ``eta_min + (lr − eta_min)·(1 + cos(π·epoch/epochs))/2``. With ``flat_fraction`` f the lr
  stays at ``lr`` for the first f·epochs and the cosine runs over the rest (RTMDet: MMEngine
  ``CosineAnnealingLR(begin=epochs/2, end=epochs, T_max=epochs/2)``); with ``per_iteration`` the position is
  the fractional epoch ``epoch + it/iters_per_epoch`` (``convert_to_iter_based=True``).
* Step (mmdet ``MultiStepLR(by_epoch=True)``): ``lr · gamma^k`` with k the number of milestones ≤ epoch
  (milestone 8 → the 9th epoch, index 8, is the first one with the decayed lr).

Epochs are 0-indexed here. Param groups keep their relative lr: each group's lr is its ``initial_lr``
times ``lr_at(epoch, it) / base_lr`` (for the cosine, ``eta_min`` is the final lr of a group whose
``initial_lr`` is ``base_lr``).
"""
from __future__ import annotations

import math

from torch.optim import Optimizer

from detcli.config.schema import ScheduleConfig, WarmupConfig

# Warmup takes at most this share of the run's iterations (see the module docstring).
MAX_WARMUP_SHARE = 0.5


def warmup_steps(configured: int, total_iters: int) -> int:
    """Warmup iterations actually used: ``configured``, but at most ``MAX_WARMUP_SHARE`` of ``total_iters``."""
    return min(int(configured), int(total_iters * MAX_WARMUP_SHARE))


def scaled_schedule(cfg: ScheduleConfig, preset_lr: float, lr: float) -> ScheduleConfig:
    """``cfg`` for a run whose lr is ``lr`` instead of the preset's ``preset_lr`` (linear batch scaling): the
    cosine's final lr scales the same way (MMDetection writes it as ``lr · 0.05``), so it stays below the lr."""
    return cfg.model_copy(update={"eta_min": cfg.eta_min * lr / preset_lr})


class LRSchedule:
    """Warmup × (cosine | step) schedule.

    Args:
        cfg_warmup: warmup iterations and start ratio.
        cfg_schedule: cosine (``eta_min``) or step (``milestones``, ``gamma``).
        base_lr: the lr of the preset after batch scaling.
        epochs: total training epochs (cosine ``T_max``).
        iters_per_epoch: optimizer steps per epoch (for the global warmup iteration).
    """

    def __init__(
        self,
        cfg_warmup: WarmupConfig,
        cfg_schedule: ScheduleConfig,
        base_lr: float,
        epochs: int,
        iters_per_epoch: int,
    ) -> None:
        if epochs < 1 or iters_per_epoch < 1:
            raise ValueError(f"epochs ({epochs}) and iters_per_epoch ({iters_per_epoch}) must be >= 1")
        self.warmup = cfg_warmup
        self.schedule = cfg_schedule
        self.base_lr = float(base_lr)
        self.epochs = int(epochs)
        self.iters_per_epoch = int(iters_per_epoch)
        self.total_iters = self.epochs * self.iters_per_epoch
        self.warmup_steps = warmup_steps(cfg_warmup.steps, self.total_iters)

    @property
    def warmup_capped(self) -> bool:
        """True when the preset's warmup was longer than allowed for this run and was shortened."""
        return self.warmup_steps < self.warmup.steps

    def warmup_note(self) -> str:
        """The warmup in words, for the training summary."""
        text = f"warmup {self.warmup_steps} iterations from {self.warmup.ratio:g}·lr"
        if self.warmup_capped:
            text += (
                f" (train.warmup.steps {self.warmup.steps} capped at {MAX_WARMUP_SHARE:.0%} of the run's "
                f"{self.total_iters} iterations)"
            )
        return text

    def warmup_factor(self, global_iter: int) -> float:
        steps = self.warmup_steps
        if steps <= 0 or global_iter >= steps:
            return 1.0
        return 1.0 - (1.0 - global_iter / steps) * (1.0 - self.warmup.ratio)

    def epoch_lr(self, epoch: int, iter_in_epoch: int = 0) -> float:
        """The lr of (``epoch``, ``iter_in_epoch``) without warmup (the iteration matters only for a cosine
        with ``per_iteration``)."""
        cfg = self.schedule
        if cfg.type == "cosine":
            position = epoch + (iter_in_epoch / self.iters_per_epoch if cfg.per_iteration else 0.0)
            flat = cfg.flat_fraction * self.epochs
            progress = max(0.0, position - flat) / (self.epochs - flat)
            return cfg.eta_min + (self.base_lr - cfg.eta_min) * (1.0 + math.cos(math.pi * progress)) / 2.0
        k = sum(1 for m in cfg.milestones if m <= epoch)
        return self.base_lr * cfg.gamma**k

    def lr_at(self, epoch: int, iter_in_epoch: int) -> float:
        """lr used for the optimizer step at (0-indexed) ``epoch``, ``iter_in_epoch``."""
        global_iter = epoch * self.iters_per_epoch + iter_in_epoch
        return self.epoch_lr(epoch, iter_in_epoch) * self.warmup_factor(global_iter)

    def step(self, optimizer: Optimizer, epoch: int, it: int) -> float:
        """Set every group's lr for this step; returns the lr of a ``base_lr`` group."""
        lr = self.lr_at(epoch, it)
        scale = lr / self.base_lr
        for group in optimizer.param_groups:
            group["lr"] = group.setdefault("initial_lr", group["lr"]) * scale
        return lr

    def state_dict(self) -> dict:
        """What defines the curve (the position is the epoch stored beside it)."""
        return {
            "base_lr": self.base_lr,
            "epochs": self.epochs,
            "iters_per_epoch": self.iters_per_epoch,
            "warmup": self.warmup.model_dump(mode="json"),
            "schedule": self.schedule.model_dump(mode="json"),
        }

    def differences(self, state: dict) -> list[str]:
        """Human-readable differences between a saved :meth:`state_dict` and this schedule (for resume)."""
        mine = self.state_dict()
        state = dict(state)
        for key, model in (("warmup", WarmupConfig), ("schedule", ScheduleConfig)):
            try:  # fields added since the checkpoint was written take their defaults
                state[key] = model.model_validate(state[key]).model_dump(mode="json")
            except Exception:  # missing or not a config: reported as different below
                pass
        return [f"{k}: {state.get(k)!r} → {mine[k]!r}" for k in mine if state.get(k) != mine[k]]


__all__ = ["MAX_WARMUP_SHARE", "LRSchedule", "scaled_schedule", "warmup_steps"]
