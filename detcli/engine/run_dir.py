"""Run folders (Ultralytics style): ``runs/train/train``, ``train2``, …, with a manifest and results.csv.

Layout of a training run::

    run.json         manifest: argv, versions, devices, seed, world size, dataset fingerprint, batch, lr, times;
                     its ``start`` record (the first file a run writes) says how to start the run again
    preset.yaml      the resolved preset (train section as actually run)
    results.csv      one row per epoch: epoch, time, train/<loss>…, lr/pg0, metrics/<COCO stat>…
    weights/last.pt  every epoch (resume from it)
    weights/best.pt  when metrics/AP50-95 improves (EMA weights as ``model``)
    .lock            while a process trains there (:mod:`detcli.engine.run_lock`)

``--resume`` continues from ``weights/last.pt``; a run stopped before its first ``last.pt`` starts again from
epoch 1 with its ``start`` record (:class:`StartRecord`): the same preset, data, input size, seed and initial
weights, so it ends as the uninterrupted run would.
"""
from __future__ import annotations

import csv
import io
import json
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from detcli.checkpoints.record import MAX_SEED, StartArgs
from detcli.config.schema import Preset, TrainConfig
from detcli.errors import DetcliError
from detcli.fileio import atomic_write_text


def new_run_dir(project: str | Path = "runs/train", name: str = "train", exist_ok: bool = False) -> Path:
    """Create and return ``project/name``, or ``name2``, ``name3``… when it exists (unless ``exist_ok``).

    The folder is created here, so two runs started together get different folders.

    Raises:
        DetcliError: the folder cannot be created (read-only place, a file in the way, full disk), naming it.
    """
    project = Path(project)
    _make_folder(project, parents=True)
    if exist_ok:
        path = project / name
        _make_folder(path)
        return path
    n = 1
    while True:
        path = project / (name if n == 1 else f"{name}{n}")
        try:
            path.mkdir()
        except FileExistsError:  # a folder or a file of that name (maybe a run started at the same moment)
            n += 1
            continue
        except OSError as e:
            raise _folder_error(path, e) from None
        return path


def _make_folder(path: Path, parents: bool = False) -> None:
    try:
        path.mkdir(parents=parents, exist_ok=True)
    except OSError as e:
        raise _folder_error(path, e) from None


def _folder_error(path: Path, e: OSError) -> DetcliError:
    blocker = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        reason = f"{blocker} is a file, not a folder"
    else:
        reason = e.strerror or str(e) or type(e).__name__
    return DetcliError(f"cannot create the folder {path}: {reason} (choose another --project or --name)")


def latest_run(project: str | Path = "runs/train") -> Path | None:
    """The run under ``project`` that ``--resume`` can continue (a ``weights/last.pt`` or a start record) and was
    written last (None if there is none)."""
    stamps: dict[Path, float] = {}
    for last in Path(project).glob("**/weights/last.pt"):
        stamps[last.parent.parent] = last.stat().st_mtime
    for manifest in Path(project).glob("**/run.json"):
        if "start" in read_manifest(manifest.parent):
            run = manifest.parent
            stamps[run] = max(stamps.get(run, 0.0), manifest.stat().st_mtime)
    return max(stamps, key=stamps.__getitem__) if stamps else None


class StartRecord(BaseModel):
    """What starts a run again from epoch 1: written to ``run.json`` before anything else of the run."""

    preset: dict[str, Any] = Field(description="resolved_preset(): the train section as run")
    dataset: dict[str, Any] = Field(description="the DatasetConfig dump")
    train_args: StartArgs


def write_start_record(run_dir: Path, record: StartRecord) -> Path:
    """A new ``run.json`` holding ``record`` (the trainer adds the rest of the manifest to it)."""
    args = record.train_args
    return write_manifest(run_dir, {"command": "train", "argv": args.argv, "start_time": now_iso(),
                                    "start": record.model_dump(mode="json")})


def read_start_record(run_dir: Path) -> StartRecord | None:
    """The start record of ``run_dir/run.json``; None when there is none (no file, an older detcli's run).

    Raises:
        DetcliError: a record that does not validate, naming run.json and the field.
    """
    start = read_manifest(run_dir).get("start")
    if start is None:
        return None
    try:
        return StartRecord.model_validate(start)
    except ValidationError as e:
        problems = "; ".join(f"start.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:3])
        raise DetcliError(f"{Path(run_dir) / 'run.json'}: not a start record ({problems})") from None


def resumable(run_dir: Path) -> bool:
    """Whether ``detcli train --resume run_dir`` has something to continue from."""
    return (Path(run_dir) / "weights" / "last.pt").is_file() or "start" in read_manifest(run_dir)


def resolved_preset(preset: Preset, train_cfg: TrainConfig) -> dict[str, Any]:
    """The preset as a plain dict with the ``train`` section that actually runs (demo overrides applied)."""
    data = preset.model_dump(mode="json")
    data["train"] = train_cfg.model_dump(mode="json")
    return data


def write_preset(run_dir: Path, preset_dict: dict[str, Any]) -> Path:
    path = Path(run_dir) / "preset.yaml"
    atomic_write_text(path, yaml.safe_dump(preset_dict, sort_keys=False, allow_unicode=True))
    return path


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> Path:
    path = Path(run_dir) / "run.json"
    atomic_write_text(path, json.dumps(manifest, indent=2, default=str) + "\n")
    return path


def read_manifest(run_dir: Path) -> dict[str, Any]:
    """``run.json`` as a dict; ``{}`` when it is missing or not a JSON object."""
    path = Path(run_dir) / "run.json"
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


class ResultsCSV:
    """``results.csv``: one row per epoch, written with the csv module.

    Columns come from the first row (``epoch``, ``time``, ``train/<loss>``…, ``lr/pg0``, ``metrics/…``);
    a later row with new keys adds the extra columns. Values missing in a row (metrics of an epoch without
    validation) are left empty; NaN is written as ``nan``. Every change rewrites the file atomically (a few
    hundred short rows at most), so a full disk or a kill never leaves half a row.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def read(self) -> tuple[list[str], list[dict[str, str]]]:
        if not self.path.is_file():
            return [], []
        with open(self.path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)

    def truncate(self, last_epoch: int) -> None:
        """Keep the rows with ``epoch`` ≤ ``last_epoch`` (resume); delete the file if none is left."""
        columns, rows = self.read()
        kept = [r for r in rows if _as_int(r.get("epoch")) is not None and _as_int(r["epoch"]) <= last_epoch]
        if not kept:
            self.remove()
            return
        self._write(columns, kept)

    def remove(self) -> None:
        try:
            self.path.unlink(missing_ok=True)
        except OSError as e:
            raise DetcliError(f"cannot remove {self.path}: {e.strerror or e}") from None

    def append(self, row: dict[str, Any]) -> None:
        values = {k: _cell(v) for k, v in row.items()}
        columns, rows = self.read()
        merged = columns + [k for k in values if k not in columns]
        self._write(merged, rows + [values])

    def _write(self, columns: list[str], rows: list[dict[str, Any]]) -> None:
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, fieldnames=columns, restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, text.getvalue())


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _as_int(text: str | None) -> int | None:
    try:
        return int(float(text)) if text not in (None, "") else None
    except ValueError:
        return None


__all__ = [
    "new_run_dir",
    "latest_run",
    "MAX_SEED",
    "StartArgs",
    "StartRecord",
    "write_start_record",
    "read_start_record",
    "resumable",
    "resolved_preset",
    "write_preset",
    "write_manifest",
    "read_manifest",
    "now_iso",
    "ResultsCSV",
]
