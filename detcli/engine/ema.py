"""Exponential moving average of a model's parameters and buffers.

NanoDet's ``ExpMovingAverager`` (``nanodet/model/weight_averager/ema.py``), numerically the same as
mmdet's ``ExpMomentumEMA(momentum=1−decay, gamma)``: after every optimizer step

    d   = decay · exp(−(1 + it) / gamma) + (1 − decay)
    ema = ema · (1 − d) + model · d

with ``it`` the number of optimizer steps taken so far, this one included (NanoDet passes Lightning's
``global_step`` after the step, which is 1 at the first update). Early on ``d`` ≈ 1 (the EMA follows the
model), later it settles at ``1 − decay``. Parameters and floating buffers (BN running stats) are averaged;
integer buffers (``num_batches_tracked``) are copied. A tensor the state dict lists under several names (a conv
shared by several modules) is averaged once, as mmengine's ``ExpMomentumEMA`` (over ``named_parameters``) does.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside a DDP / DataParallel wrapper (or the model itself)."""
    return model.module if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else model


class ModelEMA:
    """EMA copy of a model, used for validation and ``best.pt``.

    Args:
        model: the model being trained (a DDP wrapper is unwrapped); copied at construction.
        decay: ``decay`` of the formula above (NanoDet 0.9998).
        gamma: ramp length in iterations (2000).

    Attributes:
        module: the averaged model, in eval mode, without gradients.
        updates: optimizer steps averaged so far.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9998, gamma: float = 2000.0) -> None:
        self.module = copy.deepcopy(unwrap(model)).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = float(decay)
        self.gamma = float(gamma)
        self.updates = 0

    def weight(self, it: int) -> float:
        """``d`` at optimizer step ``it`` (1-based)."""
        return self.decay * math.exp(-(1 + it) / self.gamma) + (1.0 - self.decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> float:
        """Average in the current weights of ``model``; returns the ``d`` used."""
        self.updates += 1
        d = self.weight(self.updates)
        current = unwrap(model).state_dict()
        seen: set[tuple] = set()
        for name, ema_value in self.module.state_dict().items():
            key = (ema_value.data_ptr(), tuple(ema_value.shape), ema_value.dtype)
            if key in seen:  # one tensor under several names (RTMDet's head convs shared across levels): once
                continue
            seen.add(key)
            value = current[name].detach()
            if ema_value.dtype.is_floating_point:
                ema_value.mul_(1.0 - d).add_(value.to(ema_value.dtype), alpha=d)
            else:
                ema_value.copy_(value)
        return d

    def state_dict(self) -> dict:
        return {"updates": self.updates, "decay": self.decay, "gamma": self.gamma, "module": self.module.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
        self.decay = float(state.get("decay", self.decay))
        self.gamma = float(state.get("gamma", self.gamma))


__all__ = ["ModelEMA", "unwrap"]
