"""The training loop shared by every detector family, and the per-process entry the CLI calls.

One iteration: lr for (epoch, it) → ``model.loss`` (AMP on CUDA when enabled) → sum → non-finite check →
backward → optional grad-norm clipping → optimizer step → EMA update. After each epoch: validation when due
(EMA weights), ``results.csv`` row, ``best.pt`` when AP50-95 improves, then ``last.pt``. A resumed run
restores model, EMA, optimizer, scaler, epoch, best AP and every random state, and continues as if
uninterrupted.

What is on disk stays consistent whenever the run stops (killed, full disk, NaN):

* weights are checked finite after each epoch's training, before validation and before any checkpoint is
  written; non-finite weights stop the run with ``last.pt``/``best.pt`` of the previous epoch untouched;
* ``best.pt`` is written before ``last.pt`` (each atomically), so the best AP that ``last.pt`` records is
  always held by ``best.pt``. Stopped between the two writes, ``best.pt`` is one epoch ahead of ``last.pt``;
  the resumed run repeats that epoch, compares it with the best AP of ``last.pt`` and rewrites ``best.pt``;
* a resumed run deletes the temporaries a killed atomic write left in the run folder;
* a run stopped before its first ``last.pt`` is started again from epoch 1 (``restarted``: the CLI's start
  record in ``run.json`` gives the same preset, data and seed), so a kill at any write is resumable;
* a file that cannot be written (full disk) stops the run with what is kept and the ``--resume`` command.

The per-process entry points that build a Trainer live in :mod:`detcli.engine.session`.
"""
from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from detcli.config.schema import Preset, TrainConfig
from detcli.data.build import input_size
from detcli.distributed import barrier, is_dist, rank as dist_rank, reduce_mean, world_size
from detcli.fileio import atomic_write_json, remove_stale_temporaries
from detcli.engine.amp import AMP_DTYPES, amp_enabled, amp_note, amp_warning
from detcli.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint, versions
from detcli.engine.run_record import RunRecord
from detcli.engine.ddp import TrainingGraph, unused_parameters, wrap_ddp
from detcli.engine.ema import ModelEMA
from detcli.evaluation.evaluate import evaluate
from detcli.evaluation.evaluator import STAT_NAMES, EvalResult
from detcli.engine.optim import build_optimizer
from detcli.engine.run_dir import (
    ResultsCSV, now_iso, read_manifest, resolved_preset, resumable, write_manifest, write_preset,
)
from detcli.engine.schedule import LRSchedule, scaled_schedule
from detcli.engine.seed import get_rng_state, seed_everything, set_rng_state
from detcli.errors import DetcliError, NonFiniteLossError, WriteError
from detcli.models.base import Detector
from detcli.plots.training import TRAIN_BATCHES, TrainingPlots
from detcli.progress import RunClock, format_duration

FITNESS = "metrics/AP50-95"


class Trainer:
    """Trains ``model`` with ``train_cfg`` and writes the run folder.

    Args:
        preset: the validated preset (stored in checkpoints with ``train_cfg`` as its train section).
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
        amp: mixed precision: float16 autocast with loss scaling on CUDA, bfloat16 autocast on CPU (warned where
            the CPU has no native bfloat16); ignored with a warning on other devices. ``"auto"``: on CUDA and on a
            CPU with AMX, silently off elsewhere (:mod:`detcli.engine.amp`).
        resume_from: ``last.pt`` to continue from.
        train_args: what to record about the invocation (``argv``, CLI options); JSON-able.
        dataset_info: recorded in checkpoints as ``dataset`` (e.g. ``{"config": DatasetConfig dump}``);
            files and fingerprints of the datasets are added.
        restarted: ``run_dir`` holds this run stopped before its first ``last.pt``; it starts again from epoch 1
            (temporaries removed, the manifest's start record kept and the restart added to its ``resumes``).
    """

    def __init__(
        self,
        preset: Preset,
        train_cfg: TrainConfig,
        model: Detector,
        train_loader: DataLoader,
        val_loader: DataLoader | None,
        val_dataset: Any | None,
        run_dir: Path,
        reporter: Any,
        device: torch.device,
        seed: int,
        amp: bool | str,
        resume_from: Path | None,
        train_args: dict[str, Any],
        dataset_info: dict[str, Any] | None = None,
        restarted: bool = False,
    ) -> None:
        self.preset, self.cfg = preset, train_cfg
        self.model = model
        self.train_loader, self.val_loader, self.val_dataset = train_loader, val_loader, val_dataset
        self.run_dir = Path(run_dir)
        self.reporter = reporter
        self.device = torch.device(device)
        self.seed = int(seed)
        self.amp_requested = amp
        self.use_amp = amp_enabled(amp, self.device)
        self.amp_dtype = AMP_DTYPES.get(self.device.type, torch.float32)
        self.amp_name = str(self.amp_dtype).removeprefix("torch.") if self.use_amp else None  # "bfloat16", …
        self.resume_from = Path(resume_from) if resume_from is not None else None
        self.restarted = bool(restarted) and resume_from is None
        self.train_args = json.loads(json.dumps(train_args or {}, default=str))
        self.dataset_info = json.loads(json.dumps(dataset_info or {}, default=str))
        self.last_path = self.run_dir / "weights" / "last.pt"
        self.best_path = self.run_dir / "weights" / "best.pt"
        self.results = ResultsCSV(self.run_dir / "results.csv")
        self.world, self.rank = world_size(), dist_rank()
        self.start_epoch = 0
        self.best_map = -1.0
        self.best_epoch = 0  # 1-based epoch of best_map (0: none yet)
        self.stale_validations = 0  # validations since best_map last improved (train.patience)
        self.stopped_early = False
        self.train_time = 0.0
        self.last_result: EvalResult | None = None
        self.last_result_epoch = 0
        self.last_row: dict[str, Any] = {}
        self.run_clock: RunClock | None = None  # the run ETA of the progress bars, from the first epoch trained

    # ------------------------------------------------------------------ setup
    def _setup(self) -> None:
        cfg, rep = self.cfg, self.reporter
        self.class_names, self.cat_ids = _classes(self.train_loader.dataset, self.val_dataset)
        self.plots = TrainingPlots(self.run_dir, self.preset.input, self.class_names, rep)
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
        self.optimizer, self.lr, lr_note = build_optimizer(model, cfg.optimizer, cfg.batch)
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
        device_names = _gather(_device_name(self.device))  # a collective: every rank takes part
        if self.rank == 0:
            described = _describe_datasets(self.train_loader.dataset, self.val_dataset)  # hashes the json files
            self.dataset_info = json.loads(json.dumps({**described, **self.dataset_info}, default=str))
            try:
                self._write_run_files(lr_note, device_names, resumed=ckpt is not None)
            except WriteError as e:
                kept = (f"{self.last_path} still holds epoch {self.start_epoch}" if ckpt is not None
                        else "no checkpoint was written")
                raise self._write_failed(e, f"Training stopped before epoch {self.start_epoch + 1}: {kept}") from None
            if ckpt is None:
                self.plots.labels(self.train_loader.dataset)
        rep.info(f"optimizer: {lr_note}")
        amp_line = amp_note(self.amp_requested, self.use_amp, self.device)
        rep.info(
            f"schedule: {cfg.epochs} epochs × {self.iters_per_epoch} iterations, {self.schedule.warmup_note()}, "
            f"{cfg.schedule.type}; EMA "
            f"{'decay %g' % cfg.ema.decay if cfg.ema else 'off'}; AMP {amp_line}; "
            f"{self.world} process(es) on {self.device.type}"
            + (f"; early stopping after {cfg.patience} validation(s) without a better AP50-95"
               if cfg.patience is not None else "")
        )
        if ckpt is not None:
            self._restore_rng(ckpt)
        barrier()

    def _restore_training_state(self, ckpt: RunRecord) -> None:
        """Weights, optimizer, scaler, epoch, best AP and early-stopping state from ``last.pt``'s validated record;
        parts that do not fit this run (edited, or another model) are a :class:`DetcliError` naming the field."""
        path, rep = self.resume_from, self.reporter
        if ckpt.optimizer is None:
            raise DetcliError(f"{path} has no optimizer state (a best.pt?); resume from weights/last.pt")
        ckpt.require(path, "epoch", "model")
        if ckpt.class_names != list(self.class_names):
            raise DetcliError(f"{path} was trained on classes {ckpt.class_names} but the data has {self.class_names}")

        def restore(field: str, load) -> None:
            try:
                load()
            except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
                first = str(e).strip().splitlines()[0][:300] if str(e).strip() else type(e).__name__
                raise DetcliError(f"{path}: {field} does not fit this run ({first}); an edited checkpoint, or "
                                  "one of another model") from None

        restore("model", lambda: self.model.load_state_dict(ckpt.model))
        own = {k: v.shape for k, v in self.model.state_dict().items()}
        if ckpt.ema is not None and {k: v.shape for k, v in ckpt.ema.module.items()} != own:
            raise DetcliError(f"{path}: ema.module holds other tensors than the model (an edited checkpoint)")
        restore("optimizer", lambda: self.optimizer.load_state_dict(ckpt.optimizer.stored()))
        for param, buffers in self.optimizer.state.items():
            if any(isinstance(b, torch.Tensor) and b.dim() > 0 and b.shape != param.shape for b in buffers.values()):
                raise DetcliError(f"{path}: optimizer.state holds buffers of another shape than their parameters "
                                  "(an edited checkpoint, or one of another model)")
        if ckpt.scaler:
            restore("scaler", lambda: self.scaler.load_state_dict(dict(ckpt.scaler)))
        self.start_epoch = ckpt.epoch
        self.best_map = ckpt.best_map if ckpt.best_map is not None else -1.0
        self.train_time = ckpt.train_time or 0.0
        early = ckpt.early_stopping
        self.best_epoch, self.stale_validations = (early.best_epoch, early.stale) if early else (0, 0)
        if early and early.stopped:
            raise DetcliError(f"{path}: training stopped early at epoch {self.start_epoch}/{self.cfg.epochs} "
                              f"(train.patience {self.cfg.patience}); nothing to resume (start a new run)")
        if self.start_epoch >= self.cfg.epochs:
            raise DetcliError(
                f"{path}: training already finished ({self.start_epoch}/{self.cfg.epochs} epochs); "
                "nothing to resume (start a new run, or raise --epochs)"
            )
        changed = self.schedule.differences(ckpt.schedule_state or {})
        if changed:
            rep.warn("the lr schedule differs from the interrupted run: " + "; ".join(changed))
        best = f", best AP50-95 {self.best_map:.4f}" if self.best_map >= 0 else ""
        rep.info(f"resuming {path}: epoch {self.start_epoch + 1}/{self.cfg.epochs}{best}")

    def _restore_rng(self, ckpt: dict[str, Any]) -> None:
        per_rank = (ckpt.get("rng") or {}).get("per_rank") or []
        if len(per_rank) == self.world:
            set_rng_state(per_rank[self.rank], _loader_generators(self.train_loader))
        else:
            self.reporter.warn(
                f"the checkpoint holds random states of {len(per_rank)} process(es), this run has {self.world}: "
                "reseeding (the run will not repeat the uninterrupted one exactly)"
            )
            seed_everything(self.seed + 1000 * self.start_epoch, self.rank)

    def _training_graph(self) -> nn.Module:
        """``TrainingGraph(model)``, wrapped in DDP when there are several processes."""
        if self.world == 1:
            return TrainingGraph(self.model)
        find_unused = getattr(self.model, "ddp_find_unused_parameters", None)
        if find_unused is None:
            gens = _loader_generators(self.train_loader)
            state = get_rng_state(gens)
            self.model.train()
            batch = next(iter(self.train_loader)).to(self.device)
            unused = unused_parameters(self.model, batch, self.start_epoch)
            set_rng_state(state, gens)
            find_unused = bool(unused)
            if unused:
                self.reporter.info(
                    f"DDP: {len(unused)} parameter(s) get no gradient (e.g. {', '.join(unused[:3])}); "
                    "find_unused_parameters=True"
                )
        return wrap_ddp(self.model, self.device, bool(find_unused))

    def _write_run_files(self, lr_note: str, device_names: list[str], resumed: bool) -> None:
        if resumed or self.restarted:  # an interrupted atomic write leaves its temporary behind
            removed = remove_stale_temporaries(self.run_dir) + remove_stale_temporaries(self.last_path.parent)
            if removed:
                self.reporter.info(
                    f"removed {len(removed)} temporary file(s) of the interrupted run: "
                    + ", ".join(p.name for p in removed)
                )
        write_preset(self.run_dir, resolved_preset(self.preset, self.cfg))
        manifest = read_manifest(self.run_dir)  # a new run: the CLI's start record, if any
        if resumed or self.restarted:
            manifest.setdefault("resumes", []).append(
                {"time": now_iso(), "from_epoch": self.start_epoch, "argv": self.train_args.get("argv"),
                 "world_size": self.world, "device": str(self.device)}
            )
        if resumed:
            self.results.truncate(self.start_epoch)
        else:
            manifest.update({
                "command": "train",
                "argv": manifest.get("argv", self.train_args.get("argv")),
                "start_time": manifest.get("start_time", now_iso()),
                "versions": versions(),
                "device": str(self.device),
                "device_names": device_names,
                "world_size": self.world,
                "seed": self.seed,
                "amp": self.use_amp,
                "amp_dtype": self.amp_name,
                "batch": self.cfg.batch,
                "batch_per_process": self.train_loader.batch_size,
                "workers_per_process": self.train_loader.num_workers,
                "lr": self.lr,
                "lr_note": lr_note,
                "epochs": self.cfg.epochs,
                "iters_per_epoch": self.iters_per_epoch,
                "dataset": self.dataset_info,
                "fitness": f"best.pt = highest {FITNESS} (EMA weights when the preset has an EMA)",
                "train_args": self.train_args,
            })
            self.results.remove()
        write_manifest(self.run_dir, manifest)

    def _write_failed(self, error: DetcliError, kept: str) -> WriteError:
        """``error`` (a file not written: full disk, read-only folder) with what the run folder holds and, when
        ``--resume`` can continue from it, the command."""
        resume = (f"; fix that and continue with: detcli train --resume {self.run_dir}"
                  if resumable(self.run_dir) else "")
        return WriteError(f"{error}. {kept}{resume}")

    # ------------------------------------------------------------------ loop
    def fit(self) -> dict[str, Any]:
        """Train from the start (or the resumed epoch) to ``train_cfg.epochs``; returns the last epoch's row."""
        self._setup()
        rep, cfg = self.reporter, self.cfg
        rep.info(f"Logging results to {self.run_dir}")
        rep.info(f"Starting training for {cfg.epochs - self.start_epoch} epochs...")
        for epoch in range(self.start_epoch, cfg.epochs):
            started = time.monotonic()
            losses, lr = self.train_one_epoch(epoch)
            self._check_weights_finite(epoch)  # before validation and before any checkpoint
            result = self.validate(epoch) if self._validation_due(epoch) else None
            self.train_time += time.monotonic() - started
            self._end_epoch(epoch, losses, lr, result)
            if self.stopped_early:
                break
        return self._finish()

    def _validation_due(self, epoch: int) -> bool:
        if self.val_loader is None:
            return False
        in_last = epoch >= self.cfg.epochs - self.cfg.val_every_epoch_last
        return (epoch + 1) % self.cfg.val_interval == 0 or epoch + 1 == self.cfg.epochs or in_last

    def train_one_epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One pass over the training set; returns (mean of each loss over all processes, last lr)."""
        cfg, model, optimizer = self.cfg, self.model, self.optimizer
        self.graph.train()
        if _set_epoch(self.train_loader, epoch):
            self.reporter.info(f"epoch {epoch + 1}/{cfg.epochs}: the training data pipeline switches stage (augment.switch)")
        sums: dict[str, float] = {}
        n = 0
        lr = self.schedule.lr_at(epoch, 0)
        if self.run_clock is None:  # the run ETA: every epoch's iterations, at this process' rate
            self.run_clock = RunClock(cfg.epochs * self.iters_per_epoch, epoch * self.iters_per_epoch)
        bar = self.reporter.progress(self.train_loader, total=self.iters_per_epoch,
                                     description=f"epoch {epoch + 1}/{cfg.epochs}", run=self.run_clock)
        labels: dict[str, str] = {}
        for it, batch in enumerate(bar):
            if epoch == 0 and it < TRAIN_BATCHES and self.rank == 0:
                self.plots.train_batch(batch, it)
            lr = self.schedule.step(optimizer, epoch, it)
            batch = batch.to(self.device)
            images = batch.images.contiguous(memory_format=torch.channels_last)
            optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
                try:
                    losses = self.graph(images, batch.targets, batch.metas, epoch)
                except ValueError as e:
                    if not _one_value_per_channel(e):
                        raise
                    raise _batch_too_small(images, len(self.train_loader.dataset), self.model) from None
            total = sum(losses.values())
            terms = torch.stack([v.detach().float() for v in losses.values()] + [total.detach().float()]).tolist()
            values = dict(zip(losses, terms[:-1]))  # one device sync for every term and the total
            self._check_finite(values, terms[-1], epoch, it)
            self.scaler.scale(total).backward()
            if cfg.grad_clip is not None:
                self.scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.grad_clip)
            self.scaler.step(optimizer)
            self.scaler.update()
            if self.ema is not None:
                self.ema.update(model)
            n += 1
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v
            labels = labels or _loss_labels(sums)
            postfix = {"loss": sum(sums.values()) / n, **{labels[k]: s / n for k, s in sums.items()}, "lr": lr}
            if self.device.type == "cuda":
                postfix["mem_GB"] = torch.cuda.memory_reserved(self.device) / 1e9
            bar.update_postfix(postfix)
        means = {k: s / max(n, 1) for k, s in sums.items()}
        if is_dist() and means:
            reduced = reduce_mean(torch.tensor(list(means.values()), dtype=torch.float64, device=self.device))
            means = dict(zip(means, reduced.tolist()))
        return means, lr

    def _check_finite(self, values: dict[str, float], total: float, epoch: int, it: int) -> None:
        ok = math.isfinite(total) and all(math.isfinite(v) for v in values.values())
        if is_dist():  # every rank must stop together, or the others hang in the next all-reduce
            flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            everywhere = bool(flag.item() == 1.0)
        else:
            everywhere = ok
        if everywhere:
            return
        terms = ", ".join(f"{k}={v:.4g}" for k, v in values.items())
        where = "" if not ok or not is_dist() else " (on another process; this one had finite terms)"
        kept = self._kept(epoch)
        raise NonFiniteLossError(
            f"non-finite loss at epoch {epoch + 1}/{self.cfg.epochs}, iteration {it + 1}/{self.iters_per_epoch}"
            f"{where}: {terms}. Training stopped; {kept}. Try a lower train.optimizer.lr, train.grad_clip, "
            "--no-amp, or check the dataset for broken boxes."
        )

    def _check_weights_finite(self, epoch: int) -> None:
        """Stop (every process) when the model or EMA holds NaN/inf, before anything is saved."""
        bad = {"model": _non_finite(self.model.state_dict())}
        if self.ema is not None:
            bad["EMA"] = _non_finite(self.ema.module.state_dict())
        ok = not any(bad.values())
        if is_dist():
            flag = torch.tensor([1.0 if ok else 0.0], device=self.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MIN)
            if flag.item() == 1.0:
                return
        elif ok:
            return
        found = "; ".join(f"{where}: {', '.join(names[:3])}{' …' if len(names) > 3 else ''}"
                          for where, names in bad.items() if names) or "on another process"
        raise DetcliError(
            f"non-finite weights after epoch {epoch + 1}/{self.cfg.epochs} ({found}). Training stopped before "
            f"saving: {self._kept(epoch)}. Try a lower train.optimizer.lr, train.grad_clip or --no-amp."
        )

    def _kept(self, epoch: int, best_written: bool = False) -> str:
        """What the run folder holds when epoch ``epoch`` (0-indexed) did not finish saving."""
        if not best_written:
            if not self.last_path.exists():
                return "no checkpoint was written"
            return f"{self.last_path} still holds epoch {epoch} and best.pt is unchanged"
        last = f"{self.last_path} still holds epoch {epoch}" if self.last_path.exists() else "no last.pt was written"
        return f"{self.best_path} holds epoch {epoch + 1} (the best so far), {last}"

    @torch.no_grad()
    def validate(self, epoch: int) -> EvalResult:
        """COCO evaluation of the EMA model (or the model), synchronised from rank 0 first."""
        module = self.ema.module if self.ema is not None else self.model
        if is_dist():  # BN statistics differ per process; score rank 0's weights everywhere
            for t in module.state_dict().values():
                dist.broadcast(t, src=0)
        return evaluate(
            module, self.val_loader, self.val_dataset, self.device, self.preset.test, self.reporter,
            description=f"val {epoch + 1}/{self.cfg.epochs}",
        )

    # ------------------------------------------------------------------ epoch end
    def _end_epoch(self, epoch: int, losses: dict[str, float], lr: float, result: EvalResult | None) -> None:
        done = epoch + 1
        ap = result.stats["AP50-95"] if result is not None else math.nan
        improved = result is not None and math.isfinite(ap) and ap > self.best_map
        if improved:
            self.best_map, self.best_epoch, self.stale_validations = ap, done, 0
        if result is not None:
            self.last_result, self.last_result_epoch = result, done
            self.stale_validations += 0 if improved else 1
            self.stopped_early = self.cfg.patience is not None and self.stale_validations >= self.cfg.patience
        rng = _gather(get_rng_state(_loader_generators(self.train_loader)))
        row: dict[str, Any] = {"epoch": done, "time": round(self.train_time, 3)}
        row.update({f"train/{k}": v for k, v in losses.items()})
        row["lr/pg0"] = self.optimizer.param_groups[0]["lr"]
        row.update({f"metrics/{s}": (result.stats[s] if result is not None else None) for s in STAT_NAMES})
        self.last_row = row
        if self.rank == 0:
            best_written = False
            try:
                self.results.append(row)
                payload = self._payload(done, rng, result)
                if improved:  # first: the best AP that last.pt records must already be in best.pt
                    save_checkpoint(self.best_path, self._best_payload(payload))
                    best_written = True
                save_checkpoint(self.last_path, payload)
            except WriteError as e:  # a full disk, a folder made read-only: the previous files are intact
                kept = f"Training stopped at epoch {done}/{self.cfg.epochs}: {self._kept(epoch, best_written)}"
                raise self._write_failed(e, kept) from None
            self.plots.results(self.results)
            self.reporter.epoch_row(_console_row(row, self.cfg.epochs, self.best_map))
        barrier()

    def _payload(self, epochs_done: int, rng: list[dict], result: EvalResult | None) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "epoch": epochs_done,
            "model": self.model.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "schedule_state": self.schedule.state_dict(),
            "best_map": float(self.best_map),
            "early_stopping": {"best_epoch": self.best_epoch, "stale": self.stale_validations,
                               "stopped": self.stopped_early},
            "metrics": result.to_dict() if result is not None else None,
            "train_time": float(self.train_time),
            "preset": resolved_preset(self.preset, self.cfg),
            "input_size": list(input_size(self.preset, self.train_args.get("imgsz"))),  # [w, h] trained at
            "class_names": list(self.class_names),
            "cat_ids": [int(c) for c in self.cat_ids],
            "dataset": self.dataset_info,
            "rng": {"per_rank": rng},
            "train_args": self.train_args,
            "versions": versions(),
            "date": now_iso(),
        }

    def _best_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """``best.pt``: the weights to run (EMA when present) as ``model``; no optimizer, no EMA copy."""
        weights = self.ema.module.state_dict() if self.ema is not None else payload["model"]
        return {**payload, "model": weights, "ema": None, "optimizer": None, "scaler": None, "rng": None}

    def _finish(self) -> dict[str, Any]:
        rep = self.reporter
        done = int(self.last_row.get("epoch", self.cfg.epochs))
        rep.info(f"{done - self.start_epoch} epochs completed in {self.train_time / 3600:.3f} hours.")
        if self.stopped_early:
            best = (f"Best AP50-95 {self.best_map:.4f} at epoch {self.best_epoch}, kept in {self.best_path}."
                    if self.best_epoch > 0 else "No validation gave a finite AP50-95 (no best.pt).")
            rep.info(f"Stopped early at epoch {done}/{self.cfg.epochs}: AP50-95 has not improved for "
                     f"{self.stale_validations} validation(s) (train.patience {self.cfg.patience}). {best}")
        out = dict(self.last_row)
        out["best/AP50-95"] = self.best_map if self.best_map >= 0 else math.nan
        out["best/epoch"] = self.best_epoch if self.best_epoch > 0 else None
        out["stopped_early"] = self.stopped_early
        out["run_dir"] = str(self.run_dir)
        if self.last_result is not None:
            self._final_validation_report(self.last_result)
        if self.rank == 0:
            final = {"row": out, "metrics": self.last_result.to_dict() if self.last_result is not None else None}
            atomic_write_json(self.run_dir / "metrics.json", _json_safe(final))
        weights = f"{self.best_path} (best), {self.last_path} (last)" if self.best_path.exists() else str(self.last_path)
        rep.info(f"Results saved to {self.run_dir} · weights {weights}")
        return out

    def _final_validation_report(self, result: EvalResult) -> None:
        """Per-class table with P and R, and (rank 0) the curves and confusion matrix of the last validation."""
        from detcli.evaluation.evaluator import mean_precision_recall

        r = result
        epoch = self.last_result_epoch
        weights = "EMA" if self.ema is not None else "model"
        conf = f"; P, R at IoU 0.50, conf {r.curves.best_confidence:.3f} (max mean F1)" if r.curves is not None else ""
        mean_p, mean_r = mean_precision_recall(r)
        self.reporter.table(
            f"per class, epoch {epoch} ({weights} weights{conf})",
            ["class", "instances", "P", "R", "AP50-95", "AP50", "AR100"],
            [[c.name, c.instances, c.precision, c.recall, c.ap, c.ap50, c.ar100] for c in r.per_class]
            + [["all", sum(c.instances for c in r.per_class), mean_p, mean_r,
                r.stats["AP50-95"], r.stats["AP50"], r.stats["AR100"]]],
        )
        if self.rank != 0:
            return
        written = self.plots.validation(r)
        if written:
            which = ("the weights of best.pt" if self.best_epoch == epoch
                     else f"best.pt holds epoch {self.best_epoch}" if self.best_epoch > 0 else "no best.pt")
            self.reporter.info(
                f"validation plots from the last validation, epoch {epoch} ({weights} weights; {which}): "
                + ", ".join(p.name for p in written)
            )
        self.reporter.info(f"plots drawn in {self.plots.seconds:.1f} s in all")


# ---------------------------------------------------------------------- helpers
def _one_value_per_channel(error: ValueError) -> bool:
    """torch's refusal of BatchNorm statistics over one value per channel (training mode)."""
    return "Expected more than 1 value per channel when training" in str(error)


def _batch_too_small(images: torch.Tensor, split_size: int, model: nn.Module) -> DetcliError:
    """Why BatchNorm saw one value per channel: a batch of one image whose coarsest feature map is 1×1."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    stride = max(getattr(model, "strides", None) or (0,))
    coarsest = f"its stride-{stride} feature map is {-(-w // stride)}×{-(-h // stride)}, " if stride else ""
    split = f" (the training split has {split_size} image)" if split_size < 2 else ""
    return DetcliError(
        f"BatchNorm cannot train on a batch of {n} image of {w}×{h}: {coarsest}one value per channel{split}. "
        "Use --batch 2 or more per process with at least 2 training images, or a larger --imgsz"
    )


def _non_finite(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or inf (one device sync)."""
    floats = [(k, v) for k, v in state.items() if v.is_floating_point()]
    if not floats:
        return []
    finite = torch.stack([torch.isfinite(v).all() for _, v in floats]).tolist()
    return [k for (k, _), ok in zip(floats, finite) if not ok]


def _json_safe(obj: Any) -> Any:
    """NaN/inf → None (strict JSON), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _loss_labels(names: Iterable[str]) -> dict[str, str]:
    """Console labels of loss terms: ``loss_qfl`` → ``qfl``, ``aux_loss_dfl`` → ``aux_dfl`` (the full name where
    the short one would be empty, ``loss`` (the total's label) or taken)."""
    names = list(names)
    labels: dict[str, str] = {}
    for name in names:
        short = name.replace("loss_", "", 1)
        taken = short in labels.values() or (short != name and short in names)
        labels[name] = name if not short or short == "loss" or taken else short
    return labels


def _console_row(row: dict[str, Any], epochs: int, best: float) -> dict[str, Any]:
    """The console's row of a results.csv ``row``: ``elapsed`` is the run's training time so far (validation
    included, all epochs), ``loss`` the sum of the epoch's mean loss terms, which follow as a group (below the
    row where the row would not fit the console: :class:`~detcli.console.EpochTable`)."""
    terms = {k.removeprefix("train/"): v for k, v in row.items() if k.startswith("train/")}
    labels = _loss_labels(terms)
    out: dict[str, Any] = {
        "epoch": f"{row['epoch']:>{len(str(epochs))}}/{epochs}",
        "elapsed": format_duration(row["time"]),
        "loss": float(sum(terms.values())) if terms else math.nan,
        "losses": {labels[k]: v for k, v in terms.items()},
        "lr": row["lr/pg0"],
    }
    for stat in ("AP50-95", "AP50"):
        value = row.get(f"metrics/{stat}")
        out[stat] = math.nan if value is None else value
    out["best"] = best if best >= 0 else math.nan
    return out


def _set_epoch(loader: DataLoader, epoch: int) -> bool:
    """``set_epoch`` on the loader's sampler(s) (DistributedSampler reshuffles by epoch) and on its dataset
    (the transform's stage and caches: ``augment.switch``), where they have one; True when the dataset's
    pipeline stage changed. Called before the epoch's workers start, so they copy the new stage."""
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    seen: set[int] = set()
    for s in samplers:
        if s is not None and id(s) not in seen and hasattr(s, "set_epoch"):
            seen.add(id(s))
            s.set_epoch(epoch)
    dataset_epoch = getattr(loader.dataset, "set_epoch", None)
    return bool(dataset_epoch(epoch)) if callable(dataset_epoch) else False


def _loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """Distinct torch generators a DataLoader draws from (its own, its sampler's), in a fixed order."""
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    out: list[torch.Generator] = []
    for g in candidates:
        if isinstance(g, torch.Generator) and all(g is not o for o in out):
            out.append(g)
    return out


def _gather(obj: Any) -> list[Any]:
    """``[obj of rank 0, obj of rank 1, …]`` on every rank (``[obj]`` without DDP)."""
    if not is_dist():
        return [obj]
    parts: list[Any] = [None] * world_size()
    dist.all_gather_object(parts, obj)
    return parts


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or device.type


def _classes(train_dataset: Any, val_dataset: Any | None) -> tuple[list[str], list[int]]:
    names = getattr(train_dataset, "class_names", None)
    cat_ids = getattr(train_dataset, "cat_ids", None)
    if val_dataset is not None:
        val_names = getattr(val_dataset, "class_names", None)
        if names is not None and val_names is not None and list(names) != list(val_names):
            raise DetcliError(f"training classes {list(names)} differ from validation classes {list(val_names)}")
        names = names if names is not None else val_names
        cat_ids = cat_ids if cat_ids is not None else getattr(val_dataset, "cat_ids", None)
    if names is None:
        raise DetcliError("the training dataset has no class_names")
    cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(names) + 1))
    return list(names), [int(c) for c in cat_ids]


def _describe_datasets(train_dataset: Any, val_dataset: Any | None) -> dict[str, Any]:
    """Annotation file, image folder and fingerprint of each split that exposes them."""
    info: dict[str, Any] = {}
    for split, ds in (("train", train_dataset), ("val", val_dataset)):
        if ds is None or not hasattr(ds, "ann_file"):
            continue
        entry: dict[str, Any] = {"ann_file": str(ds.ann_file), "img_dir": str(getattr(ds, "img_dir", "")),
                                 "images": len(ds)}
        if callable(getattr(ds, "fingerprint", None)):
            entry["fingerprint"] = ds.fingerprint()
        info[split] = entry
    return info


__all__ = ["Trainer", "FITNESS"]
