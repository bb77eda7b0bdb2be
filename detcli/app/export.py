"""``detcli export``: a trained (or official) checkpoint → a deployable ONNX / TorchScript file + JSON, checked."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from detcli.console import Reporter
from detcli.errors import DetcliError
from detcli.fileio import output_folder
from detcli.inference.loading import Loaded
from detcli.run_spec import RunSpec

FORMATS = {"onnx": ".onnx", "torchscript": ".torchscript"}
EXPORTED_SECTIONS = ("test", "input")  # preset sections that change the exported file (--set)


@dataclass
class ExportRequest:
    weights: Path | None
    format: str = "onnx"
    preset: str | None = None
    imgsz: int | None = None
    opset: int = 17
    dynamic: bool = False
    half: bool = False
    simplify: bool = False
    nms: bool = True
    output: Path | str | None = None  # a str keeps a trailing "/": a folder
    device: str | None = None
    pre_nms_topk: int = 1000
    overrides: list[str] = field(default_factory=list)


def export_command(req: ExportRequest) -> Path:
    """Export, write ``<output>.json`` beside the model, run the parity check; returns the model path."""
    from detcli.inference.device import select_device
    from detcli.inference.loading import load_for_inference

    check_request(req)
    reporter = Reporter()
    device = select_device(req.device)
    out = export_target(req, device)
    reporter.header("export", str(device))
    loaded = load_for_inference(req.weights, req.preset, req.overrides, device, imgsz=req.imgsz)
    return export_model(loaded, req, out, reporter)


def check_request(req: ExportRequest) -> None:
    """The format, its libraries, ``--opset``, ``--simplify``, the ``--set`` fields and the weights file."""
    from detcli.export.formats import check_opset, require, require_simplifier

    if req.format not in FORMATS:
        raise DetcliError(f"--format {req.format!r}: choose one of {', '.join(FORMATS)}")
    if req.format == "onnx":
        check_opset(req.opset)
        require("onnx", "ONNX export")
        require("onnxruntime", "the ONNX parity check")
    if req.simplify and req.format != "onnx":
        raise DetcliError("--simplify applies to ONNX only")
    if req.simplify:
        require_simplifier()
    _check_overrides(req.overrides)
    if req.weights is None or not Path(req.weights).is_file():
        raise DetcliError(f"--weights {req.weights}: no such file (give a detcli checkpoint, or an official one "
                          "with --preset)")


def export_target(req: ExportRequest, device: torch.device) -> Path:
    """The file to write (:func:`_output_path`), after ``--half`` is checked against ``device``."""
    if req.half and device.type != "cuda":
        raise DetcliError("--half needs a CUDA device (PyTorch has no fp16 convolutions on CPU): add --device 0, "
                          "or export fp32")
    return _output_path(req)


def export_model(loaded: Loaded, req: ExportRequest, out: Path, reporter: Reporter) -> Path:
    """Export ``loaded`` (a PyTorch model, at its spec's ``imgsz``) to ``out`` as ``req`` says, write
    ``<out>.json``, run the parity check and report it; returns ``out``.

    Raises:
        DetcliError: the exported model does not match PyTorch (the file and its JSON are kept, to look at).
    """
    from detcli.models.base import Detector

    if not isinstance(loaded.model, Detector):
        raise DetcliError(f"{loaded.weights} is not a PyTorch model: export a detcli or official checkpoint")
    spec = loaded.spec
    w, h = spec.input_size
    div = spec.preset.input.size_divisor
    size = (-(-h // div) * div, -(-w // div) * div)  # the padded input the network sees
    model = loaded.model.eval()
    if req.half:
        model.half()
    reporter.info(f"weights {spec.weights} · preset {spec.preset.name} · {spec.num_classes} classes · input "
                  f"{size[1]}×{size[0]} (W×H) · {'end-to-end (NMS inside)' if req.nms else 'raw head outputs'}")
    images, source = _parity_input(spec, size, 2 if req.dynamic else 1, next(model.parameters()).device, reporter)
    if req.half:
        images = images.half()
    report = _export(req, spec, model, size, images, source, out, reporter)
    _print_report(reporter, report, out)
    if not report.passed:
        raise DetcliError(f"{out}: the exported model does not match PyTorch: " + "; ".join(report.problems[:3]))
    return out


def _export(req: ExportRequest, spec: RunSpec, model, size, images, source, out, reporter):
    from detcli.export import formats
    from detcli.export.graph import EndToEndGraph, RawGraph
    from detcli.export.metadata import export_metadata, output_names
    from detcli.export.parity import RAW_TOLERANCE, ParityReport, compare_detections, compare_raw
    from detcli.fileio import atomic_write, atomic_write_json

    priors = model.priors(size, images.device)
    cfg = model.postprocess_cfg
    raw_graph = RawGraph(model).eval()
    with torch.no_grad():
        raw_ref = list(raw_graph(images))
    names = output_names(req.nms, model(images[:1]))
    graph = EndToEndGraph(model, size, cfg, req.pre_nms_topk).eval() if req.nms else raw_graph
    dtype = "float16" if req.half else "float32"
    meta = export_metadata(
        spec.preset, model, spec.class_names, size, req.format, req.nms, cfg, req.pre_nms_topk, priors,
        req.opset if req.format == "onnx" else None, req.dynamic, req.half, str(spec.weights), names,
        spec.cat_ids, spec.dataset, spec.imgsz,
    )
    report = ParityReport(input=source, dtype=dtype, raw_max_abs_diff=float("nan"), raw_tolerance=RAW_TOLERANCE[dtype])
    sample = images[:1]
    if req.format == "onnx":
        data = formats.onnx_bytes(graph, sample, names, req.opset, req.dynamic)
        data, meta["simplified"] = formats.finish_onnx(data, meta, req.simplify)
        atomic_write(out, lambda f: f.write(data))
        run = lambda x: formats.run_onnx(out, x)  # noqa: E731 - the file as written
        if req.nms:  # raw outputs of the same weights through onnxruntime, in memory
            raw_names = output_names(False, model(images[:1]))
            raw_data = formats.onnx_bytes(raw_graph, sample, raw_names, req.opset, req.dynamic)
            raw_run = lambda x: formats.run_onnx(raw_data, x)  # noqa: E731
        else:
            raw_run = run
        batch = images if req.dynamic else sample
    else:
        module = formats.torchscript_module(graph, sample)
        formats.save_torchscript(module, out, meta)
        loaded_module, _ = formats.load_torchscript(out)
        loaded_module = loaded_module.to(images.device)
        run = lambda x: list(loaded_module(x))  # noqa: E731 - the file as written
        raw_module = formats.torchscript_module(raw_graph, sample) if req.nms else loaded_module
        raw_run = lambda x: list(raw_module(x))  # noqa: E731
        batch = sample
    with torch.no_grad():
        compare_raw([t[: batch.shape[0]] for t in raw_ref], raw_run(batch), report,
                    output_names(False, model(images[:1])))
        if req.nms:
            compare_detections(list(graph(batch)), run(batch), report, cfg.max_det)
    report.passed = not report.problems
    meta["parity"] = report.as_dict()
    atomic_write_json(out.with_name(out.name + ".json"), meta, allow_nan=False)
    return report


def _check_overrides(overrides: list[str]) -> None:
    """``--set`` takes the fields the exported file bakes in: ``test.*`` (post-processing inside the graph) and
    ``input.*`` (input size, normalisation); any other section would change nothing in the file."""
    from detcli.config.loader import parse_override

    for text in overrides:
        parts, _ = parse_override(text)
        if parts[0] not in EXPORTED_SECTIONS:
            why = ("the network is the checkpoint's, its weights fit no other" if parts[0] == "model"
                   else f"a {parts[0]}.* field does not change the exported model")
            raise DetcliError(
                f"--set {'.'.join(parts)}: export takes only {' and '.join(s + '.*' for s in EXPORTED_SECTIONS)} "
                f"fields (post-processing built into the graph, input size and normalisation); {why}"
            )


def _output_path(req: ExportRequest) -> Path:
    """``--output`` or ``<weights stem><suffix>`` beside the weights; the folder must exist and be writable.
    An existing folder, or a path ending in ``/``, is a folder (created when missing): the file goes inside."""
    suffix = FORMATS[req.format]
    name = Path(req.weights).stem + suffix
    text = str(req.output) if req.output is not None else None
    if text is None:
        out = Path(req.weights).with_suffix(suffix)
    elif text.endswith(("/", os.sep)) or Path(text).is_dir():
        out = output_folder(text, f"--output {text}") / name
    else:
        out = Path(text)
    folder = out.parent
    if not folder.is_dir():
        raise DetcliError(f"--output {out}: folder {folder} does not exist (create it first)")
    try:  # a real write (os.access says yes to root on a read-only mount)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise DetcliError(f"--output {out}: folder {folder} is not writable ({e.strerror or e})") from None
    if out.resolve() == Path(req.weights).resolve():
        raise DetcliError(f"--output {out} would overwrite the checkpoint")
    return out


def _parity_input(spec: RunSpec, size, batch: int, device: torch.device, reporter: Reporter) -> tuple[torch.Tensor, str]:
    """Val images of the dataset the checkpoint records (transformed and padded like predict), else random."""
    if spec.dataset is not None:
        try:
            return _dataset_images(spec, size, batch, device)
        except Exception as e:  # files moved or unreadable: the check still runs, on random input
            reporter.warn(f"parity check on random input: the checkpoint's val images are not readable ({e})")
    gen = torch.Generator().manual_seed(0)
    return torch.randn(batch, 3, *size, generator=gen).to(device), "random normal (seed 0)"


def _dataset_images(spec: RunSpec, size, batch: int, device: torch.device) -> tuple[torch.Tensor, str]:
    from detcli.data.build import build_dataset
    from detcli.data.recorded import recorded_dataset

    cfg = recorded_dataset(spec.dataset.get("config"), f"checkpoint {spec.weights}")
    dataset = build_dataset(spec.preset, cfg.val, train=False)
    images = torch.zeros(batch, 3, *size)
    files = []
    for i in range(batch):
        sample = dataset[i % len(dataset)]
        img = torch.as_tensor(sample["img"])
        h, w = min(img.shape[1], size[0]), min(img.shape[2], size[1])
        images[i, :, :h, :w] = img[:, :h, :w]
        files.append(Path(sample["meta"].file_name).name)
    return images.to(device), f"val images {', '.join(files)}"


def _print_report(reporter: Reporter, report, out: Path) -> None:
    items = {
        "input": report.input,
        "raw outputs": (f"max |Δ| {report.raw_max_abs_diff:.3g}, relative above 1: {report.raw_max_scaled_diff:.3g} "
                        f"(tolerance {report.raw_tolerance:g})"),
    }
    if report.detections is not None:
        same = sum(bool(r["match"]) for r in report.detections)
        counts = ", ".join(f"{r['pytorch']}/{r['exported']}/{r['matched']}" for r in report.detections)
        worst_box = max(r["max_box_diff"] for r in report.detections)
        worst_score = max(r["max_score_diff"] for r in report.detections)
        items["detections"] = (f"{same}/{len(report.detections)} images match (PyTorch/exported/matched: {counts}); "
                               f"max |Δbox| {worst_box:.3g} px, max |Δscore| {worst_score:.3g}")
    items["result"] = "passed" if report.passed else "FAILED: " + "; ".join(report.problems[:3])
    reporter.key_values("parity check (PyTorch vs exported)", items)
    reporter.info(f"exported {out} (+ {out.name}.json)")
