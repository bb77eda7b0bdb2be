"""The run folder's records: ``preset.yaml`` and ``run.json`` at the start (the resumes added to it),
``results.csv`` one row per epoch, ``metrics.json`` at the end. Written on rank 0, each atomically."""
from __future__ import annotations

import json
import math
from typing import Any

from detcli.checkpoints.io import versions
from detcli.engine.hooks.base import HookBase
from detcli.engine.hooks.checkpoint import kept, write_failed
from detcli.engine.resume import gather
from detcli.engine.run_dir import now_iso, read_manifest, resolved_preset, write_manifest, write_preset
from detcli.errors import WriteError
from detcli.evaluation.evaluator import STAT_NAMES
from detcli.fileio import atomic_write_json, remove_stale_temporaries

FITNESS = "metrics/AP50-95"


class RunFiles(HookBase):
    """Writes the run's records; the epoch's row (``state.row``) is built on every rank."""

    def before_train(self, trainer: Any) -> None:
        trainer.device_names = gather(_device_name(trainer.device))  # a collective: every rank takes part
        if trainer.rank != 0:
            return
        trainer.spec = trainer.spec.replace(dataset=json.loads(json.dumps(
            {**_describe_datasets(trainer.train_loader.dataset, trainer.val_dataset), **(trainer.spec.dataset or {})},
            default=str)))  # hashes the annotation files
        try:
            _write_start(trainer)
        except WriteError as e:
            resumed, start = trainer.resume_from is not None, trainer.state.start_epoch
            held = f"{trainer.last_path} still holds epoch {start}" if resumed else "no checkpoint was written"
            raise write_failed(trainer, e, f"Training stopped before epoch {start + 1}: {held}") from None

    def after_epoch(self, trainer: Any) -> None:
        s = trainer.state
        row: dict[str, Any] = {"epoch": s.epoch + 1, "time": round(s.train_time, 3)}
        row.update({f"train/{k}": v for k, v in s.epoch_losses.items()})
        row["lr/pg0"] = trainer.optimizer.param_groups[0]["lr"]
        row.update({f"metrics/{n}": (s.result.stats[n] if s.result is not None else None) for n in STAT_NAMES})
        s.row = row
        if trainer.rank != 0:
            return
        try:
            trainer.results.append(row)
        except WriteError as e:
            stopped = f"Training stopped at epoch {s.epoch + 1}/{trainer.cfg.epochs}: {kept(trainer, s.epoch)}"
            raise write_failed(trainer, e, stopped) from None

    def after_train(self, trainer: Any) -> None:
        if trainer.rank == 0:
            result = trainer.state.last_result
            final = {"row": trainer.state.summary, "metrics": result.to_dict() if result is not None else None}
            atomic_write_json(trainer.run_dir / "metrics.json", json_safe(final))


def _write_start(t: Any) -> None:
    """Temporaries of a killed run removed, ``preset.yaml``, ``run.json`` (a new run: the CLI's start record
    completed; a resumed or restarted one: the resume added), ``results.csv`` cut back to the resumed epoch."""
    resumed = t.resume_from is not None
    if resumed or t.restarted:  # an interrupted atomic write leaves its temporary behind
        removed = remove_stale_temporaries(t.run_dir) + remove_stale_temporaries(t.last_path.parent)
        if removed:
            t.reporter.info(f"removed {len(removed)} temporary file(s) of the interrupted run: "
                            + ", ".join(p.name for p in removed))
    write_preset(t.run_dir, resolved_preset(t.spec.preset, t.cfg))
    manifest = read_manifest(t.run_dir)  # a new run: the CLI's start record, if any
    if resumed or t.restarted:
        manifest.setdefault("resumes", []).append(
            {"time": now_iso(), "from_epoch": t.state.start_epoch, "argv": t.train_args.get("argv"),
             "world_size": t.world, "device": str(t.device)}
        )
    if resumed:
        t.results.truncate(t.state.start_epoch)
    else:
        manifest.update({
            "command": "train",
            "argv": manifest.get("argv", t.train_args.get("argv")),
            "start_time": manifest.get("start_time", now_iso()),
            "versions": versions(),
            "device": str(t.device),
            "device_names": t.device_names,
            "world_size": t.world,
            "seed": t.seed,
            "amp": t.use_amp,
            "amp_dtype": t.amp_name,
            "batch": t.cfg.batch,
            "batch_per_process": t.train_loader.batch_size,
            "workers_per_process": t.train_loader.num_workers,
            "lr": t.lr,
            "lr_note": t.lr_note,
            "epochs": t.cfg.epochs,
            "iters_per_epoch": t.iters_per_epoch,
            "dataset": t.spec.dataset,
            "fitness": f"best.pt = highest {FITNESS} (EMA weights when the preset has an EMA)",
            "train_args": t.train_args,
        })
        t.results.remove()
    write_manifest(t.run_dir, manifest)


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


def _device_name(device: Any) -> str:
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or device.type


def json_safe(obj: Any) -> Any:
    """NaN/inf → None (strict JSON), recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


__all__ = ["RunFiles", "FITNESS", "json_safe"]
