"""``detcli export`` flags do what help says (--opset 11–20, -o folder/, --set, --simplify), and the parity check
fails on a NaN or infinity on either side."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.export.parity import ParityReport, compare_detections, compare_raw
from tests.support.cli_subprocess import run_cli_forked

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch.set_num_threads(1)


def cli(tmp_path: Path, *args: str):
    proc = run_cli_forked("export", *args, cwd=tmp_path, timeout=300)
    return proc, proc.stdout + proc.stderr


@pytest.mark.parametrize("opset, output", [(11, "new/"), (20, "existing")], ids=["opset11-new-folder",
                                                                              "opset20-existing-folder"])
def test_the_opset_range_of_help_exports_into_a_folder(tmp_path, nanodet_weights, opset, output):
    """The edges of --opset 11–20 export and pass the parity check; ``-o new/`` (trailing slash) is a folder,
    created, and so is an existing folder without one: the file goes inside, named after the weights. A test.*
    ``--set`` is what the file bakes in."""
    if output == "existing":
        (tmp_path / output).mkdir()
    proc, text = cli(tmp_path, "--weights", str(nanodet_weights), "-p", "nanodet-plus-m", "--imgsz", "64",
                     "--device", "cpu", "--opset", str(opset), "-o", output, "--set", "test.max_det=20")
    assert proc.returncode == 0 and "passed" in text, text[-3000:]
    out = tmp_path / output.rstrip("/") / "nanodet-plus-m.onnx"
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert out.is_file() and meta["opset"] == opset and meta["postprocess"]["max_det"] == 20
    import onnx

    model = onnx.load(str(out))
    assert {o.domain for o in model.opset_import} == {""} and model.opset_import[0].version == opset


@pytest.mark.parametrize(
    "args, message",
    [
        (["--opset", "10"], "--opset 10 is not supported: give 11–20"),
        (["--opset", "21"], "--opset 21 is not supported: give 11–20"),
        (["--set", "train.epochs=3"], "--set train.epochs: export takes only test.* and input.* fields"),
        (["--set", "augment.flip=0.1"], "a augment.* field does not change the exported model"),
        (["--set", "model.head.feat_channels=64"], "the network is the checkpoint's"),
        (["-o", "afile/"], "afile is a file, not a folder"),
    ],
    ids=["opset-10", "opset-21", "set-train", "set-augment", "set-model", "output-file-as-folder"],
)
def test_bad_flags_exit_2_with_a_message(tmp_path, args, message):
    (tmp_path / "w.pt").write_bytes(b"not read: the flags are checked first")
    (tmp_path / "afile").write_text("")
    proc, text = cli(tmp_path, "--weights", "w.pt", *args)
    assert proc.returncode == 2 and message in text and "Traceback" not in text, text[-3000:]


@pytest.mark.skipif(importlib.util.find_spec("onnxsim") is not None, reason="onnxsim is installed")
def test_simplify_without_onnxsim_names_the_package_before_exporting(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not read")
    proc, text = cli(tmp_path, "--weights", "w.pt", "--simplify")
    assert proc.returncode == 2 and "Traceback" not in text, text[-3000:]
    assert "--simplify runs onnxsim, which is not installed" in text and "pip install onnxsim" in text


def test_help_says_what_export_does():
    proc = run_cli_forked("export", "--help", cwd=Path.cwd(), timeout=60)
    text = " ".join(proc.stdout.split())
    assert "(if installed)" not in text and "pip install onnxsim" in text
    assert "test.* or input.*" in text and "train.optimizer" not in text and "ending in /" in text


# --------------------------------------------------------------------------- parity on NaN / inf
def report() -> ParityReport:
    return ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)


@pytest.mark.parametrize("side", ["pytorch", "exported"])
@pytest.mark.parametrize("value", [float("nan"), float("inf")], ids=["nan", "inf"])
def test_raw_parity_fails_on_a_non_finite_value_on_either_side(side, value):
    ref, got = torch.zeros(1, 5, 3), np.zeros((1, 5, 3), np.float32)
    if side == "pytorch":
        ref[0, 2, 1] = value
    else:
        got[0, 2, 1] = value
    r = report()
    compare_raw([ref], [got], r, ["cls_logits"])
    who = "PyTorch" if side == "pytorch" else "exported"
    assert r.problems == [f"{who} cls_logits: 1 NaN/inf value(s), the first at (0, 2, 1)"]
    assert r.as_dict()["raw_max_abs_diff"] is None  # valid JSON beside the model


@pytest.mark.parametrize("side", ["pytorch", "exported"])
def test_detection_parity_fails_on_a_nan_box_on_either_side(side):
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 40, 40]]])
    ref = [torch.tensor([2]), boxes, torch.tensor([[0.9, 0.5]]), torch.tensor([[1, 2]])]
    got = [t.clone() for t in ref]
    (ref if side == "pytorch" else got)[1][0, 1, 2] = float("nan")
    r = report()
    compare_detections(ref, got, r, max_det=2)
    who = "PyTorch" if side == "pytorch" else "exported"
    assert r.problems == [f"image 0: {who} boxes: 1 NaN/inf value(s), the first at (1, 2)"]
    assert not r.detections[0]["match"]


def test_an_operator_the_opset_lacks_is_one_line_not_an_ir_dump(capfd):
    """torch prints the whole TorchScript graph from C++ when an export fails: silenced, the error is a message."""
    from detcli.errors import DetcliError
    from detcli.export.formats import onnx_bytes

    class Unflatten(torch.nn.Module):
        def forward(self, x):
            return x.unflatten(-1, (2, 2))

    with pytest.raises(DetcliError, match=r"cannot export this model to ONNX opset 11: .*'aten::unflatten'"):
        onnx_bytes(Unflatten(), torch.zeros(1, 4), ["y"], 11, False)
    out, err = capfd.readouterr()
    assert "Torch IR graph" not in out + err
