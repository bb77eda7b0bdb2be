"""Writing and running the two deployable formats: ONNX (onnxruntime) and TorchScript.

Both are traced from a graph of :mod:`detcli.export.graph`; the metadata travels inside the file (ONNX
``metadata_props``, TorchScript extra file ``detcli.json``).
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from detcli.errors import DetcliError

MIN_OPSET, MAX_OPSET = 11, 20  # NonMaxSuppression needs 11; 20 is the newest of torch's TorchScript exporter
EXPORT_EXTRA = "pip install 'detcli[export]'  (onnx, onnxruntime)"
SIMPLIFIER = "onnxsim"  # what --simplify runs; not part of the export extra


def require(module: str, purpose: str) -> Any:
    """Import an optional dependency or fail with the command that installs it."""
    try:
        return __import__(module)
    except ImportError:
        raise DetcliError(f"{purpose} needs the '{module}' package: {EXPORT_EXTRA}") from None


def require_simplifier() -> Any:
    """``onnxsim`` for ``--simplify``, or a message naming the package to install."""
    try:
        return __import__(SIMPLIFIER)
    except ImportError:
        raise DetcliError(f"--simplify runs {SIMPLIFIER}, which is not installed (the export extra does not include "
                          f"it): pip install {SIMPLIFIER}, or export without --simplify") from None


def check_opset(opset: int) -> None:
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise DetcliError(
            f"--opset {opset} is not supported: give {MIN_OPSET}–{MAX_OPSET} (NonMaxSuppression needs ≥ {MIN_OPSET})"
        )


def onnx_bytes(
    graph: nn.Module, sample: Tensor, output_names: list[str], opset: int, dynamic: bool
) -> bytes:
    """Trace ``graph`` on ``sample`` and serialise it (TorchScript-based exporter; batch axis dynamic on request)."""
    check_opset(opset)
    require("onnx", "ONNX export")
    axes = {"images": {0: "batch"}, **{name: {0: "batch"} for name in output_names}} if dynamic else None
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad(), _native_stdout_silenced():
            warnings.simplefilter("ignore")  # tracer warnings about Python ints / the deprecated exporter path
            torch.onnx.export(
                graph, (sample,), buf, dynamo=False, opset_version=opset, input_names=["images"],
                output_names=output_names, dynamic_axes=axes, do_constant_folding=True,
            )
    except torch.onnx.errors.OnnxExporterError as e:  # an operator without a symbolic at this opset, …
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:400]
        raise DetcliError(f"torch cannot export this model to ONNX opset {opset}: {first}") from None
    return buf.getvalue()


@contextlib.contextmanager
def _native_stdout_silenced() -> Iterator[None]:
    """File descriptor 1 to a scratch file: torch's exporter prints the whole TorchScript graph (thousands of
    lines) from C++ when it fails, before the error reaches Python."""
    sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no descriptor 1: nothing to silence
        yield
        return
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 1)
            try:
                yield
            finally:
                os.dup2(saved, 1)
    finally:
        os.close(saved)


def finish_onnx(data: bytes, metadata: dict[str, Any], simplify: bool) -> tuple[bytes, bool]:
    """Optionally simplify (onnxsim), check, and put ``metadata`` into ``metadata_props`` (JSON values)."""
    onnx = require("onnx", "ONNX export")
    model = onnx.load_from_string(data)
    simplified = False
    if simplify:
        model, ok = require_simplifier().simplify(model)
        if not ok:
            raise DetcliError("onnxsim could not validate the simplified model; export without --simplify")
        simplified = True
    onnx.checker.check_model(model)
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value if isinstance(value, str) else json.dumps(value, default=str)
    return model.SerializeToString(), simplified


def run_onnx(data: bytes | Path, images: Tensor) -> list[np.ndarray]:
    """Outputs of an ONNX model on onnxruntime's CPU provider."""
    ort = require("onnxruntime", "running an ONNX model")
    source = str(data) if isinstance(data, Path) else data
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images.cpu().numpy()})


def torchscript_module(graph: nn.Module, sample: Tensor) -> torch.jit.ScriptModule:
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return torch.jit.trace(graph, sample, check_trace=False)


def save_torchscript(module: torch.jit.ScriptModule, path: Path, metadata: dict[str, Any]) -> None:
    """Atomically, with ``metadata`` as the extra file ``detcli.json``."""
    from detcli.fileio import atomic_write

    extra = {"detcli.json": json.dumps(metadata, indent=1, default=str)}
    atomic_write(path, lambda f: torch.jit.save(module, f, _extra_files=extra))


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    extra = {"detcli.json": ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    return module, json.loads(extra["detcli.json"] or "{}")
