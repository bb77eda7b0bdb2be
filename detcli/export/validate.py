"""Checking an ONNX file given as ``--weights`` before onnxruntime opens it.

A ``.onnx`` file is a program for onnxruntime: it may point at tensor data in other files, call operators of
any domain, and have any inputs and outputs. :func:`check_onnx` accepts only what ``detcli export`` writes:

- external tensor data inside the model's folder (relative, no ``..``, no symlink out, within the file);
- operators of the default domain (``""`` / ``ai.onnx``) and ``com.microsoft``, no model-local functions;
- detcli metadata that parses as :class:`~detcli.export.metadata.ExportedMetadata`;
- one input of the name, dtype and shape that metadata gives (fixed H × W, batch 1 or dynamic), and the outputs
  its mode promises (:func:`output_specs`).

The outputs are checked again on every run (:func:`check_outputs`), as declared shapes can lie.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from detcli.errors import DetcliError
from detcli.export.metadata import END2END_OUTPUTS, ExportedMetadata

ALLOWED_DOMAINS = ("", "ai.onnx", "com.microsoft")
_ELEM = {1: "float32", 7: "int64", 10: "float16"}  # onnx.TensorProto data types detcli's exports use


@dataclass(frozen=True)
class OutputSpec:
    """An output the metadata promises: ``shape`` with None for the batch axis (dynamic-batch files)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...]


@dataclass(frozen=True)
class CheckedOnnx:
    """A file that passed :func:`check_onnx`: its metadata and the outputs it has, in order."""

    path: Path
    meta: ExportedMetadata
    outputs: tuple[OutputSpec, ...]


def check_onnx(path: Path) -> CheckedOnnx:
    """Parse ``path`` (no external data read) and check it as the module docstring says.

    Raises:
        DetcliError: naming the file and what is wrong (the field, the output, the operator, the data file).
    """
    from detcli.export.formats import require

    onnx = require("onnx", "reading an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise DetcliError(f"{path}: not a readable ONNX model ({_first_line(e)})") from None
    _check_external_data(model, path)
    _check_domains(model, path)
    try:
        onnx.checker.check_model(str(path))  # by path: external data is looked up beside the model
    except Exception as e:
        raise DetcliError(f"{path}: not a valid ONNX model ({_first_line(e)})") from None
    meta = parse_metadata(model.metadata_props, path)
    _check_input(model, meta, path)
    outputs = output_specs(meta, path)
    _check_declared_outputs(model, outputs, path)
    return CheckedOnnx(path, meta, outputs)


# --------------------------------------------------------------------------- the file

def _check_external_data(model: Any, path: Path) -> None:
    folder = path.parent.resolve()
    for tensor in _tensors(model.graph):
        if tensor.data_location != 1:  # TensorProto.EXTERNAL
            continue
        info = {e.key: e.value for e in tensor.external_data}
        location = info.get("location", "")
        where = f"{path}: tensor {tensor.name!r} keeps its data in {location!r}"
        if not location or Path(location).is_absolute() or ".." in Path(location).parts or "\\" in location:
            raise DetcliError(f"{where}: external data must be a relative path inside the model's folder")
        target = (path.parent / location).resolve()
        if not target.is_relative_to(folder):
            raise DetcliError(f"{where}, which leads outside the model's folder {folder}")
        if not target.is_file():
            raise DetcliError(f"{where}: no such file beside the model")
        try:
            offset, length = int(info.get("offset", 0)), int(info.get("length", -1))
        except ValueError:
            raise DetcliError(f"{where}: offset/length are not integers") from None
        if offset < 0 or offset + max(length, 0) > target.stat().st_size:
            raise DetcliError(f"{where}: offset {offset} + length {length} lies outside that file")


def _tensors(graph: Any):
    """Every TensorProto of ``graph`` and its subgraphs (initializers, sparse ones, node attributes)."""
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield from (sparse.values, sparse.indices)
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("t"):
                yield attr.t
            yield from attr.tensors
            if attr.HasField("g"):
                yield from _tensors(attr.g)
            for sub in attr.graphs:
                yield from _tensors(sub)


def _nodes(graph: Any):
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.HasField("g"):
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def _check_domains(model: Any, path: Path) -> None:
    allowed = ", ".join(repr(d) for d in ALLOWED_DOMAINS)
    if len(model.functions):
        raise DetcliError(f"{path}: defines its own operators (model-local functions "
                          f"{', '.join(f.name for f in model.functions)}); detcli runs only standard ones")
    for opset in model.opset_import:
        if opset.domain not in ALLOWED_DOMAINS:
            raise DetcliError(f"{path}: imports the operator domain {opset.domain!r}; detcli runs {allowed} only")
    for node in _nodes(model.graph):
        if node.domain not in ALLOWED_DOMAINS:
            raise DetcliError(f"{path}: node {node.name or node.op_type!r} is the operator {node.op_type} of domain "
                              f"{node.domain!r}; detcli runs {allowed} only")


# --------------------------------------------------------------------------- the metadata

def parse_metadata(props: Any, path: Path) -> ExportedMetadata:
    """``metadata_props`` (key/value strings; values JSON where they parse) → the typed metadata."""
    raw: dict[str, Any] = {}
    for p in props:
        try:
            raw[p.key] = json.loads(p.value)
        except (json.JSONDecodeError, RecursionError):
            raw[p.key] = p.value
    if "preset_config" not in raw and "class_names" not in raw:
        raise DetcliError(f"{path}: an ONNX model without detcli metadata; export it with `detcli export`")
    try:
        meta = ExportedMetadata.model_validate(raw)
    except ValidationError as e:
        raise DetcliError(f"{path}: its detcli metadata is not valid: {_pydantic_errors(e)}") from None
    _check_against_preset(meta, path)
    return meta


def _pydantic_errors(e: ValidationError, limit: int = 3) -> str:
    parts = []
    for err in e.errors(include_input=False, include_url=False)[:limit]:
        loc = ".".join(str(x) for x in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"field '{loc}': {msg}" if loc else msg)
    more = e.error_count() - limit
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def _check_against_preset(meta: ExportedMetadata, path: Path) -> None:
    """What the metadata says of the pre-processing is what its ``preset_config`` does (detcli runs the preset's
    transform; users of the file read the fields): ``input_shape`` is the input size at ``imgsz`` padded to the
    ``size_divisor``, and channel order, mean, std and resize are the preset's."""
    from detcli.data.build import input_size
    from detcli.export.metadata import inference_resize

    preset = meta.preset_config
    w, h = input_size(preset, meta.imgsz)
    div = preset.input.size_divisor
    expected = (-(-h // div) * div, -(-w // div) * div)
    if meta.image_size != expected:
        raise DetcliError(f"{path}: metadata field 'input_shape' gives H×W {meta.image_size[0]}×{meta.image_size[1]}"
                          f", but preset_config.input.size at imgsz {meta.imgsz} makes {expected[0]}×{expected[1]}")
    for name in ("channel_order", "mean", "std"):
        if getattr(meta, name) != getattr(preset.input, name):
            raise DetcliError(f"{path}: metadata field '{name}' is {getattr(meta, name)}, but preset_config.input."
                              f"{name} is {getattr(preset.input, name)}")
    want = inference_resize(preset, (w, h))
    got = meta.resize
    fields = ("method", "size", "pad_value", "backend", "size_rule")
    if got is not None and [getattr(got, f) for f in fields] != [tuple(want[f]) if f == "size" else want[f]
                                                                 for f in fields]:
        raise DetcliError(f"{path}: metadata field 'resize' is {got.model_dump(mode='json')}, but its preset_config "
                          f"resizes as {want}")


# --------------------------------------------------------------------------- inputs and outputs

def output_specs(meta: ExportedMetadata, path: Path) -> tuple[OutputSpec, ...]:
    """The outputs ``meta.mode`` promises: the four end-to-end tensors, or the family's raw head tensors (their
    shapes from the preset's network run on the meta device: no memory, no weights)."""
    b = None if meta.dynamic_batch else 1
    if meta.mode == "end2end":
        d = meta.postprocess.max_det
        shapes = [(b,), (b, d, 4), (b, d), (b, d)]
        return tuple(OutputSpec(n, t, s) for n, t, s in
                     zip(END2END_OUTPUTS, ("int64", "float32", "float32", "int64"), shapes))
    import torch

    from detcli.models import build_model
    from detcli.structures import HeadOutput

    try:
        with torch.device("meta"), torch.no_grad():
            model = build_model(meta.preset_config, meta.num_classes, pretrained=False).eval()
            head = model(torch.empty(1, 3, *meta.image_size))
    except Exception as e:
        raise DetcliError(f"{path}: metadata field 'preset_config' does not build a network ({_first_line(e)})") \
            from None
    return tuple(OutputSpec(name, meta.input_dtype, (b, *t.shape[1:]))
                 for name, t in zip(HeadOutput._fields, head) if t is not None)


def _tensor_type(value_info: Any, what: str, path: Path) -> tuple[str, list[int | str | None]]:
    if value_info.type.WhichOneof("value") != "tensor_type":
        raise DetcliError(f"{path}: {what} is not a tensor")
    t = value_info.type.tensor_type
    dtype = _ELEM.get(t.elem_type, f"ONNX type {t.elem_type}")
    if not t.HasField("shape"):
        raise DetcliError(f"{path}: {what} declares no shape")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    return dtype, dims


def _check_input(model: Any, meta: ExportedMetadata, path: Path) -> None:
    constants = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in constants]
    names = [i.name for i in inputs]
    if names != [meta.input_name]:
        raise DetcliError(f"{path}: the graph's inputs are {names}; its metadata (input_name) promises one, "
                          f"{meta.input_name!r}")
    dtype, dims = _tensor_type(inputs[0], f"input {meta.input_name!r}", path)
    if dtype != meta.input_dtype:
        raise DetcliError(f"{path}: input {meta.input_name!r} is {dtype}; its metadata (input_dtype) says "
                          f"{meta.input_dtype}")
    want = [None if meta.dynamic_batch else 1, 3, *meta.image_size]
    fixed_ok = len(dims) == 4 and all(isinstance(d, int) and d == w for d, w in zip(dims[1:], want[1:]))
    batch_ok = len(dims) == 4 and (dims[0] == 1 if want[0] == 1 else not isinstance(dims[0], int))
    if not (fixed_ok and batch_ok):
        raise DetcliError(f"{path}: input {meta.input_name!r} has shape {_shape_text(dims)}; its metadata "
                          f"(input_shape) promises {_shape_text(want)}")


def _check_declared_outputs(model: Any, specs: tuple[OutputSpec, ...], path: Path) -> None:
    outputs = list(model.graph.output)
    names, want = [o.name for o in outputs], [s.name for s in specs]
    if names != want:
        raise DetcliError(f"{path}: the graph's outputs are {names}; a file of its metadata's mode has {want}")
    for out, spec in zip(outputs, specs):
        dtype, dims = _tensor_type(out, f"output {spec.name!r}", path)
        if dtype != spec.dtype or len(dims) != len(spec.shape) or any(
                isinstance(d, int) and d > 0 and w is not None and d != w for d, w in zip(dims, spec.shape)):
            raise DetcliError(f"{path}: output {spec.name!r} is {dtype} {_shape_text(dims)}; its metadata promises "
                              f"{spec.dtype} {_shape_text(spec.shape)}")


def check_outputs(checked: CheckedOnnx, arrays: list[np.ndarray], batch: int) -> None:
    """The arrays one run returned against the promised outputs (``batch`` images fed)."""
    if len(arrays) != len(checked.outputs):
        raise DetcliError(f"{checked.path}: returned {len(arrays)} outputs, not {len(checked.outputs)}")
    for a, spec in zip(arrays, checked.outputs):
        want = (batch, *spec.shape[1:])
        if str(a.dtype) != spec.dtype or tuple(a.shape) != want:
            raise DetcliError(f"{checked.path}: output {spec.name!r} came back as {a.dtype} {_shape_text(a.shape)}; "
                              f"its metadata promises {spec.dtype} {_shape_text(want)}")


def _shape_text(dims) -> str:
    return "(" + ", ".join("B" if d is None else str(d) for d in dims) + ")"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
