"""The ``detcli`` command line: parse, validate, hand over to ``detcli.app``. Nothing else lives here."""
from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Optional

import typer
from typer.core import TyperGroup

from detcli.cli_help import HelpCommand
from detcli.errors import DetcliError
from detcli.interrupt import EXIT_CODE, Interrupted


def _examples(*lines: str) -> str:
    """An example block that help keeps one command per line (click's \\b: no re-wrapping)."""
    return "\b\n" + "\n".join(f"  {line}" for line in lines)


class _Commands(TyperGroup):
    """detcli's commands. Ctrl-C inside one reaches :func:`main` as :class:`~detcli.interrupt.Interrupted`,
    where typer would turn the ``KeyboardInterrupt`` into a silent exit 130."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise Interrupted() from None


app = typer.Typer(
    cls=_Commands,
    name="detcli",
    help=(
        "Object detection from the command line: faithful NanoDet-Plus, RTMDet, RetinaNet and DeFCN presets "
        "(`detcli presets` lists them).\n\n"
        "Examples (without --data: the built-in demo data):\n\n"
        + _examples(
            "detcli presets                   # params, GFLOPs, COCO AP of each",
            "detcli train --preset nanodet-plus-m",
            "detcli train -p nanodet-plus-m --data coco.yaml --batch 96",
            "detcli eval --weights runs/train/train/weights/best.pt",
            "detcli predict images/ --conf 0.35",
            "detcli export --weights best.pt --format onnx",
            "detcli inspect-anchors --preset retinanet-r50-fpn",
        )
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)

PresetOpt = typer.Option(
    None, "--preset", "-p", metavar="PRESET",
    help="Preset name or YAML file (`detcli presets` lists them; `detcli presets NAME` prints one to copy and edit).",
)
OfficialPresetOpt = typer.Option(
    None, "--preset", "-p", metavar="PRESET",
    help="Preset of an official (non-detcli) checkpoint: a name (`detcli presets` lists them) or a YAML file.",
)
DataOpt = typer.Option(
    None, "--data", metavar="DATA",
    help="Dataset: a YAML (COCO, YOLO data.yaml, VOC), a COCO/YOLO/VOC folder, or 'demo' (the default).",
)
EvalDataOpt = typer.Option(
    None, "--data", metavar="DATA",
    help="Dataset: a YAML (COCO, YOLO data.yaml, VOC), a COCO/YOLO/VOC folder, or 'demo' (default: the checkpoint's "
    "dataset).",
)
SetOpt = typer.Option(
    [], "--set", metavar="FIELD=VALUE", help="Override any preset field, e.g. train.optimizer.lr=0.002 (repeatable)."
)
InferSetOpt = typer.Option(
    [], "--set", metavar="FIELD=VALUE",
    help="Override a preset field of the checkpoint, e.g. test.iou_thr=0.5 (repeatable).",
)
InspectSetOpt = typer.Option(
    [], "--set", metavar="FIELD=VALUE",
    help="Override a model.* or input.* field, the ones the assignment depends on, e.g. "
    "model.assigner.pos_iou_thr=0.4 (RetinaNet) or input.size=[416,416] (repeatable).",
)
DeviceOpt = typer.Option(
    None, "--device", metavar="DEVICE", help="cpu, 0, or 0,1 (several GPUs: DDP). Default: GPU 0 if any."
)
InferDeviceOpt = typer.Option(
    None, "--device", metavar="DEVICE", help="One device: cpu, 0 or cuda:1. Default: GPU 0 if any."
)
InferImgszOpt = typer.Option(
    None, "--imgsz", min=32, max=4096,  # detcli.config.schema's MIN_INPUT_SIZE, MAX_INPUT_SIZE
    help="Input size, long side (default: the size the checkpoint was trained at, else the preset's).",
)
TrainAnnOpt = typer.Option(
    None, "--train-ann", metavar="JSON", help="Train COCO JSON (instead of --data; with --train-images)."
)
TrainImgOpt = typer.Option(
    None, "--train-images", metavar="DIR", help="Folder the train JSON's file_names are relative to."
)
ValAnnOpt = typer.Option(
    None, "--val-ann", metavar="JSON", help="Val COCO JSON (instead of --data; with --val-images)."
)
ValImgOpt = typer.Option(None, "--val-images", metavar="DIR", help="Folder the val JSON's file_names are relative to.")
WeightsOpt = typer.Option(
    None, "--weights", metavar="FILE", help="Checkpoint or exported model (default: latest run's best.pt)."
)
ExistOkOpt = typer.Option(False, "--exist-ok", help="Reuse an existing folder --project/--name instead of numbering.")


def _builtin_names() -> str:
    from detcli.config.loader import builtin_presets

    return ", ".join(builtin_presets())


@app.command(
    cls=HelpCommand,
    help=(
        "Train a detector. Without --data it trains on the built-in demo dataset with the preset's short "
        "demo schedule.\n\n"
        "Examples:\n\n"
        + _examples(
            "detcli train --preset nanodet-plus-m",
            "detcli train -p nanodet-plus-m --data data.yaml --epochs 100 --device 0",
            "detcli train -p nanodet-plus-m --set train.optimizer.lr=0.002",
            "detcli train -p rtmdet-s --data data.yaml --patience 20",
            "detcli train --resume              # continue the latest run",
            "detcli train --resume runs/train/train3",
            "detcli train -p nanodet-plus-m --data data.yaml --check  # data report",
            "torchrun --nproc_per_node 2 -m detcli train -p nanodet-plus-m",
        )
    )
)
def train(
    preset: Optional[str] = PresetOpt,
    data: Optional[str] = DataOpt,
    epochs: Optional[int] = typer.Option(None, "--epochs", min=1, help="Epochs (default: the preset's)."),
    batch: Optional[int] = typer.Option(None, "--batch", min=1, help="Global batch size (split over GPUs)."),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", min=32, help="Input size (long side for keep-ratio presets)."),
    device: Optional[str] = DeviceOpt,
    workers: Optional[int] = typer.Option(None, "--workers", min=0, help="Data-loader workers per process."),
    project: Optional[Path] = typer.Option(
        None, "--project", metavar="DIR",
        help="Parent folder of run folders (default runs/train; runs/check with --check).",
    ),
    name: Optional[str] = typer.Option(
        None, "--name", metavar="NAME",
        help="Run folder name, auto-numbered: train, train2, … (check, check2, … with --check).",
    ),
    exist_ok: bool = typer.Option(False, "--exist-ok", help="Reuse an existing run folder instead of numbering."),
    resume: Optional[str] = typer.Option(
        None, "--resume", metavar="[RUN]", help="Continue the latest run in --project, or the run folder / last.pt "
        "given."
    ),
    weights: Optional[Path] = typer.Option(
        None, "--weights", metavar="FILE",
        help="Initial weights: a detcli checkpoint or an official checkpoint of the family.",
    ),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    amp: Optional[bool] = typer.Option(
        None, "--amp/--no-amp", help="Mixed precision: float16 on CUDA, bfloat16 on CPU (default: the preset's "
        "train.amp, or its demo's; auto: on where it is fast).",
    ),
    patience: Optional[int] = typer.Option(
        None, "--patience", min=1, help="Stop after N validations without a better AP50-95 (best.pt is kept). "
        "Default: the preset's train.patience, off in the built-in presets as in MMDetection and NanoDet."
    ),
    tensorboard: Optional[bool] = typer.Option(
        None, "--tensorboard/--no-tensorboard", help="Log losses, lr, val metrics and images to RUN/tensorboard/ "
        "(default: the preset's train.tensorboard; needs pip install \"detcli[tensorboard]\").",
    ),
    overrides: list[str] = SetOpt,
    train_ann: Optional[Path] = TrainAnnOpt,
    train_images: Optional[Path] = TrainImgOpt,
    val_ann: Optional[Path] = ValAnnOpt,
    val_images: Optional[Path] = ValImgOpt,
    check: bool = typer.Option(
        False, "--check",
        help="Report on the data instead of training: the dataset tables, box size and aspect per class, images "
        "without labels, duplicate images and boxes; labels.jpg and report.json in runs/check/checkN.",
    ),
) -> None:
    from detcli.app import preflight
    from detcli.api.train import train_request
    from detcli.app.train import TrainRequest

    if preset is None and resume is None:
        raise DetcliError(f"give --preset (one of: {_builtin_names()}) or --resume")
    files = _split_files(data, train_ann, train_images, val_ann, val_images)
    if resume is None:  # the cheap checks first: torch and OpenCV are imported after them
        preflight.check_preset(preset, list(overrides))
        files = files if files is not None else preflight.resolve_data(data)
        preflight.check_weights(weights, default_latest=False)
    request = TrainRequest(
        preset=preset, data=data, epochs=epochs, batch=batch, imgsz=imgsz, device=device, workers=workers,
        project=project or Path("runs/check" if check else "runs/train"), name=name or ("check" if check else "train"),
        exist_ok=exist_ok, resume=resume, weights=weights, seed=seed, amp=amp, patience=patience,
        tensorboard=tensorboard, overrides=list(overrides), argv=list(sys.argv), files=files,
    )
    if check:
        from detcli.app.check import check_command

        check_command(request)
    else:
        train_request(request)


NmsOpt = typer.Option(
    None, "--nms/--no-nms",
    help="Class-aware NMS on or off (default: the preset's test.nms; NMS-free DeFCN: --nms turns it on).",
)


ExactOpt = typer.Option(
    False, "--exact",
    help="Run the network as loaded (float32, NCHW, BatchNorms not folded, no TF32 on CUDA), one image per forward "
         "pass, as the official code runs it: the path that reproduces the official numbers (raw outputs bit for bit on the same CPU and "
         "thread count). Default: the optimised model (BatchNorms folded, channels_last on CPU), faster but equal "
         "only to float32 rounding (up to ~3e-5 relative; two near-tied detections may swap). DETCLI_NO_FUSE=1 "
         "is the same as --exact.",
)


def _nms_override(nms: Optional[bool]) -> list[str]:
    """``--nms/--no-nms`` as the ``--set`` override it stands for."""
    return [] if nms is None else [f"test.nms={'class_aware' if nms else 'none'}"]


@app.command(
    name="eval",
    cls=HelpCommand,
    help=(
        "COCO bbox evaluation (faster-coco-eval, or pycocotools when it is not installed or "
        "DETCLI_COCO_EVAL=pycocotools: the same numbers): the 12 stats and a per-class table (P and R at the "
        "confidence of the highest mean F1, AP), saved as metrics.json beside the scored detections "
        "(predictions.json, COCO results format), the PR, F1, P and R curves (PR_curve.png, F1_curve.png, "
        "P_curve.png, R_curve.png) and a confusion matrix with a background row and column "
        "(confusion_matrix.png, counts in confusion_matrix.json).\n\n"
        "Examples:\n\n"
        + _examples(
            "detcli eval                 # latest run's best.pt, on its own data",
            "detcli eval --weights best.pt --data data.yaml --batch 16",
            "detcli eval -p nanodet-plus-m --weights official.ckpt --data coco.yaml",
        )
    ),
)
def eval_(
    weights: Optional[Path] = WeightsOpt,
    data: Optional[str] = EvalDataOpt,
    preset: Optional[str] = OfficialPresetOpt,
    batch: int = typer.Option(16, "--batch", min=1, help="Batch size."),
    imgsz: Optional[int] = InferImgszOpt,
    device: Optional[str] = InferDeviceOpt,
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loader workers."),
    conf: Optional[float] = typer.Option(None, "--conf", min=0.0, max=1.0, help="Score threshold (default: preset)."),
    iou: Optional[float] = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU (default: preset)."),
    max_det: Optional[int] = typer.Option(None, "--max-det", min=1, help="Detections per image (default: preset)."),
    nms: Optional[bool] = NmsOpt,
    exact: bool = ExactOpt,
    confusion_conf: float = typer.Option(
        0.25, "--confusion-conf", min=0.0, max=1.0,
        help="Score a detection needs to enter the confusion matrix (matched to GT at IoU ≥ 0.45).",
    ),
    project: Path = typer.Option(
        Path("runs/eval"), "--project", metavar="DIR", help="Parent folder of result folders."
    ),
    name: str = typer.Option("eval", "--name", metavar="NAME", help="Result folder name (auto-numbered)."),
    overrides: list[str] = InferSetOpt,
    val_ann: Optional[Path] = ValAnnOpt,
    val_images: Optional[Path] = ValImgOpt,
) -> None:
    from detcli.app import preflight

    files = _split_files(data, None, None, val_ann, val_images)
    preflight.check_weights(weights)  # the cheap checks first: torch and OpenCV are imported after them
    files = files if files is not None else preflight.resolve_data(data)
    from detcli.app.evaluate import EvalRequest, eval_command

    eval_command(
        EvalRequest(
            weights=weights, data=data, preset=preset, batch=batch, imgsz=imgsz, device=device, workers=workers,
            conf=conf, iou=iou, max_det=max_det, project=project, name=name,
            overrides=list(overrides) + _nms_override(nms), files=files, confusion_conf=confusion_conf,
            exact=exact,
        )
    )


@app.command(
    cls=HelpCommand,
    help=(
        "Detect objects in images or videos; writes annotated copies and one predictions.json (COCO results "
        "format, image ids numbered from 1 in reading order, file_name beside each record).\n\n"
        "SOURCE is an image, a folder, a glob ('imgs/*.jpg', quoted) or a video.\n\n"
        "Examples:\n\n"
        + _examples(
            "detcli predict images/           # latest run's best.pt",
            "detcli predict street.mp4 --weights best.pt --conf 0.5",
            "detcli predict 'shots/*.png' --batch 16 --no-save",
        )
    )
)
def predict(
    source: str = typer.Argument(..., metavar="SOURCE", help="Image, folder, glob or video."),
    weights: Optional[Path] = WeightsOpt,
    preset: Optional[str] = OfficialPresetOpt,
    conf: float = typer.Option(0.35, "--conf", min=0.0, max=1.0, help="Score threshold."),
    iou: Optional[float] = typer.Option(None, "--iou", min=0.0, max=1.0, help="NMS IoU (default: preset)."),
    max_det: Optional[int] = typer.Option(None, "--max-det", min=1, help="Detections per image (default: preset)."),
    nms: Optional[bool] = NmsOpt,
    exact: bool = ExactOpt,
    imgsz: Optional[int] = InferImgszOpt,
    batch: int = typer.Option(8, "--batch", min=1, help="Images per forward pass."),
    device: Optional[str] = InferDeviceOpt,
    project: Path = typer.Option(
        Path("runs/predict"), "--project", metavar="DIR", help="Parent folder of output folders."
    ),
    name: str = typer.Option("predict", "--name", metavar="NAME", help="Output folder name (auto-numbered: predict, "
                             "predict2, …)."),
    exist_ok: bool = ExistOkOpt,
    save: bool = typer.Option(True, "--save/--no-save", help="Write annotated images/videos."),
    overrides: list[str] = InferSetOpt,
) -> None:
    from detcli.app.predict import PredictRequest, predict_command

    predict_command(
        PredictRequest(
            source=source, weights=weights, preset=preset, conf=conf, iou=iou, max_det=max_det, imgsz=imgsz,
            batch=batch, device=device, project=project, name=name, exist_ok=exist_ok, save=save, exact=exact,
            overrides=list(overrides) + _nms_override(nms),
        )
    )


@app.command(
    cls=HelpCommand,
    help=(
        "Export a checkpoint to ONNX or TorchScript for deployment, with its metadata inside and in a JSON beside "
        "it, then check the file against PyTorch (fails above tolerance).\n\n"
        "End-to-end (default): normalised images in; decoding, score filter and NMS inside; fixed-size outputs "
        "num_dets (B), boxes (B, max_det, 4), scores, labels (padding -1). --no-nms: the raw head outputs "
        "(decoding described in the JSON).\n\n"
        "Examples:\n\n"
        + _examples(
            "detcli export --weights runs/train/train/weights/best.pt",
            "detcli export --weights best.pt --format torchscript --imgsz 416",
            "detcli export --weights m_320.ckpt -p nanodet-plus-m --no-nms",
            "detcli export --weights best.pt -o deploy/ --set test.score_thr=0.3",
        )
    )
)
def export(
    weights: Optional[Path] = typer.Option(None, "--weights", help="Checkpoint (default: latest run's best.pt)."),
    format: str = typer.Option("onnx", "--format", "-f", help="onnx or torchscript."),
    preset: Optional[str] = OfficialPresetOpt,
    imgsz: Optional[int] = typer.Option(None, "--imgsz", min=32, max=4096, help="Input size (default: the checkpoint's)."),
    opset: int = typer.Option(17, "--opset", help="ONNX opset (11–20)."),
    dynamic: bool = typer.Option(False, "--dynamic", help="Dynamic batch axis."),
    half: bool = typer.Option(False, "--half", help="FP16 weights and input (needs a CUDA --device)."),
    simplify: bool = typer.Option(
        False, "--simplify", help="Simplify the ONNX graph with onnxsim (not in the export extra: pip install onnxsim)."
    ),
    nms: bool = typer.Option(True, "--nms/--no-nms", help="Post-processing inside the graph, or raw head outputs."),
    output: Optional[str] = typer.Option(  # a str: a trailing "/" says folder
        None, "--output", "-o", metavar="PATH",
        help="File or folder (a folder: existing, or ending in /). Default: beside --weights.",
    ),
    device: Optional[str] = InferDeviceOpt,
    overrides: list[str] = typer.Option(
        [], "--set", metavar="FIELD=VALUE", help="Override a test.* or input.* field of the checkpoint's preset (what the file bakes in), "
        "e.g. test.score_thr=0.3 (repeatable).",
    ),
) -> None:
    from detcli.app import preflight
    from detcli.inference.loading import latest_best

    preflight.check_weights(weights)  # before the exporter imports torch
    from detcli.app.export import ExportRequest, export_command

    export_command(
        ExportRequest(
            weights=weights if weights is not None else latest_best(), format=format.lower(), preset=preset,
            imgsz=imgsz, opset=opset, dynamic=dynamic, half=half, simplify=simplify, nms=nms, output=output,
            device=device, overrides=list(overrides),
        )
    )


@app.command(
    name="inspect-anchors",
    cls=HelpCommand,
    help=(
        "See which priors every ground-truth box gets: the preset's own assigner over a dataset split. Prints "
        "statistics (positives per GT and per level, GTs left without a positive and why, the prior fit with a "
        "verdict and the --set to try), saves them as stats.json and draws the selected images, one panel per "
        "feature level. Assigners that look at predictions use --weights, else an untrained model (said so).\n\n"
        "Examples (without --data: the built-in demo data):\n\n"
        + _examples(
            "detcli inspect-anchors --preset retinanet-r50-fpn",
            "detcli inspect-anchors -p nanodet-plus-m --data coco.yaml --images 8",
            "detcli inspect-anchors --weights best.pt --image-ids 12,40",
            "detcli inspect-anchors --compare nanodet-plus-m,retinanet-r18-fpn",
            "detcli inspect-anchors -p retinanet-r18-fpn --set model.anchor.octave_base_scale=3",
            "detcli inspect-anchors -p rtmdet-s --name rtmdet-s  # runs/inspect/rtmdet-s",
        )
    ),
)
def inspect_anchors(
    preset: Optional[str] = PresetOpt,
    data: Optional[str] = DataOpt,
    split: str = typer.Option("train", "--split", metavar="SPLIT", help="Dataset split: train or val."),
    images: int = typer.Option(4, "--images", min=0, help="How many images to draw (the first ones with a box)."),
    image_ids: Optional[str] = typer.Option(
        None, "--image-ids", metavar="IDS", help="Draw these image ids instead, e.g. 12,40."
    ),
    weights: Optional[Path] = typer.Option(
        None, "--weights", metavar="FILE", help="Trained checkpoint: its predictions drive prediction-based assigners."
    ),
    train_aug: bool = typer.Option(False, "--train-aug", help="Training augmentation instead of the val resize."),
    compare: Optional[str] = typer.Option(
        None, "--compare", metavar="PRESETS", help="Presets side by side, e.g. P1,P2 (one sheet)."
    ),
    project: Path = typer.Option(
        Path("runs/inspect"), "--project", metavar="DIR", help="Parent folder of output folders."
    ),
    name: str = typer.Option("inspect", "--name", metavar="NAME", help="Output folder name (auto-numbered: inspect, "
                             "inspect2, …)."),
    exist_ok: bool = ExistOkOpt,
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="DIR", help="Output folder, used as given (instead of --project/--name)."
    ),
    imgsz: Optional[int] = typer.Option(None, "--imgsz", min=32, max=4096, help="Input size, long side (default: preset)."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Statistics over the first N images only."),
    batch: int = typer.Option(8, "--batch", min=1, help="Images per assignment batch."),
    workers: int = typer.Option(2, "--workers", min=0, help="Data-loader workers."),
    device: Optional[str] = InferDeviceOpt,
    seed: int = typer.Option(0, "--seed", help="Seed of the untrained model and of --train-aug."),
    overrides: list[str] = InspectSetOpt,
) -> None:
    from detcli.app.inspect_anchors import InspectRequest, inspect_command

    inspect_command(
        InspectRequest(
            preset=preset, data=data, split=split, images=images, image_ids=_int_list(image_ids, "--image-ids"),
            weights=weights, train_aug=train_aug, compare=_name_list(compare), output=output, project=project,
            name=name, exist_ok=exist_ok, imgsz=imgsz, limit=limit, batch=batch, workers=workers, device=device,
            seed=seed, overrides=list(overrides),
        )
    )


@app.command(
    cls=HelpCommand,
    help=(
        "The built-in presets: family, input size, parameters and GFLOPs (each family counted its own way, "
        "said below the table) and the official COCO AP. With NAME (a preset or a YAML file): that preset "
        "resolved (base merged, every default filled in) as YAML that `detcli train -p` accepts unchanged.\n\n"
        "Examples:\n\n"
        + _examples(
            "detcli presets",
            "detcli presets rtmdet-s > my.yaml   # edit, then: detcli train -p my.yaml",
            "detcli presets my.yaml --set train.epochs=50",
        )
    )
)
def presets(
    name: Optional[str] = typer.Argument(None, metavar="NAME", help="A preset name or YAML file to print resolved."),
    overrides: list[str] = SetOpt,
) -> None:
    from detcli.app.presets import presets_command

    presets_command(name, list(overrides))


def _int_list(text: Optional[str], flag: str) -> list[int]:
    """``"12,40 57"`` → [12, 40, 57]."""
    items = [t for t in (text or "").replace(",", " ").split() if t]
    try:
        return [int(t) for t in items]
    except ValueError:
        raise DetcliError(f"{flag} {text!r}: give whole numbers separated by commas, e.g. 12,40") from None


def _name_list(text: Optional[str]) -> list[str]:
    return [t for t in (text or "").replace(",", " ").split() if t]


def _split_files(data, train_ann, train_images, val_ann, val_images):
    """``--train-ann/--train-images/--val-ann/--val-images`` → a DatasetConfig (None when not used)."""
    given = [x for x in (train_ann, train_images, val_ann, val_images) if x is not None]
    if not given:
        return None
    if data is not None:
        raise DetcliError("give either --data or the --train-ann/--val-ann file flags, not both")
    if val_ann is None or val_images is None:
        raise DetcliError("--val-ann and --val-images are both needed (evaluation runs on the val split)")
    from detcli.data.dataset_config import DatasetConfig

    return DatasetConfig.from_files(val_ann, val_images, train_ann, train_images)


def _normalise_resume(argv: list[str]) -> list[str]:
    """``--resume`` may stand alone (latest run): give it the value 'latest' for the parser."""
    out = list(argv)
    for i, arg in enumerate(out):
        if arg == "--resume" and (i + 1 == len(out) or out[i + 1].startswith("-")):
            out.insert(i + 1, "latest")
            break
    return out


def user_message(err: DetcliError) -> str:
    """The message of ``err``, without the wrapper torch adds when it re-raises an error from a DataLoader
    worker ("Caught DatasetError in DataLoader worker process 0.\nOriginal Traceback …"): the user gets
    the original message, never a traceback."""
    text = str(err)
    if not (text.startswith("Caught ") and "\nOriginal Traceback" in text):
        return text
    marker = f"\n{type(err).__module__}.{type(err).__qualname__}: "  # the traceback's last line
    start = text.rfind(marker)
    return text[start + len(marker):].rstrip("\n") if start >= 0 else text.rstrip("\n").splitlines()[-1]


_python_formatwarning = warnings.formatwarning


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """detcli's own warnings (e.g. a corrupt image skipped) print as their message, without a source line."""
    if category.__module__.startswith("detcli."):
        return f"WARNING {message}\n"
    return _python_formatwarning(message, category, filename, lineno, line)


def main() -> None:
    from detcli.cpus import choose_wait_policy

    choose_wait_policy()  # before anything imports torch (libgomp reads OMP_WAIT_POLICY once, when loaded)
    from detcli.console import Reporter

    warnings.formatwarning = _format_warning  # DataLoader workers fork after this and inherit it
    args = _normalise_resume(sys.argv[1:])
    try:
        app(args=args, prog_name="detcli", standalone_mode=True)
    except DetcliError as e:
        Reporter().error(user_message(e))
        raise SystemExit(2) from None
    except (Interrupted, KeyboardInterrupt) as e:  # Ctrl-C, in a command or outside one
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank gets SIGINT; rank 0 speaks
            Reporter().error(str(e) if isinstance(e, Interrupted) else str(Interrupted()), label="interrupted:")
        raise SystemExit(EXIT_CODE) from None


if __name__ == "__main__":
    main()
