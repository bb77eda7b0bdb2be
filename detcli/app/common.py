"""Pieces the train/eval/predict commands share: devices, checkpoints → models, summaries."""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detcli.config.loader import load_preset, parse_override, validate_preset
from detcli.config.schema import Preset
from detcli.console import Reporter
from detcli.errors import DetcliError

if TYPE_CHECKING:  # torch and the models load when a model is built: a command reports bad input before that
    import torch

    from detcli.engine.run_record import RunRecord
    from detcli.models.base import Detector


def select_device(spec: str | None) -> torch.device:
    """'cpu', '0', 'cuda:0' or None (GPU 0 when there is one) → the device of a single-process command."""
    import torch

    from detcli.engine.launch import parse_device

    device_type, ids = parse_device(spec)
    if len(ids) > 1:
        raise DetcliError(f"--device {spec}: eval and predict run on one device; give one id")
    return torch.device(device_type, ids[0]) if device_type == "cuda" else torch.device(device_type)


def latest_best(project: Path = Path("runs/train")) -> Path:
    """``best.pt`` of the most recently written run under ``project``.

    Raises:
        DetcliError: there is none; when a run there has a ``last.pt`` only (stopped before its first
            validation, or killed), the message names it and says how to continue or use it.
    """
    candidates = sorted(project.glob("*/weights/best.pt"), key=lambda p: p.stat().st_mtime)
    if candidates:
        return candidates[-1]
    unfinished = sorted(project.glob("*/weights/last.pt"), key=lambda p: p.stat().st_mtime)
    if unfinished:
        last = unfinished[-1]
        raise DetcliError(
            f"no --weights given and no run under {project}/ has a best.pt yet: {last} is from a run that stopped "
            f"before its first validation (or was killed). Continue it with: detcli train --resume "
            f"{last.parent.parent}; or use its weights as they are with --weights {last}"
        )
    raise DetcliError(f"no --weights given and no trained run found under {project}/ (train one first)")


@dataclass
class LoadedModel:
    """A model to run and what its checkpoint says about it.

    ``dataset`` is the checkpoint's dataset record as stored (``dataset.config`` is validated where it is
    used: :func:`detcli.data.recorded.recorded_dataset`); ``trained_imgsz`` the ``--imgsz`` it was trained at
    (:attr:`detcli.engine.run_record.RunRecord.trained_imgsz`; None: the preset's size, or an official file).
    """

    model: Detector
    preset: Preset
    class_names: list[str]
    cat_ids: list[int]
    dataset: dict[str, Any] | None
    weights: Path
    official: bool
    trained_imgsz: int | None = None


def load_for_inference(
    weights: Path | None, preset_name: str | None, overrides: list[str], device: torch.device,
    reporter: Reporter | None = None,
) -> LoadedModel:
    """A detcli checkpoint (preset, classes and dataset inside) or an official one (needs ``preset_name``).

    Without ``weights``, the latest run's ``best.pt``. ``reporter`` gets one line naming the file used.
    """
    from detcli.engine.checkpoint import read_any_checkpoint
    from detcli.engine.run_record import RunRecord

    path = Path(weights) if weights is not None else latest_best()
    if reporter is not None:
        reporter.info(f"weights {path}" + (" (latest run)" if weights is None else ""))
    raw = read_any_checkpoint(path)  # a detcli file: its validated record
    if isinstance(raw, RunRecord):
        if preset_name is not None:
            raise DetcliError(f"{path} is a detcli checkpoint: it carries its preset; drop --preset")
        loaded = _load_detcli(raw, path, overrides)
    else:
        if preset_name is None:
            raise DetcliError(f"{path} is not a detcli checkpoint; give --preset to say which architecture it is")
        loaded = _load_official(raw, path, preset_name, overrides)
    loaded.model.to(device).eval()
    return loaded


NO_FUSE_ENV = "DETCLI_NO_FUSE"  # =1: as --exact (kept for scripts written before the flag)
INFERENCE_PATHS = {  # what inference_path() names, as predict prints it and eval's metrics.json records it
    "exact": "the network as loaded: float32, NCHW, BatchNorms unfolded, as the official code runs it",
    "optimised": "BatchNorms folded, channels_last on CPU: equal to float32 rounding, not bit for bit "
                 "(--exact for the official numbers)",
    "exported": "an exported graph run by onnxruntime",
}


def exact_requested(flag: bool) -> bool:
    """``--exact``, or the environment's ``DETCLI_NO_FUSE=1`` (its equivalent)."""
    return flag or os.environ.get(NO_FUSE_ENV, "").strip() not in ("", "0")


def inference_batch(batch: int, exact: bool) -> int:
    """Images per forward pass: ``batch``, or 1 on the exact path. The official tests run one image at a time,
    and the conv kernels pick their algorithm by batch size, so even equal-shape images stacked together agree
    with a pass of one only to float32 rounding (benchmarks/batch_exactness.py)."""
    return 1 if exact_requested(exact) else batch


def inference_model(model: Detector, reporter: Reporter | None = None, exact: bool = False) -> Detector:
    """What ``predict`` and ``eval`` run (:func:`inference_path` names it).

    Default: the fastest form of ``model`` (:func:`detcli.models.fuse.fuse_for_inference`: BatchNorms folded,
    channels_last on CPU), equal to float32 rounding only. ``exact`` (``--exact``, or ``DETCLI_NO_FUSE=1``):
    ``model`` as loaded (float32, as every checkpoint loads), in eval mode, and no TF32 for CUDA convs and matmuls
    (PyTorch lets cuDNN use it by default), so each conv sums in float32 in the official layout: the official
    code's numbers. Also ``model`` as loaded when the optimisation fails (``reporter`` says why); an exported
    (onnxruntime) model is returned as it is.
    """
    import torch

    from detcli.models.base import Detector
    from detcli.models.fuse import fuse_for_inference

    if not isinstance(model, Detector):
        return model  # an exported (onnxruntime) model is already optimised
    if exact_requested(exact):
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        return model.eval()
    try:
        return fuse_for_inference(model)
    except Exception as e:  # an optimisation must not stop a run
        if reporter is not None:
            reporter.warn(f"running the model as loaded: optimising it for inference failed ({e}); "
                          f"--exact skips the attempt")
        return model


def inference_path(model: object) -> str:
    """The key in :data:`INFERENCE_PATHS` of a model :func:`inference_model` returned."""
    from detcli.models.base import Detector
    from detcli.models.fuse import InferenceDetector

    if isinstance(model, InferenceDetector):
        return "optimised"
    return "exact" if isinstance(model, Detector) else "exported"


def _load_detcli(record: RunRecord, path: Path, overrides: list[str]) -> LoadedModel:
    """Model, preset and classes of a ``detcli-1`` checkpoint (its EMA weights when ``last.pt`` has them)."""
    from detcli.models import build_model

    record.require(path, "preset", "model", "class_names")
    preset = validate_preset(record.preset, overrides, source=f"stored in {path}")
    names = record.class_names
    cat_ids = record.cat_ids if record.cat_ids is not None else list(range(1, len(names) + 1))
    state = record.weights_to_run(path)
    model = build_model(preset, len(names), pretrained=False)
    found = model.classes_in(state)
    if found is not None and found != len(names):
        raise DetcliError(
            f"{path}: the weights are for {found} classes but the checkpoint lists {len(names)} class names "
            "(an edited or mixed-up file)"
        )
    _load_checked(model, state, path)
    return LoadedModel(model, preset, list(names), list(cat_ids), record.get("dataset"), path, False,
                       record.trained_imgsz)


def _load_official(raw: Any, path: Path, preset_name: str, overrides: list[str]) -> LoadedModel:
    """An official checkpoint of the preset's family. Class names: the ones it records, else COCO's for 80
    classes, else ``class0…``. The class count: the preset's ``model.num_classes``, else the recorded
    names', else 80 (COCO)."""
    from detcli.data.coco_names import COCO80
    from detcli.models import build_model

    preset, _ = load_preset(preset_name, overrides)
    declared = preset.model.num_classes
    model = build_model(preset, declared or 80, pretrained=False)
    names = model.official_class_names(raw)
    if names is not None and declared is None and len(names) != model.num_classes:
        model = build_model(preset, len(names), pretrained=False)  # the class count the checkpoint records
    load_official(model, raw, path)
    classes = model.num_classes
    if names is not None and len(names) != classes:
        names = None  # names of another class count than the (loaded) head: not this model's labels
    if names is not None and [n.replace("_", " ") for n in names] == COCO80:
        names = None  # COCO's classes as NanoDet writes them ("traffic_light"): use COCO's own names
    if names is None:
        names = COCO80 if classes == 80 else [f"class{i}" for i in range(classes)]
    cat_ids = COCO80_IDS if names == COCO80 else list(range(1, classes + 1))
    return LoadedModel(model, preset, list(names), cat_ids, None, path, True)


def load_official(model: Detector, raw: Any, path: Path) -> None:
    """Load an official checkpoint of the model's family (NanoDet / MMDetection key names), strictly."""
    try:
        model.load_official_state_dict(raw)
    except DetcliError as e:
        raise DetcliError(f"{path} as an official {type(model).__name__} checkpoint: {e}") from None


def _load_checked(model: Detector, state: dict[str, torch.Tensor], path: Path) -> None:
    try:
        model.load_checked(state)
    except DetcliError as e:
        raise DetcliError(f"{path}: {e}") from None


def model_summary(reporter: Reporter, preset: Preset, model: Detector, size: tuple[int, int]) -> None:
    """Parameters, GFLOPs at the input size, strides and assigner.

    The parameter count the family's reference publishes (``Detector.param_count_convention``) is labelled
    with who counts that way, and the GFLOPs are counted as that reference counts them
    (``Detector.flop_count_convention``), so both can be compared with the paper's or the README's figure.
    """
    from detcli.models import assigner_name, strides_of
    from detcli.models.complexity import inference_params, reported_gflops, total_params

    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    try:
        flops, counted = reported_gflops(model, (size[1], size[0]))  # size is (w, h), the count takes (h, w)
        flops_text = f"{flops:.2f} G ({counted}) at {size[0]}×{size[1]}"
    except Exception as e:  # a summary must not stop a run
        flops_text = f"n/a ({e})"
    infer = inference_params(model)
    infer_params, infer_conv = infer["all"], infer["conv"]
    counted_as = {"conv": "", "all": ""}
    if model.param_count_source:
        counted_as[model.param_count_convention] = f" (as {model.param_count_source} counts)"
    reporter.key_values(
        f"preset {preset.name} ({preset.model.type})",
        {
            "description": preset.description,
            "parameters (inference graph)": f"{infer_params:,}{counted_as['all']}",
            "parameters (training graph)": f"{total_params(model):,} ({trainable:,} trainable)",
            "conv parameters (inference graph)": f"{infer_conv:,}{counted_as['conv']}",
            "GFLOPs": flops_text,
            "strides": ", ".join(map(str, strides_of(preset))),
            "assigner": assigner_name(preset),
            "reference": preset.reference,
        },
    )


def load_runnable(
    weights: Path | None, preset_name: str | None, overrides: list[str], imgsz: int | None, device: torch.device,
    reporter: Reporter, exact: bool = False,
) -> tuple[LoadedModel, int | None]:
    """What ``eval`` and ``predict`` run: a checkpoint (:func:`load_for_inference`) or an ONNX file from
    ``detcli export`` (run by onnxruntime, its input size fixed), and the ``--imgsz`` to transform images to.
    ``exact`` (the ``--exact`` flag) refuses an ONNX file: onnxruntime's kernels are not the official code's."""
    from detcli.export.runtime import is_exported, load_exported

    if weights is not None and is_exported(weights):
        if exact:
            raise DetcliError(f"--exact: {weights} is an exported model, run by onnxruntime's own kernels; --exact "
                              "runs a checkpoint (detcli .pt or official .pth/.ckpt) as loaded")
        if preset_name is not None or overrides:
            raise DetcliError(f"{weights} is an exported model: it carries its preset; drop --preset/--set")
        reporter.info(f"weights {weights}")
        return load_exported(weights, imgsz, device, reporter), None  # the exported size is its preset's
    loaded = load_for_inference(weights, preset_name, overrides, device, reporter)
    return loaded, inference_imgsz(imgsz, loaded, overrides)


def inference_imgsz(imgsz: int | None, loaded: LoadedModel, overrides: list[str]) -> int | None:
    """The ``--imgsz`` of eval and predict: the flag when given, else the size the checkpoint was trained at.

    None (the preset's size) for official checkpoints, for detcli checkpoints that record no size, and when
    ``--set input.size=…`` asks for another size. The trained size is what the checkpoint's record says
    (``LoadedModel.trained_imgsz``, read with the model: the file is not read a second time).
    """
    if imgsz is not None or loaded.official or any(parse_override(o)[0] == ["input", "size"] for o in overrides):
        return imgsz
    return loaded.trained_imgsz


COCO80_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33,
    34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61,
    62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
]


def load_weights_into(model: Detector, path: Path) -> str:
    """Initial weights for training (``train --weights``): every tensor whose name and shape match.

    A detcli checkpoint gives its (EMA) weights; an official one is renamed first
    (:meth:`Detector.official_state_dict`). Tensors whose shape differs (a head trained for another
    class count) keep their fresh initialisation. Returns a one-line report.
    """
    from detcli.engine.checkpoint import read_any_checkpoint
    from detcli.engine.run_record import RunRecord

    raw = read_any_checkpoint(path)
    if isinstance(raw, RunRecord):
        source = raw.weights_to_run(path)
    else:
        try:
            source = model.official_state_dict(raw)
        except DetcliError as e:
            raise DetcliError(f"--weights {path}: not a detcli or {type(model).__name__} checkpoint: {e}") from None
    own = model.state_dict()
    matched = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise DetcliError(f"--weights {path}: no tensor matches this model's names and shapes")
    model.load_state_dict(matched, strict=False)
    shape_skipped = sorted(k for k, v in source.items() if k in own and own[k].shape != v.shape)
    text = f"--weights {path}: transferred {len(matched)}/{len(own)} tensors"
    found = model.classes_in(source)
    if found is not None and found != model.num_classes:
        text += (f"; the weights are for {found} classes, the data has {model.num_classes}: "
                 f"{len(shape_skipped)} head tensors of another shape start fresh (fine-tuning)")
    elif shape_skipped:
        text += f"; {len(shape_skipped)} kept fresh (shape differs, e.g. {shape_skipped[0]})"
    return text
