"""Optimizer from a preset: parameter groups with or without weight decay, linear lr scaling.

Parameter-group rules follow mmdet's ``DefaultOptimWrapperConstructor`` (``norm_decay_mult`` /
``bias_decay_mult``): with ``norm_decay=False`` the weight and bias of every normalisation layer get
no weight decay; with ``bias_decay=False`` the biases of every other layer (conv, linear) get none.
NanoDet-Plus and RetinaNet decay every parameter (both flags true), so they get a single group.
"""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _NormBase
from torch.optim import SGD, AdamW, Optimizer

from detcli.config.schema import OptimizerConfig

# Layers whose affine parameters count as "norm" parameters (BatchNorm, SyncBatchNorm, InstanceNorm via _NormBase).
NORM_LAYERS = (_NormBase, nn.GroupNorm, nn.LayerNorm)


def split_decay(model: nn.Module, norm_decay: bool, bias_decay: bool) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters split into (decay, no_decay), each listed once, in module order.

    Frozen parameters (``requires_grad=False``) are left out; a parameter shared by several modules
    is assigned where it is met first.
    """
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_LAYERS)
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if is_norm:
                exempt = not norm_decay
            else:
                exempt = name == "bias" and not bias_decay
            (no_decay if exempt else decay).append(param)
    return decay, no_decay


def scaled_lr(cfg: OptimizerConfig, batch: int) -> tuple[float, str]:
    """Learning rate for a global ``batch``: ``lr · batch / base_batch`` when ``base_batch`` is set.

    Returns:
        (lr, note) with a note that says how the lr was obtained.
    """
    if cfg.base_batch is None:
        return cfg.lr, f"lr {cfg.lr:g} (as in the preset; no base_batch, so not scaled with batch {batch})"
    lr = cfg.lr * batch / cfg.base_batch
    return lr, f"lr {cfg.lr:g} × {batch}/{cfg.base_batch} = {lr:g} (linear scaling from batch {cfg.base_batch})"


def build_optimizer(model: nn.Module, cfg: OptimizerConfig, batch: int) -> tuple[Optimizer, float, str]:
    """The preset's optimizer over ``model``'s trainable parameters.

    Group 0 holds the decayed parameters (``weight_decay=cfg.weight_decay``), group 1 (only when
    non-empty) the exempt ones (``weight_decay=0``). Every group gets ``initial_lr`` = its lr, which
    :class:`~detcli.engine.schedule.LRSchedule` scales.

    Args:
        model: the detector (not wrapped in DDP).
        cfg: optimizer section of the preset.
        batch: global batch size (all processes together).
    Returns:
        (optimizer, effective lr, one-line note for the console and the run manifest).
    """
    lr, note = scaled_lr(cfg, batch)
    decay, no_decay = split_decay(model, cfg.norm_decay, cfg.bias_decay)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameters")
    groups = [{"params": decay, "weight_decay": cfg.weight_decay, "name": "decay"}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "name": "no_decay"})
    groups = [g for g in groups if g["params"]]
    if cfg.type == "sgd":
        optimizer: Optimizer = SGD(groups, lr=lr, momentum=cfg.momentum)
        what = f"SGD momentum {cfg.momentum:g}"
    else:
        optimizer = AdamW(groups, lr=lr, betas=tuple(cfg.betas))
        what = f"AdamW betas ({cfg.betas[0]:g}, {cfg.betas[1]:g})"
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    counts = ", ".join(f"{g['name']}: {len(g['params'])} tensors (wd {g['weight_decay']:g})" for g in optimizer.param_groups)
    return optimizer, lr, f"{note}; {what}; {counts}"


__all__ = ["NORM_LAYERS", "split_decay", "scaled_lr", "build_optimizer"]
