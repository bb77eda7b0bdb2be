"""``detcli train``: preset + data + flags → a :class:`~detcli.engine.session.TrainSetup` → the engine."""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.config.loader import load_preset, train_overrides, validate_preset
from detcli.config.schema import Preset, TrainConfig
from detcli.console import Reporter
from detcli.data.dataset_config import DatasetConfig
from detcli.errors import DetcliError


@dataclass
class TrainRequest:
    preset: str | None
    data: str | None = None
    epochs: int | None = None
    batch: int | None = None
    imgsz: int | None = None
    device: str | None = None
    workers: int | None = None
    project: Path = Path("runs/train")
    name: str = "train"
    exist_ok: bool = False
    resume: str | None = None
    weights: Path | None = None
    seed: int = 0
    amp: bool | None = None
    patience: int | None = None
    overrides: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    force_plain: bool | None = None
    files: DatasetConfig | None = None  # from --train-ann/--train-images/--val-ann/--val-images


@dataclass
class BuildSpec:
    """Picklable recipe for one training process' model and loaders (crosses ``mp.spawn``)."""

    preset: Preset
    train_cfg: TrainConfig
    data: DatasetConfig
    imgsz: int | None
    workers: int
    weights: str | None
    force_plain: bool | None
    resume: bool = False  # the weights come from last.pt: no ImageNet backbone to load or mention


def build_parts(spec: BuildSpec, info) -> Any:
    """``TrainSetup.build``: datasets, loaders and model of one process (summaries on rank 0)."""
    from detcli.app.common import load_weights_into, model_summary
    from detcli.data.build import build_dataset, input_size
    from detcli.data.collate import collate
    from detcli.data.loader import available_cpus, build_dataloader, cap_workers
    from detcli.engine.session import TrainParts
    from detcli.models import build_model

    reporter = Reporter(silent=info.rank != 0, force_plain=spec.force_plain)
    preset, data = spec.preset, spec.data
    if data.train is None:
        how = {"coco": "add train.ann_file and train.img_dir", "yolo": "add train: <image folder>",
               "voc": "add train: <image set>"}[data.val.format]
        raise DetcliError(f"the dataset has no train split (dataset YAML: {how})")
    train_ds = build_dataset(preset, data.train, train=True, imgsz=spec.imgsz, epochs=spec.train_cfg.epochs)
    val_ds = build_dataset(preset, data.val, train=False, imgsz=spec.imgsz)
    if data.val.note:
        reporter.info(data.val.note)
    for kind, ds in (("train", train_ds), ("val", val_ds)):
        print_dataset_summary(reporter, kind, ds)
    model = build_model(preset, train_ds.num_classes, pretrained=spec.weights is None and not spec.resume)
    if getattr(model, "backbone_init_message", None):
        reporter.warn(model.backbone_init_message)
    if spec.weights is not None:
        reporter.info(load_weights_into(model, Path(spec.weights)))
    model_summary(reporter, preset, model, input_size(preset, spec.imgsz))
    collate_fn = functools.partial(collate, size_divisor=preset.input.size_divisor)
    distributed = info.world_size > 1
    per_process = info.batch_per_process
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", info.world_size))  # on this machine
    workers = cap_workers(spec.workers, local_processes)
    if workers < spec.workers:
        shared = f" shared by {local_processes} processes" if local_processes > 1 else ""
        reporter.warn(
            f"train.workers {spec.workers}: this machine gives the run {available_cpus()} CPU(s){shared}; "
            f"using {workers} DataLoader worker(s) per process"
        )
    train_loader = build_dataloader(
        train_ds, batch_size=per_process, workers=workers, shuffle=True,
        drop_last=len(train_ds) >= per_process * info.world_size, seed=info.seed, distributed=distributed,
        collate_fn=collate_fn,
    )
    val_loader = build_dataloader(
        val_ds, batch_size=per_process, workers=min(workers, 2), shuffle=False, drop_last=False,
        seed=info.seed, distributed=distributed, collate_fn=collate_fn,
    )
    dataset_info = {"config": data.model_dump(mode="json"), "imgsz": spec.imgsz}
    return TrainParts(model, train_loader, val_loader, val_ds, dataset_info)


def print_dataset_summary(reporter: Reporter, kind: str, ds: Any) -> None:
    """The counts table of a split and one warning per problem found (``train`` and ``train --check``)."""
    summary = ds.summary()
    reporter.print(summary.to_table(f"{kind}: {ds.ann_file}"))
    for line in summary.problems():
        reporter.warn(f"{kind}: {line}")


def train_command(req: TrainRequest) -> dict | None:
    from detcli.data.dataset_config import resolve_dataset
    from detcli.engine.checkpoint import read_any_checkpoint
    from detcli.engine.run_dir import new_run_dir
    from detcli.engine.session import TrainSetup, launch_training
    from detcli.distributed import is_main
    from detcli.engine.launch import backend_for, init_from_env, parse_device, process_device, torchrun_env

    device_type, ids = parse_device(req.device)  # a bad --device fails before a run folder is made
    if req.weights is not None:  # a missing, corrupt or refused file fails before a run folder is made
        if not Path(req.weights).is_file():
            raise DetcliError(f"--weights {req.weights}: file not found")
        read_any_checkpoint(req.weights)
    if torchrun_env() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # join the group first: rank 0 names the run folder and broadcasts it
        init_from_env(backend_for(device_type), process_device(device_type, ids))
    main_rank = is_main()
    reporter = Reporter(silent=not main_rank, force_plain=req.force_plain)
    reporter.header("train", req.device or "auto")
    if req.resume is not None:
        preset, train_cfg, data, run_dir, resume_from, imgsz, seed = _resume_state(req, reporter)
        weights = None
    else:
        preset, _ = load_preset(req.preset, req.overrides)
        data_spec = req.data or ("files" if req.files is not None else "demo")
        if data_spec == "demo":
            reporter.info("no --data: using the built-in demo dataset and the preset's demo schedule "
                          "(--set train.… and --epochs/--batch/--workers still win)")
        data = req.files if req.files is not None else resolve_dataset(data_spec)
        train_cfg = run_train_config(preset, req, demo=data_spec == "demo")
        run_dir = _shared_run_dir(req, new_run_dir) if main_rank else _shared_run_dir(req, None)
        resume_from, imgsz, seed, weights = None, req.imgsz, req.seed, req.weights
    spec = BuildSpec(preset, train_cfg, data, imgsz, train_cfg.workers,
                     str(weights) if weights is not None else None, req.force_plain, resume=resume_from is not None)
    setup = TrainSetup(
        preset=preset, train_cfg=train_cfg, build=functools.partial(build_parts, spec), run_dir=run_dir,
        device=req.device, seed=seed, amp=req.amp, resume_from=resume_from,
        train_args={"argv": req.argv, "data": str(req.data or ("files" if req.files else "demo")), "imgsz": imgsz,
                    "seed": seed, "device": req.device, "weights": str(weights) if weights else None},
        force_plain=req.force_plain,
    )
    return launch_training(setup)


def run_train_config(preset: Preset, req: TrainRequest, demo: bool) -> TrainConfig:
    """The ``train`` section a new run uses: the preset's, or its ``demo`` schedule on the demo data, with the
    values the user gave explicitly on top (``--set train.…``, ``--epochs/--batch/--workers/--amp/--patience``)."""
    explicit = train_overrides(req.overrides)
    flags = {"epochs": req.epochs, "batch": req.batch, "workers": req.workers, "amp": req.amp,
             "patience": req.patience}
    explicit.update({k: v for k, v in flags.items() if v is not None})
    return preset.train_with(explicit, demo=demo)


def _shared_run_dir(req: TrainRequest, make) -> Path:
    """Rank 0 creates the auto-numbered folder; under torchrun the others take the same one."""
    from detcli.distributed import broadcast_object

    path = make(req.project, req.name, exist_ok=req.exist_ok) if make is not None else None
    return Path(broadcast_object(str(path) if path is not None else None))


def _resume_state(req: TrainRequest, reporter: Reporter):
    """Preset, schedule, data and run folder of the run to continue, all read from its last.pt."""
    from detcli.engine.checkpoint import load_checkpoint
    from detcli.engine.run_dir import latest_run

    if req.resume == "latest":
        run_dir = latest_run(req.project)
        if run_dir is None:
            raise DetcliError(f"--resume: no run with weights/last.pt under {req.project}/")
        last = run_dir / "weights" / "last.pt"
    else:
        given = Path(req.resume)
        last = given if given.is_file() else given / "weights" / "last.pt"
        if not last.is_file():
            raise DetcliError(f"--resume {req.resume}: no checkpoint at {last}")
        run_dir = last.parent.parent
    ckpt = load_checkpoint(last)
    if ckpt.get("optimizer") is None:
        raise DetcliError(f"--resume {last}: not a resumable checkpoint (no optimizer state)")
    ignored = [f for f, v in (("--preset", req.preset), ("--data", req.data), ("--epochs", req.epochs),
                              ("--batch", req.batch), ("--imgsz", req.imgsz), ("--patience", req.patience),
                              ("--set", req.overrides or None))
               if v is not None]
    if ignored:
        reporter.warn(f"--resume continues the run as it was: ignoring {', '.join(ignored)}")
    preset = validate_preset(ckpt["preset"], source=f"stored in {last}")
    early = ckpt.get("early_stopping") or {}
    if early.get("stopped"):
        raise DetcliError(
            f"--resume {run_dir}: the run is finished: it stopped early at epoch {ckpt['epoch']}/"
            f"{preset.train.epochs}, AP50-95 not improving for {early.get('stale')} validation(s) (train.patience "
            f"{preset.train.patience}; best at epoch {early.get('best_epoch')}, in best.pt). To train on, start a new "
            f"run from its weights: detcli train --preset {preset.name} --weights {run_dir}/weights/best.pt"
        )
    if int(ckpt["epoch"]) >= preset.train.epochs:
        raise DetcliError(
            f"--resume {run_dir}: the run already finished its {preset.train.epochs} epochs; to train on, start a "
            f"new run from its weights: detcli train --preset {preset.name} --weights {run_dir}/weights/best.pt"
        )
    data = DatasetConfig.model_validate(ckpt["dataset"]["config"])
    args = ckpt.get("train_args", {})
    reporter.info(f"resuming {run_dir} from epoch {ckpt['epoch']}")
    return preset, preset.train, data, run_dir, last, args.get("imgsz"), int(args.get("seed", 0))
