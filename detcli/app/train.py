"""``detcli train``: preset + data + flags → a :class:`~detcli.engine.session.TrainSetup` → the engine."""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from detcli.config.loader import load_preset, train_overrides, validate_preset
from detcli.config.schema import Preset, TrainConfig
from detcli.console import Reporter
from detcli.data.dataset_config import DatasetConfig
from detcli.errors import DetcliError
from detcli.interrupt import TrainingInterrupted
from detcli.run_spec import RunSpec

if TYPE_CHECKING:
    from detcli.engine.hooks import HookBase
    from detcli.engine.run_dir import StartRecord


@dataclass
class TrainRequest:
    preset: str | Preset | None  # a built-in name, a YAML file, or a validated Preset (the Python API)
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
    tensorboard: bool | None = None  # --tensorboard (None: the preset's train.tensorboard)
    overrides: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    force_plain: bool | None = None
    files: DatasetConfig | None = None  # from --train-ann/--train-images/--val-ann/--val-images

    def __post_init__(self) -> None:
        """The flags' values that no run can use (train and ``train --check``): a message naming the flag."""
        from detcli.config.schema import MAX_INPUT_SIZE, MIN_INPUT_SIZE
        from detcli.engine.run_dir import MAX_SEED

        if self.data is not None and not self.data.strip():
            raise DetcliError(f"--data {self.data!r} is empty: give a dataset YAML or folder, or --data demo for "
                              "the built-in demo dataset")
        if not 0 <= self.seed <= MAX_SEED:
            raise DetcliError(f"--seed {self.seed}: a seed is an integer from 0 to {MAX_SEED} (2**32 - 1, the range "
                              "NumPy's generator takes)")
        if self.imgsz is not None and not MIN_INPUT_SIZE <= self.imgsz <= MAX_INPUT_SIZE:
            raise DetcliError(f"--imgsz {self.imgsz}: the input size is {MIN_INPUT_SIZE} to {MAX_INPUT_SIZE} px "
                              "(three times the largest official recipe, 1333 × 800)")


@dataclass
class RunPlan:
    """What a ``train`` invocation runs: a new run, a run resumed from its ``last.pt``, or a run started again
    from epoch 1 with its start record (``restart``: it stopped before its first ``last.pt``)."""

    preset: Preset
    train_cfg: TrainConfig
    data: DatasetConfig
    run_dir: Path
    train_args: dict[str, Any]  # a StartArgs dump: this invocation's argv and device, the run's data, imgsz, seed…
    resume_from: Path | None = None
    restart: bool = False
    spec: RunSpec = field(init=False)

    def __post_init__(self) -> None:
        """The run's :class:`RunSpec`: ``--imgsz`` (as recorded for the run) resolved here, once; the class names
        are the datasets' (the trainer completes them)."""
        self.spec = RunSpec(self.preset, [], [], imgsz=self.train_args.get("imgsz"), origin="new")

    @property
    def weights(self) -> str | None:
        """The initial weights to load (a new or restarted run; a resumed one loads last.pt)."""
        return None if self.resume_from is not None else self.train_args.get("weights")


@dataclass
class BuildSpec:
    """Picklable recipe for one training process' model and loaders (crosses ``mp.spawn``)."""

    spec: RunSpec
    train_cfg: TrainConfig
    data: DatasetConfig
    workers: int
    weights: str | None
    force_plain: bool | None
    resume: bool = False  # the weights come from last.pt: no ImageNet backbone to load or mention

    @property
    def preset(self) -> Preset:
        return self.spec.preset

    @property
    def imgsz(self) -> int | None:
        return self.spec.imgsz


def build_parts(spec: BuildSpec, info) -> Any:
    """``TrainSetup.build``: datasets, loaders and model of one process (summaries on rank 0)."""
    from detcli.inference.loading import load_weights_into
    from detcli.models.summary import model_summary
    from detcli.data.build import build_dataset
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
    model_summary(reporter, preset, model, spec.spec.input_size)
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
        collate_fn=collate_fn, aspect_ratio_grouping=preset.data.aspect_ratio_grouping,
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


def train_command(req: TrainRequest, hooks: list[HookBase] | tuple = ()) -> dict | None:
    """Run ``req`` (new, resumed or restarted); returns the final row (:meth:`Trainer.fit`) with the user's
    ``hooks`` run after the default ones."""
    from detcli.distributed import is_main
    from detcli.checkpoints.io import read_any_checkpoint
    from detcli.engine.launch import backend_for, init_from_env, process_device, torchrun_env
    from detcli.inference.device import parse_device
    from detcli.engine.run_lock import RunLock

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
    with contextlib.ExitStack() as held:  # rank 0 holds the run folder's lock until the run ends
        lock = (lambda run_dir: held.enter_context(RunLock(run_dir, req.argv))) if main_rank else None
        if req.resume is not None:
            run_dir = _folder_to_resume(req)
            if lock is not None:
                lock(run_dir)
            plan = _resume_plan(req, run_dir, reporter)
        else:
            plan = _new_run_plan(req, reporter, lock)
        return _launch(plan, req, list(hooks))


def _launch(plan: RunPlan, req: TrainRequest, hooks: list[HookBase]) -> dict | None:
    from detcli.engine.session import TrainSetup, launch_training

    train_cfg = plan.train_cfg
    if req.tensorboard is not None and req.tensorboard != train_cfg.tensorboard:  # --tensorboard on a resume
        train_cfg = train_cfg.model_copy(update={"tensorboard": req.tensorboard})
    _check_tensorboard(train_cfg)
    spec = BuildSpec(plan.spec, train_cfg, plan.data, train_cfg.workers, plan.weights, req.force_plain,
                     resume=plan.resume_from is not None)
    setup = TrainSetup(
        preset=plan.spec, train_cfg=train_cfg, build=functools.partial(build_parts, spec),
        run_dir=plan.run_dir, device=req.device, seed=plan.train_args["seed"], amp=req.amp,
        resume_from=plan.resume_from, restart=plan.restart, train_args=plan.train_args, force_plain=req.force_plain,
        hooks=hooks,
    )
    try:
        return launch_training(setup)
    except KeyboardInterrupt:  # Ctrl-C: say what the run folder holds and how to continue (detcli.interrupt)
        raise TrainingInterrupted(plan.run_dir, req.argv) from None


def _new_run_plan(req: TrainRequest, reporter: Reporter, lock: Callable[[Path], Any] | None) -> RunPlan:
    """A new run: its folder made and, on rank 0 (``lock`` given), locked and given its start record before any
    other file of the run is written."""
    import uuid

    from detcli.data.dataset_config import resolve_dataset
    from detcli.engine.run_dir import StartArgs, StartRecord, new_run_dir, resolved_preset, write_start_record

    if isinstance(req.preset, Preset):
        preset = validate_preset(req.preset.model_dump(mode="json"), req.overrides, f"preset {req.preset.name}")
    else:
        preset, _ = load_preset(req.preset, req.overrides)
    data_spec = req.data or ("files" if req.files is not None else "demo")
    if data_spec == "demo":
        reporter.info("no --data: using the built-in demo dataset and the preset's demo schedule "
                      "(--set train.… and --epochs/--batch/--workers still win)")
    data = req.files if req.files is not None else resolve_dataset(data_spec)
    train_cfg = run_train_config(preset, req, demo=data_spec == "demo")
    _check_tensorboard(train_cfg)  # before the run folder is made
    args = StartArgs(argv=req.argv, data=str(data_spec), imgsz=req.imgsz, seed=req.seed, device=req.device,
                     weights=str(Path(req.weights).resolve()) if req.weights is not None else None,
                     run_id=uuid.uuid4().hex)
    record = StartRecord(preset=resolved_preset(preset, train_cfg), dataset=data.model_dump(mode="json"),
                         train_args=args)

    def make(project: Path, name: str, exist_ok: bool) -> Path:
        run_dir = new_run_dir(project, name, exist_ok=exist_ok)
        lock(run_dir)
        write_start_record(run_dir, record)
        return run_dir

    run_dir = _shared_run_dir(req, make if lock is not None else None)
    return RunPlan(preset, train_cfg, data, run_dir, args.model_dump(mode="json"))


def run_train_config(preset: Preset, req: TrainRequest, demo: bool) -> TrainConfig:
    """The ``train`` section a new run uses: the preset's, or its ``demo`` schedule on the demo data, with the
    values the user gave explicitly on top (``--set train.…``, ``--epochs/--batch/--workers/--amp/--patience``)."""
    explicit = train_overrides(req.overrides)
    flags = {"epochs": req.epochs, "batch": req.batch, "workers": req.workers, "amp": req.amp,
             "patience": req.patience, "tensorboard": req.tensorboard}
    explicit.update({k: v for k, v in flags.items() if v is not None})
    return preset.train_with(explicit, demo=demo)


def _check_tensorboard(train_cfg: TrainConfig) -> None:
    """A run that logs to TensorBoard needs the package: a message naming the extra, before anything runs."""
    if train_cfg.tensorboard:
        from detcli.engine.hooks.tensorboard import require_tensorboard

        require_tensorboard()


def _shared_run_dir(req: TrainRequest, make) -> Path:
    """Rank 0 creates the auto-numbered folder; under torchrun the others take the same one."""
    from detcli.distributed import broadcast_object

    path = make(req.project, req.name, exist_ok=req.exist_ok) if make is not None else None
    return Path(broadcast_object(str(path) if path is not None else None))


def _folder_to_resume(req: TrainRequest) -> Path:
    """The run folder ``--resume`` names: the latest resumable run under ``--project``, a folder, or its last.pt."""
    from detcli.engine.run_dir import latest_run

    if req.resume == "latest":
        run_dir = latest_run(req.project)
        if run_dir is None:
            raise DetcliError(f"--resume: no run to continue under {req.project}/ (no weights/last.pt, no run.json)")
        return run_dir
    given = Path(req.resume)
    if given.is_file():
        return given.parent.parent
    if not given.is_dir():
        raise DetcliError(f"--resume {req.resume}: no such run folder or checkpoint")
    return given


def _resume_plan(req: TrainRequest, run_dir: Path, reporter: Reporter) -> RunPlan:
    """Continue ``run_dir`` from its last.pt; or, when the run stopped before its first last.pt (or the last.pt
    there is an earlier run's, --exist-ok), start it again from epoch 1 with its start record."""
    from detcli.checkpoints.io import load_checkpoint
    from detcli.engine.run_dir import read_start_record

    given = Path(req.resume)
    last = given if given.is_file() else run_dir / "weights" / "last.pt"
    record = read_start_record(run_dir)
    ignored = [f for f, v in (("--preset", req.preset), ("--data", req.data), ("--epochs", req.epochs),
                              ("--batch", req.batch), ("--imgsz", req.imgsz), ("--patience", req.patience),
                              ("--set", req.overrides or None))
               if v is not None]
    if ignored:
        reporter.warn(f"--resume continues the run as it was: ignoring {', '.join(ignored)}")
    ckpt = load_checkpoint(last) if last.is_file() else None
    if ckpt is not None and record is not None and not given.is_file():
        ckpt_run = (ckpt.get("train_args") or {}).get("run_id")
        if ckpt_run != record.train_args.run_id:
            reporter.info(f"{last} is of an earlier run in this folder (--exist-ok); this run had not written its "
                          "first checkpoint yet")
            ckpt = None
    if ckpt is None:
        if record is None:
            raise DetcliError(
                f"--resume {req.resume}: {run_dir} holds neither weights/last.pt nor a start record (run.json): the "
                "run stopped before it saved anything; start it again (the same command without --resume)"
            )
        return _restart_plan(req, run_dir, record, reporter)
    return _checkpoint_plan(req, run_dir, last, ckpt, record, reporter)


def _checkpoint_plan(req: TrainRequest, run_dir: Path, last: Path, ckpt: dict[str, Any], record: StartRecord | None,
                     reporter: Reporter) -> RunPlan:
    """Preset, schedule, data and seed of the run to continue, all read from its last.pt."""
    from detcli.data.recorded import recorded_dataset

    if ckpt.get("optimizer") is None:
        raise DetcliError(f"--resume {last}: not a resumable checkpoint (no optimizer state)")
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
    data = recorded_dataset(ckpt["dataset"].get("config"), f"checkpoint {last}", hint="put the data back where it was")
    recorded = ckpt.get("train_args") or (record.train_args.model_dump(mode="json") if record is not None else {})
    args = _resumed_args(req, recorded, f"checkpoint {last}")
    reporter.info(f"resuming {run_dir} from epoch {ckpt['epoch']}")
    return RunPlan(preset, preset.train, data, run_dir, args, resume_from=last)


def _restart_plan(req: TrainRequest, run_dir: Path, record: StartRecord, reporter: Reporter) -> RunPlan:
    """The run of ``run_dir`` from epoch 1 again, exactly as its start record says it began."""
    from detcli.data.recorded import recorded_dataset

    source = run_dir / "run.json"
    preset = validate_preset(record.preset, source=f"stored in {source}")
    data = recorded_dataset(record.dataset, f"run record {source}", hint="put the data back where it was")
    args = _resumed_args(req, record.train_args.model_dump(mode="json"), f"run record {source}")
    weights = args.get("weights")
    if weights is not None and not Path(weights).is_file():
        raise DetcliError(f"--resume {run_dir}: the run started from --weights {weights}, which is no longer "
                          "there; put it back, or start a new run")
    reporter.info(f"resuming {run_dir}: it stopped before its first checkpoint (weights/last.pt), so it starts "
                  f"again from epoch 1 as {source} records it (same preset, data and seed {args['seed']})")
    return RunPlan(preset, preset.train, data, run_dir, args, restart=True)


def _resumed_args(req: TrainRequest, recorded: Any, source: str) -> dict[str, Any]:
    """The recorded invocation (data, imgsz, seed, weights, run id), with this one's argv and device."""
    from pydantic import ValidationError

    from detcli.engine.run_dir import StartArgs

    if not isinstance(recorded, dict):
        raise DetcliError(f"{source}: train_args is a {type(recorded).__name__}, not a mapping")
    try:
        args = StartArgs.model_validate({"data": "demo", **recorded, "argv": req.argv, "device": req.device})
    except ValidationError as e:
        problems = "; ".join(f"train_args.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:3])
        raise DetcliError(f"{source}: {problems}") from None
    return args.model_dump(mode="json")
