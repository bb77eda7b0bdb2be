"""The training loop shared by every detector family: a short step loop, with everything around the steps in hooks.

One step: lr for (epoch, it) → ``model.loss`` (AMP on CUDA when enabled) → sum → backward → optional grad-norm
clipping → optimizer step → EMA update. The hooks (:mod:`detcli.engine.hooks`, in the order they run) do the rest:
the non-finite guard (losses after each step, weights after each epoch, before validation and before any
checkpoint), validation when due with early stopping, the run files (``run.json``, ``preset.yaml``,
``results.csv``, ``metrics.json``), ``best.pt`` then ``last.pt`` (atomically: the best AP that ``last.pt``
records is always held by ``best.pt``), the plots, console logging, and TensorBoard when asked; a library user
adds their own :class:`~detcli.engine.hooks.HookBase`. A resumed run restores model, EMA, optimizer, scaler,
epoch, best AP and every random state (:mod:`detcli.engine.resume`), deletes the temporaries a killed atomic write
left, and continues as if uninterrupted; a run stopped before its first ``last.pt`` starts again from epoch 1
(``restarted``). The per-process entry points that build a Trainer live in :mod:`detcli.engine.session`.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from detcli.config.schema import Preset, TrainConfig
from detcli.distributed import barrier, is_dist, rank as dist_rank, reduce_mean, world_size
from detcli.engine.amp import AMP_DTYPES, amp_enabled, amp_warning
from detcli.checkpoints.io import load_checkpoint
from detcli.engine.ddp import TrainingGraph, unused_parameters, wrap_ddp
from detcli.engine.ema import ModelEMA
from detcli.engine.hooks import HookBase, TrainState, default_hooks
from detcli.engine.hooks.console import console_row as _console_row, loss_labels
from detcli.engine.hooks.run_files import FITNESS
from detcli.engine.optim import build_optimizer
from detcli.engine.resume import restore_rng, restore_training_state
from detcli.engine.run_dir import ResultsCSV
from detcli.engine.schedule import LRSchedule, scaled_schedule
from detcli.engine.seed import get_rng_state, set_rng_state
from detcli.engine.train_data import batch_too_small, dataset_classes, loader_generators, set_epoch
from detcli.errors import DetcliError
from detcli.evaluation.evaluate import evaluate
from detcli.evaluation.evaluator import EvalResult
from detcli.models.base import Detector
from detcli.progress import RunClock
from detcli.run_spec import RunSpec


class Trainer:
    """Trains ``model`` with ``train_cfg`` and writes the run folder.

    Args:
        spec: the run's :class:`~detcli.run_spec.RunSpec` (the preset and ``--imgsz`` resolved once; its class
            names and dataset record are completed from the datasets), or a preset (run at its own size).
        train_cfg: the training config actually used (``preset.train`` or ``preset.demo_train()``).
        model: the detector, on any device (moved to ``device``).
        train_loader: batches of :class:`~detcli.structures.Batch` (per-process batch; DistributedSampler
            under DDP).
        val_loader / val_dataset: validation batches and the CocoDetection they come from (``coco``,
            ``cat_ids``, ``class_names``); None → no validation (and no ``best.pt``).
        run_dir: the run folder (created by :func:`~detcli.engine.run_dir.new_run_dir`).
        reporter: console (a silent one on ranks > 0).
        device: this process' device.
        seed: base seed (this process used ``seed + rank``).
        amp: mixed precision: float16 autocast with loss scaling on CUDA, bfloat16 autocast on CPU
            (:mod:`detcli.engine.amp`; ``"auto"``: on CUDA and on a CPU with AMX).
        resume_from: ``last.pt`` to continue from.
        train_args: what to record about the invocation (``argv``, CLI options); JSON-able.
        dataset_info: added to the spec's dataset record (e.g. ``{"config": DatasetConfig dump}``); files and
            fingerprints of the datasets are added by the run-files hook.
        restarted: ``run_dir`` holds this run stopped before its first ``last.pt``; it starts again from epoch 1.
        hooks: extra :class:`~detcli.engine.hooks.HookBase` instances, run after the default ones.
    """

    def __init__(
        self, spec: RunSpec | Preset, train_cfg: TrainConfig, model: Detector, train_loader: DataLoader,
        val_loader: DataLoader | None, val_dataset: Any | None, run_dir: Path, reporter: Any, device: torch.device,
        seed: int, amp: bool | str, resume_from: Path | None, train_args: dict[str, Any],
        dataset_info: dict[str, Any] | None = None, restarted: bool = False, hooks: Sequence[HookBase] = (),
    ) -> None:
        spec = spec if isinstance(spec, RunSpec) else RunSpec(spec, [], [])
        dataset = json.loads(json.dumps({**(spec.dataset or {}), **(dataset_info or {})}, default=str))
        self.spec, self.cfg = spec.replace(dataset=dataset), train_cfg
        self.model = model
        self.train_loader, self.val_loader, self.val_dataset = train_loader, val_loader, val_dataset
        self.run_dir, self.reporter, self.device, self.seed = Path(run_dir), reporter, torch.device(device), int(seed)
        self.amp_requested, self.use_amp = amp, amp_enabled(amp, self.device)
        self.amp_dtype = AMP_DTYPES.get(self.device.type, torch.float32)
        self.amp_name = str(self.amp_dtype).removeprefix("torch.") if self.use_amp else None  # "bfloat16", …
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.restarted = bool(restarted) and resume_from is None
        self.train_args = json.loads(json.dumps(train_args or {}, default=str))
        self.last_path, self.best_path = self.run_dir / "weights" / "last.pt", self.run_dir / "weights" / "best.pt"
        self.results = ResultsCSV(self.run_dir / "results.csv")
        self.world, self.rank = world_size(), dist_rank()
        self.state = TrainState()
        self.hooks: list[HookBase] = default_hooks(train_cfg.tensorboard) + list(hooks)
        self.run_clock: RunClock | None = None  # the run ETA of the progress bars, from the first epoch trained

    @property
    def preset(self) -> Preset:
        return self.spec.preset

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def cat_ids(self) -> list[int]:
        return self.spec.cat_ids

    def _call(self, stage: str) -> None:
        for hook in self.hooks:
            getattr(hook, stage)(self)

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, rep = self.cfg, self.reporter
        names, cat_ids = dataset_classes(self.train_loader.dataset, self.val_dataset)
        self.spec = self.spec.replace(class_names=names, cat_ids=cat_ids)
        self.iters_per_epoch = len(self.train_loader)
        if self.iters_per_epoch == 0:
            raise DetcliError(
                f"the training set gives no full batch (batch {cfg.batch} over {self.world} process(es), "
                "drop_last); use a smaller --batch or more images"
            )
        # channels_last: ~20% faster convolutions for these detectors on CPU (oneDNN) and with AMP on CUDA
        model = self.model.to(self.device, memory_format=torch.channels_last)
        if cfg.sync_bn and self.world > 1:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                rep.warn("train.sync_bn needs CUDA; BatchNorm stays per-process on CPU")
        self.model = model
        self.optimizer, self.lr, self.lr_note = build_optimizer(model, cfg.optimizer, cfg.batch)
        self.schedule = LRSchedule(cfg.warmup, scaled_schedule(cfg.schedule, cfg.optimizer.lr, self.lr), self.lr,
                                   cfg.epochs, self.iters_per_epoch)
        if self.schedule.warmup_capped:
            rep.warn(
                f"train.warmup.steps {cfg.warmup.steps} is longer than half of this run "
                f"({cfg.epochs} epochs × {self.iters_per_epoch} iterations): warming up over "
                f"{self.schedule.warmup_steps} iterations so the run reaches its lr"
            )
        amp_warned = amp_warning(self.amp_requested, self.use_amp, self.device)
        if amp_warned:
            rep.warn(amp_warned)
        # float16 needs loss scaling; bfloat16 has float32's exponent range and needs none
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp and self.amp_dtype == torch.float16)
        ckpt = load_checkpoint(self.resume_from) if self.resume_from is not None else None
        if ckpt is not None:
            self._restore_training_state(ckpt)
        self.graph = self._training_graph()
        self.ema = ModelEMA(model, cfg.ema.decay, cfg.ema.gamma) if cfg.ema is not None else None
        if ckpt is not None and self.ema is not None:
            if ckpt.get("ema"):
                self.ema.load_state_dict(ckpt["ema"])
            else:
                rep.warn(f"{self.resume_from} has no EMA state; the EMA restarts from the current weights")
        if ckpt is not None:
            restore_rng(self, ckpt)

    def _restore_training_state(self, ckpt: Any) -> None:
        restore_training_state(self, ckpt)

    def _training_graph(self) -> nn.Module:
        """``TrainingGraph(model)``, wrapped in DDP when there are several processes."""
        if self.world == 1:
            return TrainingGraph(self.model)
        find_unused = getattr(self.model, "ddp_find_unused_parameters", None)
        if find_unused is None:
            gens = loader_generators(self.train_loader)
            state = get_rng_state(gens)
            self.model.train()
            batch = next(iter(self.train_loader)).to(self.device)
            unused = unused_parameters(self.model, batch, self.state.start_epoch)
            set_rng_state(state, gens)
            find_unused = bool(unused)
            if unused:
                self.reporter.info(f"DDP: {len(unused)} parameter(s) get no gradient (e.g. {', '.join(unused[:3])}); "
                                   "find_unused_parameters=True")
        return wrap_ddp(self.model, self.device, bool(find_unused))

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from the start (or the resumed epoch) to ``train_cfg.epochs``; returns the last epoch's row
        with the best AP50-95 and its epoch, ``stopped_early`` and ``run_dir``."""
        self._setup()
        self._call("before_train")
        barrier()
        s = self.state
        for epoch in range(s.start_epoch, self.cfg.epochs):
            s.epoch = epoch
            self._call("before_epoch")
            s.epoch_losses, s.lr = self.train_one_epoch(epoch)
            self._end_epoch(epoch)
            if s.stopped_early:
                break
        s.summary = {**s.row, "best/AP50-95": s.best_map if s.best_map >= 0 else float("nan"),
                     "best/epoch": s.best_epoch if s.best_epoch > 0 else None, "stopped_early": s.stopped_early,
                     "run_dir": str(self.run_dir)}
        self._call("after_train")
        weights = f"{self.best_path} (best), {self.last_path} (last)" if self.best_path.exists() else str(self.last_path)
        self.reporter.info(f"Results saved to {self.run_dir} · weights {weights}")
        return dict(s.summary)

    def _end_epoch(self, epoch: int, *_: Any) -> None:
        """The epoch-end hooks (guard, validation, clock, run files, checkpoints, console, plots …), then a barrier."""
        self._call("after_epoch")
        barrier()

    def _validation_due(self, epoch: int) -> bool:
        if self.val_loader is None:
            return False
        in_last = epoch >= self.cfg.epochs - self.cfg.val_every_epoch_last
        return (epoch + 1) % self.cfg.val_interval == 0 or epoch + 1 == self.cfg.epochs or in_last

    @torch.no_grad()
    def validate(self, epoch: int) -> EvalResult:
        """COCO evaluation of the EMA model (or the model), synchronised from rank 0 first."""
        module = self.ema.module if self.ema is not None else self.model
        if is_dist():  # BN statistics differ per process; score rank 0's weights everywhere
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)
        return evaluate(module, self.val_loader, self.val_dataset, self.device, None, self.reporter,
                        description=f"val {epoch + 1}/{self.cfg.epochs}")

    def train_one_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One pass over the training set; returns (mean of each loss over all processes, last lr)."""
        cfg, s = self.cfg, self.state
        self.graph.train()
        if set_epoch(self.train_loader, epoch):
            self.reporter.info(f"epoch {epoch + 1}/{cfg.epochs}: the training data pipeline switches stage (augment.switch)")
        sums: dict[str, float] = {}
        lr = self.schedule.lr_at(epoch, 0)
        if self.run_clock is None:  # the run ETA: every epoch's iterations, at this process' rate
            self.run_clock = RunClock(cfg.epochs * self.iters_per_epoch, epoch * self.iters_per_epoch)
        bar = self.reporter.progress(self.train_loader, total=self.iters_per_epoch,
                                     description=f"epoch {epoch + 1}/{cfg.epochs}", run=self.run_clock)
        labels: dict[str, str] = {}
        n = 0
        for it, batch in enumerate(bar):
            s.iteration, s.batch = it, batch
            self._call("before_step")
            lr = s.lr = self.schedule.step(self.optimizer, epoch, it)
            s.losses, s.total = self.step(batch.to(self.device), epoch)
            self._call("after_step")
            n += 1
            for k, v in s.losses.items():
                sums[k] = sums.get(k, 0.0) + v
            labels = labels or loss_labels(sums)
            postfix = {"loss": sum(sums.values()) / n, **{labels[k]: v / n for k, v in sums.items()}, "lr": lr}
            if self.device.type == "cuda":
                postfix["mem_GB"] = torch.cuda.memory_reserved(self.device) / 1e9
            bar.update_postfix(postfix)
        s.batch = None
        means = {k: v / max(n, 1) for k, v in sums.items()}
        if is_dist() and means:
            reduced = reduce_mean(torch.tensor(list(means.values()), dtype=torch.float64, device=self.device))
            means = dict(zip(means, reduced.tolist()))
        return means, lr

    def step(self, batch: Any, epoch: int) -> tuple[dict[str, float], float]:
        """Forward, the ``after_loss`` hooks (the non-finite guard stops here, before any weight changes), backward
        and optimizer step on one batch (on the device); returns (loss terms, their sum) as floats."""
        images = batch.images.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            try:
                losses = self.graph(images, batch.targets, batch.metas, epoch)
            except ValueError as e:
                if "Expected more than 1 value per channel when training" not in str(e):
                    raise
                raise batch_too_small(images, len(self.train_loader.dataset), self.model) from None
        total = sum(losses.values())
        terms = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()]).tolist()
        self.state.losses, self.state.total = dict(zip(losses, terms[:-1])), terms[-1]  # one device sync
        self._call("after_loss")
        self.scaler.scale(total).backward()
        if self.cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.grad is not None], self.cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema is not None:
            self.ema.update(self.model)
        return self.state.losses, self.state.total


_set_epoch = set_epoch  # the name tests import

__all__ = ["Trainer", "FITNESS", "_console_row"]
