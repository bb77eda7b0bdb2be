"""Files → a model to run and its :class:`~detcli.run_spec.RunSpec`: the one place a loaded run is described.

Three kinds of file load here: a detcli checkpoint (preset, classes and dataset inside), an official checkpoint of a
family read with the preset that describes it, and an ONNX file from ``detcli export`` (run by onnxruntime). Each
gives a :class:`Loaded` pair; its spec's ``imgsz`` is the ``--imgsz`` resolved once (:func:`resolve_imgsz`).
Training's ``--weights`` (:func:`load_weights_into`) reads the same files into a model being trained.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detcli.config.loader import load_preset, parse_override, validate_preset
from detcli.config.schema import Preset
from detcli.errors import DetcliError
from detcli.run_spec import Origin, RunSpec

if TYPE_CHECKING:  # torch and the models load when a model is built: a command reports bad input before that
    import torch

    from detcli.console import Reporter
    from detcli.checkpoints.record import RunRecord
    from detcli.inference.predictor import Predictor
    from detcli.models.base import Detector

RECORD_METADATA = ("epoch", "best_map", "metrics", "train_args", "versions", "date")  # RunSpec.metadata of a file


@dataclass(frozen=True)
class Loaded:
    """A model to run (on its device, in eval mode) and the run record that says what it is.

    ``preset``, ``class_names``, ``cat_ids``, ``weights`` and ``official`` read :attr:`spec`.
    """

    model: Predictor
    spec: RunSpec

    @property
    def preset(self) -> Preset:
        return self.spec.preset

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def cat_ids(self) -> list[int]:
        return self.spec.cat_ids

    @property
    def weights(self) -> Path | None:
        return self.spec.weights

    @property
    def official(self) -> bool:
        return self.spec.origin == "official"


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


def resolve_imgsz(imgsz: int | None, trained_imgsz: int | None, origin: Origin, overrides: list[str]) -> int | None:
    """The ``--imgsz`` of a loaded model: the flag when given, else the size a detcli checkpoint was trained at.

    None (the preset's size) for official checkpoints, for detcli checkpoints that record no size, and when
    ``--set input.size=…`` asks for another size.
    """
    if imgsz is not None or origin != "detcli" or any(parse_override(o)[0] == ["input", "size"] for o in overrides):
        return imgsz
    return trained_imgsz


def load_runnable(
    weights: Path | None, preset_name: str | None, overrides: list[str], imgsz: int | None, device: torch.device,
    reporter: Reporter | None = None, exact: bool = False,
) -> Loaded:
    """What ``eval`` and ``predict`` run: a checkpoint (:func:`load_for_inference`) or an ONNX file from
    ``detcli export`` (:func:`load_exported`). ``exact`` (the ``--exact`` flag) refuses an ONNX file: onnxruntime's
    kernels are not the official code's."""
    from detcli.export.runtime import is_exported

    if weights is not None and is_exported(weights):
        if exact:
            raise DetcliError(f"--exact: {weights} is an exported model, run by onnxruntime's own kernels; --exact "
                              "runs a checkpoint (detcli .pt or official .pth/.ckpt) as loaded")
        if preset_name is not None or overrides:
            raise DetcliError(f"{weights} is an exported model: it carries its preset; drop --preset/--set")
        if reporter is not None:
            reporter.info(f"weights {weights}")
        return load_exported(Path(weights), imgsz, device, reporter)
    return load_for_inference(weights, preset_name, overrides, device, reporter, imgsz)


def load_for_inference(
    weights: Path | None, preset_name: str | None, overrides: list[str], device: torch.device,
    reporter: Reporter | None = None, imgsz: int | None = None,
) -> Loaded:
    """A detcli checkpoint (preset, classes and dataset inside) or an official one (needs ``preset_name``), in eval
    mode on ``device``; ``imgsz`` is the ``--imgsz`` flag (:func:`resolve_imgsz` gives the spec's).

    Without ``weights``, the latest run's ``best.pt``. ``reporter`` gets one line naming the file used.
    """
    from detcli.checkpoints.io import read_any_checkpoint
    from detcli.checkpoints.record import RunRecord

    path = Path(weights) if weights is not None else latest_best()
    if reporter is not None:
        reporter.info(f"weights {path}" + (" (latest run)" if weights is None else ""))
    raw = read_any_checkpoint(path)  # a detcli file: its validated record
    if isinstance(raw, RunRecord):
        if preset_name is not None:
            raise DetcliError(f"{path} is a detcli checkpoint: it carries its preset; drop --preset")
        model, spec = _load_detcli(raw, path, overrides)
    else:
        if preset_name is None:
            raise DetcliError(f"{path} is not a detcli checkpoint; give --preset to say which architecture it is")
        model, spec = _load_official(raw, path, preset_name, overrides)
    model.to(device).eval()
    return Loaded(model, spec.replace(imgsz=resolve_imgsz(imgsz, spec.trained_imgsz, spec.origin, overrides)))


def load_exported(path: Path, imgsz: int | None, device: torch.device, reporter: Reporter | None = None) -> Loaded:
    """An ONNX file from ``detcli export`` run by onnxruntime; the spec's ``imgsz`` is the exported one, so that
    predict / eval transform images to fit its fixed input. ``reporter`` hears what an end-to-end file builds in.

    Raises:
        DetcliError: the file is missing or not a detcli export, or ``imgsz`` differs from the exported size.
    """
    from detcli.export.runtime import OnnxDetector
    from detcli.export.validate import check_onnx

    path = Path(path)
    if not path.is_file():
        raise DetcliError(f"--weights {path}: no such file")
    checked = check_onnx(path)
    meta = checked.meta
    if imgsz is not None and imgsz != meta.imgsz:
        raise DetcliError(f"{path} was exported for --imgsz {meta.imgsz}; drop --imgsz or export again")
    model = OnnxDetector(checked, device) if reporter is None else OnnxDetector(checked, device, reporter.warn)
    if reporter is not None and model.end_to_end:
        fixed = model.fixed
        reporter.info(f"end-to-end ONNX model: score > {fixed.get('score_thr')}, NMS IoU {fixed.get('iou_thr')}, "
                      f"{fixed.get('max_det')} detections per image are built in")
    cat_ids = meta.cat_ids if meta.cat_ids is not None else list(range(1, meta.num_classes + 1))
    spec = RunSpec(meta.preset_config, list(meta.class_names), list(cat_ids), imgsz=meta.imgsz, dataset=meta.dataset,
                   trained_imgsz=meta.imgsz, weights=path, origin="exported")
    return Loaded(model, spec)


def _load_detcli(record: RunRecord, path: Path, overrides: list[str]) -> tuple[Detector, RunSpec]:
    """Model and spec of a ``detcli-1`` checkpoint (its EMA weights when ``last.pt`` has them)."""
    from detcli.models import build_model

    record.require(path, "preset", "model", "class_names")
    preset = validate_preset(record.preset, overrides, source=f"stored in {path}")
    names = list(record.class_names)
    cat_ids = list(record.cat_ids) if record.cat_ids is not None else list(range(1, len(names) + 1))
    state = record.weights_to_run(path)
    model = build_model(preset, len(names), pretrained=False)
    found = model.classes_in(state)
    if found is not None and found != len(names):
        raise DetcliError(
            f"{path}: the weights are for {found} classes but the checkpoint lists {len(names)} class names "
            "(an edited or mixed-up file)"
        )
    try:
        model.load_checked(state)
    except DetcliError as e:
        raise DetcliError(f"{path}: {e}") from None
    metadata = {k: record.get(k) for k in RECORD_METADATA if record.get(k) is not None}
    return model, RunSpec(preset, names, cat_ids, dataset=record.get("dataset"), trained_imgsz=record.trained_imgsz,
                          weights=path, origin="detcli", metadata=metadata)


def _load_official(raw: Any, path: Path, preset_name: str, overrides: list[str]) -> tuple[Detector, RunSpec]:
    """An official checkpoint of the preset's family. The class count: the preset's ``model.num_classes``, else
    the recorded names', else 80 (COCO); the names: :func:`official_class_names`."""
    from detcli.data.coco_names import COCO80, COCO80_IDS
    from detcli.models import build_model

    preset, _ = load_preset(preset_name, overrides)
    declared = preset.model.num_classes
    model = build_model(preset, declared or 80, pretrained=False)
    recorded = model.official_class_names(raw)
    if recorded is not None and declared is None and len(recorded) != model.num_classes:
        model = build_model(preset, len(recorded), pretrained=False)  # the class count the checkpoint records
    load_official(model, raw, path)
    names = official_class_names(recorded, model.num_classes)
    cat_ids = COCO80_IDS if names == COCO80 else list(range(1, model.num_classes + 1))
    return model, RunSpec(preset, list(names), list(cat_ids), weights=path, origin="official")


def official_class_names(recorded: list[str] | None, classes: int) -> list[str]:
    """The class names of an official checkpoint whose head has ``classes`` classes: the ones it records, else
    COCO's for 80 classes, else ``class0…``. Recorded names of another count are not this model's labels, and
    COCO's classes as NanoDet writes them ("traffic_light") become COCO's own names."""
    from detcli.data.coco_names import COCO80

    names = recorded
    if names is not None and len(names) != classes:
        names = None
    if names is not None and [n.replace("_", " ") for n in names] == COCO80:
        names = None
    if names is None:
        names = COCO80 if classes == 80 else [f"class{i}" for i in range(classes)]
    return list(names)


def load_official(model: Detector, raw: Any, path: Path) -> None:
    """Load an official checkpoint of the model's family (NanoDet / MMDetection key names), strictly."""
    try:
        model.load_official_state_dict(raw)
    except DetcliError as e:
        raise DetcliError(f"{path} as an official {type(model).__name__} checkpoint: {e}") from None


def load_weights_into(model: Detector, path: Path) -> str:
    """Initial weights for training (``train --weights``): every tensor whose name and shape match.

    A detcli checkpoint gives its (EMA) weights; an official one is renamed first
    (:meth:`Detector.official_state_dict`). Tensors whose shape differs (a head trained for another
    class count) keep their fresh initialisation. Returns a one-line report.
    """
    from detcli.checkpoints.io import read_any_checkpoint
    from detcli.checkpoints.record import RunRecord

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


__all__ = ["Loaded", "latest_best", "load_exported", "load_for_inference", "load_official", "load_runnable",
           "load_weights_into", "official_class_names", "resolve_imgsz"]
