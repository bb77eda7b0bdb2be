"""Entry points of a training run: what the CLI hands over, and how it becomes one or more processes.

:func:`launch_training` picks the processes (this one, spawned DDP workers, or a torchrun group) and
:func:`run_training` is what each of them runs: seed, build the model and loaders, :class:`Trainer.fit`.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader

from detcli.config.schema import Preset, TrainConfig
from detcli.distributed import rank as dist_rank, world_size
from detcli.engine.hooks import HookBase
from detcli.engine.seed import seed_everything
from detcli.engine.trainer import Trainer
from detcli.errors import DetcliError
from detcli.models.base import Detector
from detcli.run_spec import RunSpec


@dataclass
class ProcessInfo:
    """What :attr:`TrainSetup.build` gets in each process."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    batch_per_process: int
    seed: int


@dataclass
class TrainParts:
    """What :attr:`TrainSetup.build` returns: the model and the data of this process."""

    model: Detector
    train_loader: DataLoader
    val_loader: DataLoader | None
    val_dataset: Any | None
    dataset_info: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainSetup:
    """Everything a training process needs; picklable, so it crosses ``torch.multiprocessing.spawn``.

    Attributes:
        preset: the run's :class:`~detcli.run_spec.RunSpec` (``--imgsz`` resolved), or a validated preset.
        train_cfg: training config to run (``preset.train`` or ``preset.demo_train()``, CLI overrides applied).
        build: module-level function ``(ProcessInfo) -> TrainParts`` that builds the model and the loaders
            of one process (DistributedSampler when ``world_size > 1``, ``batch_per_process`` per loader).
        run_dir: the run folder, created once before launching.
        device: the ``--device`` spec (``None``/``""`` → GPU 0 if any, ``cpu``, ``0``, ``0,1``).
        seed: base seed; process ``r`` uses ``seed + r``.
        amp: mixed precision (None → ``train_cfg.amp``).
        resume_from: ``last.pt`` to continue.
        restart: the run folder holds a run stopped before its first ``last.pt``: train it from epoch 1 again
            (its temporaries removed, its manifest kept with the restart recorded).
        train_args: recorded in ``run.json`` and checkpoints (``argv`` at least).
        force_plain: console mode for :class:`detcli.console.Reporter` (None → auto).
        hooks: extra training hooks (:class:`~detcli.engine.hooks.HookBase`; picklable for spawned processes).
    """

    preset: RunSpec | Preset
    train_cfg: TrainConfig
    build: Callable[[ProcessInfo], TrainParts]
    run_dir: Path
    device: str | None = None
    seed: int = 0
    amp: bool | str | None = None
    resume_from: Path | None = None
    restart: bool = False
    train_args: dict[str, Any] = field(default_factory=dict)
    force_plain: bool | None = None
    hooks: list[HookBase] = field(default_factory=list)


def run_training(setup: TrainSetup) -> dict[str, Any]:
    """Train in this process (alone, or as one rank of an initialised process group)."""
    from detcli.console import Reporter
    from detcli.engine.launch import local_rank, process_device
    from detcli.inference.device import parse_device

    device_type, ids = parse_device(setup.device)
    device = process_device(device_type, ids)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True  # as NanoDet
    world, rank = world_size(), dist_rank()
    if setup.train_cfg.batch % world:
        raise DetcliError(f"--batch {setup.train_cfg.batch} is not divisible by the {world} training processes")
    seed_everything(setup.seed, rank)
    reporter = Reporter(silent=rank != 0, force_plain=setup.force_plain)
    info = ProcessInfo(rank, local_rank(), world, device, setup.train_cfg.batch // world, setup.seed)
    parts = setup.build(info)
    trainer = Trainer(
        setup.preset, setup.train_cfg, parts.model, parts.train_loader, parts.val_loader, parts.val_dataset,
        setup.run_dir, reporter, device, setup.seed,
        setup.train_cfg.amp if setup.amp is None else setup.amp,
        setup.resume_from, setup.train_args, parts.dataset_info, restarted=setup.restart, hooks=setup.hooks,
    )
    return trainer.fit()


def launch_training(setup: TrainSetup) -> dict[str, Any] | None:
    """Run :func:`run_training` in the right processes; returns the final row (read back after spawn).

    * under torchrun: this process joins the group from the environment;
    * ``--device 0,1`` (or ``DETCLI_DDP_CPU_PROCS=N`` on CPU): N spawned workers on this machine;
    * otherwise: this process alone.
    """
    from detcli.engine.launch import (
        backend_for, init_from_env, launch_ddp, process_count, process_device, torchrun_env,
    )
    from detcli.inference.device import parse_device

    device_type, ids = parse_device(setup.device)
    if torchrun_env() and int(os.environ["WORLD_SIZE"]) > 1:
        init_from_env(backend_for(device_type), process_device(device_type, ids))
        try:
            return run_training(setup)
        finally:
            dist.destroy_process_group()
    nprocs = process_count(device_type, ids)
    if nprocs == 1:
        return run_training(setup)
    launch_ddp(run_training, nprocs, backend_for(device_type), (setup,), device_type, ids)
    path = Path(setup.run_dir) / "metrics.json"
    return json.loads(path.read_text())["row"] if path.is_file() else None


__all__ = ["ProcessInfo", "TrainParts", "TrainSetup", "run_training", "launch_training"]
