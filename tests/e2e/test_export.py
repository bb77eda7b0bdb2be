"""``detcli export``: every preset to ONNX and TorchScript, end-to-end and raw, checked against PyTorch; bad input."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.app.export import ExportRequest, export_command
from detcli.config.loader import load_preset, presets_dir
from detcli.errors import DetcliError
from detcli.export.parity import ParityReport, compare_detections, compare_raw
from detcli.models import build_model
from tests.support.cli_subprocess import run_cli_forked
from tests.support.official_weights import official_checkpoint
from tests.support.preset_cases import preset_params

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch.set_num_threads(1)


@pytest.mark.parametrize("fmt", ["onnx", "torchscript"])
# By default the smallest preset of each model type; the others (R50 at 128 px: ~10 s per format on one CPU core)
# with -m slow. Their own network's ONNX export and TorchScript trace are checked by default in test_contract.
@pytest.mark.parametrize("preset_path", preset_params(one_per_model_type=True))
def test_every_preset_exports_and_passes_the_parity_check(tmp_path, preset_path, fmt):
    weights = official_checkpoint(preset_path, tmp_path)
    out = export_command(ExportRequest(weights=weights, format=fmt, preset=preset_path.stem, imgsz=128, device="cpu"))
    assert out == weights.with_suffix(".onnx" if fmt == "onnx" else ".torchscript") and out.is_file()
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["parity"]["passed"] and meta["parity"]["raw_max_scaled_diff"] <= 1e-4
    det = meta["parity"]["detections"][0]
    assert det["match"] and det["pytorch"] == det["exported"] > 0 and det["matched"] >= 0.8 * det["pytorch"]
    assert meta["preset"] == preset_path.stem and len(meta["class_names"]) == 80 and meta["mode"] == "end2end"
    h, w = meta["input_shape"][2:]
    assert h % 32 == 0 and w % 32 == 0 and max(h, w) == 128
    x = torch.randn(1, 3, h, w)
    if fmt == "onnx":
        props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
        assert json.loads(props["class_names"])[0] == "person" and props["preset"] == preset_path.stem
        num, boxes, scores, labels = ort.InferenceSession(str(out)).run(None, {"images": x.numpy()})
    else:
        extra = {"detcli.json": ""}
        module = torch.jit.load(str(out), _extra_files=extra)
        assert json.loads(extra["detcli.json"])["mode"] == "end2end"
        with torch.no_grad():
            num, boxes, scores, labels = (t.numpy() for t in module(x))
    k = load_preset(preset_path)[0].test.max_det  # 100 for NanoDet-Plus and RetinaNet, 300 for RTMDet
    assert num.shape == (1,) and boxes.shape == (1, k, 4) and scores.shape == labels.shape == (1, k)
    n = int(num[0])
    assert np.all(labels[0, n:] == -1) and np.all(scores[0, n:] == 0) and np.all(np.diff(scores[0, :n]) <= 0)


def test_raw_mode_with_dynamic_batch(tmp_path):
    weights = official_checkpoint(presets_dir() / "retinanet-r18-fpn.yaml", tmp_path)
    out = export_command(ExportRequest(weights=weights, preset="retinanet-r18-fpn", imgsz=128, nms=False,
                                       dynamic=True, device="cpu", output=tmp_path / "raw.onnx"))
    meta = json.loads((tmp_path / "raw.onnx.json").read_text())
    assert meta["mode"] == "raw" and meta["parity"]["passed"] and meta["priors"]["per_cell"] == 9
    n = meta["priors"]["count"]
    session = ort.InferenceSession(str(out))
    assert [o.name for o in session.get_outputs()] == ["cls_logits", "bbox_reg"]
    cls, reg = session.run(None, {"images": np.random.default_rng(0).standard_normal((3, 3, 96, 128), np.float32)})
    assert cls.shape == (3, n, 80) and reg.shape == (3, n, 4)


def test_dynamic_end_to_end_batch(tmp_path):
    weights = official_checkpoint(presets_dir() / "nanodet-plus-m.yaml", tmp_path)
    out = export_command(ExportRequest(weights=weights, preset="nanodet-plus-m", imgsz=96, dynamic=True, device="cpu"))
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert len(meta["parity"]["detections"]) == 2 and meta["parity"]["passed"]
    num, boxes, _, _ = ort.InferenceSession(str(out)).run(None, {"images": np.zeros((4, 3, 96, 96), np.float32)})
    assert num.shape == (4,) and boxes.shape == (4, 100, 4)


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(weights=Path("/nonexistent/best.pt")), "no such file"),
        (dict(preset=None), "not a detcli checkpoint; give --preset"),
        (dict(opset=9), "--opset 9 is not supported"),
        (dict(output=Path("/nonexistent/folder/m.onnx")), "does not exist"),
        (dict(half=True), "--half needs a CUDA device"),
        (dict(format="tflite"), "choose one of onnx, torchscript"),
        (dict(format="torchscript", simplify=True), "--simplify applies to ONNX only"),
    ],
)
def test_bad_input_gives_a_clear_error(nanodet_weights, changes, message):
    args = {**dict(weights=nanodet_weights, preset="nanodet-plus-m", imgsz=64, device="cpu"), **changes}
    with pytest.raises(DetcliError, match=message.replace("(", r"\(")):
        export_command(ExportRequest(**args))


def test_read_only_output_folder(nanodet_weights, tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)  # what a read-only folder or mount answers
    with pytest.raises(DetcliError, match=r"folder .* is not writable \(Permission denied\)"):
        export_command(ExportRequest(weights=nanodet_weights, preset="nanodet-plus-m", output=tmp_path, device="cpu"))


def test_simplify_without_onnxsim_says_how_to_install(nanodet_weights, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxsim", None)  # import fails as if not installed
    with pytest.raises(DetcliError, match="pip install onnxsim"):
        export_command(ExportRequest(weights=nanodet_weights, preset="nanodet-plus-m", imgsz=64, simplify=True,
                                     device="cpu", output=tmp_path / "m.onnx"))


def test_cli_exit_code_and_message(tmp_path):
    (tmp_path / "w.pt").write_bytes(b"not read: the flags are checked first")
    proc = run_cli_forked("export", "--weights", str(tmp_path / "w.pt"), "--opset", "7", cwd=tmp_path, timeout=120)
    assert proc.returncode == 2 and "--opset 7 is not supported" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr


# --------------------------------------------------------------------------- the check itself
def test_parity_check_fails_on_a_changed_output():
    ref = [torch.zeros(1, 5, 3)]
    report = ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)
    compare_raw(ref, [np.full((1, 5, 3), 2e-4, np.float32)], report)
    assert report.raw_max_abs_diff == pytest.approx(2e-4) and "raw outputs differ" in report.problems[0]
    # relative above 1: 2e-3 on a distance of 500 px is float32 rounding (4e-6), 2e-3 on 5 is not
    report = ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)
    compare_raw([torch.tensor([500.0, 5.0])], [np.array([500.002, 5.0], np.float32)], report)
    assert report.raw_max_scaled_diff == pytest.approx(4e-6, rel=0.1) and not report.problems
    compare_raw([torch.tensor([500.0, 5.0])], [np.array([500.0, 5.002], np.float32)], report)
    assert "raw outputs differ" in report.problems[0]


def test_detection_check_matches_partners_and_tolerates_only_the_cut_off():
    boxes = torch.tensor([[[0.0, 0, 10, 10], [20, 20, 40, 40], [0, 0, 0, 0]]])
    scores = torch.tensor([[0.9, 0.5, 0.0]])
    labels = torch.tensor([[1, 2, -1]])
    ref = [torch.tensor([2]), boxes, scores, labels]
    swapped = [torch.tensor([2]), boxes[:, [1, 0, 2]], scores[:, [1, 0, 2]], labels[:, [1, 0, 2]]]
    report = ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)
    compare_detections(ref, swapped, report, max_det=3)  # order does not matter
    assert report.detections[0]["match"] and not report.problems
    other = [torch.tensor([2]), boxes, scores, torch.tensor([[1, 0, -1]])]  # a label changed
    compare_detections(ref, other, report, max_det=3)
    assert not report.detections[0]["match"] and "without a partner" in report.problems[0]
    # a tie: two class-1 boxes of equal score, either may survive NMS
    report = ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)
    tie = [torch.tensor([1]), torch.tensor([[[0.0, 0, 10, 10]]]), torch.tensor([[0.7]]), torch.tensor([[1]])]
    other = [torch.tensor([1]), torch.tensor([[[5.0, 5, 15, 15]]]), torch.tensor([[0.7]]), torch.tensor([[1]])]
    compare_detections(tie, other, report, max_det=3)
    assert report.detections[0]["match"] and report.detections[0]["unmatched_ties_or_cutoff"] == 2
    # at max_det, a near-tie at the cut-off may differ
    report = ParityReport(input="x", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=1e-4)
    cut = [torch.tensor([2]), boxes[:, :2], torch.tensor([[0.9, 0.5]]), torch.tensor([[1, 2]])]
    near = [torch.tensor([2]), torch.tensor([[[0.0, 0, 10, 10], [50, 50, 60, 60]]]), torch.tensor([[0.9, 0.50001]]),
            torch.tensor([[1, 0]])]
    compare_detections(cut, near, report, max_det=2)
    assert report.detections[0]["match"]


def detcli_checkpoint(folder: Path) -> Path:
    """A detcli checkpoint of NanoDet-Plus-m on a tiny demo dataset (preset, classes, dataset inside)."""
    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.demo import ensure_demo_dataset
    from detcli.checkpoints.io import FORMAT, save_checkpoint

    data = resolve_dataset(ensure_demo_dataset(folder / "demo", num_train=2, num_val=2) / "demo.yaml")
    names = ["circle", "square", "triangle", "star", "ring"]
    preset, _ = load_preset("nanodet-plus-m")
    torch.manual_seed(0)
    model = build_model(preset, len(names), pretrained=False)
    ckpt = {"format": FORMAT, "model": model.state_dict(), "ema": None, "preset": preset.model_dump(mode="json"),
            "class_names": names, "cat_ids": [1, 2, 3, 4, 5], "dataset": {"config": data.model_dump(mode="json")}}
    return save_checkpoint(folder / "best.pt", ckpt)


def test_detcli_checkpoint_is_checked_on_its_own_val_images(tmp_path):
    """A detcli checkpoint carries preset, classes and dataset: no --preset; the check runs on val images."""
    out = export_command(ExportRequest(weights=detcli_checkpoint(tmp_path), imgsz=96, device="cpu"))
    meta = json.loads(out.with_name(out.name + ".json").read_text())
    assert meta["class_names"][0] == "circle" and meta["parity"]["input"].startswith("val images ")
    assert meta["parity"]["passed"] and meta["input_shape"] == [1, 3, 96, 96]


def test_cli_export_then_predict_and_eval_with_the_onnx_file(tmp_path):
    weights = detcli_checkpoint(tmp_path)

    def cli(*args):
        proc = run_cli_forked(*args, cwd=tmp_path)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return proc.stdout

    assert "passed" in cli("export", "--weights", str(weights), "--imgsz", "96", "--device", "cpu", "--no-nms")
    onnx_file = str(weights.with_suffix(".onnx"))
    cli("predict", str(tmp_path / "demo" / "val"), "--weights", onnx_file, "--conf", "0.001", "--device", "cpu")
    assert len(json.loads((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text())) > 0
    cli("eval", "--weights", onnx_file, "--device", "cpu", "--batch", "2")  # the dataset recorded at export
    metrics = json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())
    cli("eval", "--weights", str(weights), "--imgsz", "96", "--device", "cpu", "--batch", "2")
    reference = json.loads((tmp_path / "runs" / "eval" / "eval2" / "metrics.json").read_text())
    assert metrics["stats"].keys() == reference["stats"].keys() and "AP50-95" in metrics["stats"]
    for key, value in reference["stats"].items():  # the same mAP as the checkpoint
        assert metrics["stats"][key] == pytest.approx(value, abs=1e-3), key


@pytest.mark.parametrize("nms", [True, False], ids=["end2end", "raw"])
def test_onnx_model_predicts_like_the_pytorch_model(tmp_path, nms):
    """``predict`` / ``eval --weights model.onnx``: same pre-processing; raw exports share decode + postprocess
    with PyTorch, end-to-end ones carry theirs (compared on full-size images: the graph clips to the input)."""
    from detcli.inference.loading import load_exported, load_for_inference
    from detcli.structures import ImageMeta

    weights = official_checkpoint(presets_dir() / "retinanet-r18-fpn.yaml", tmp_path)
    out = export_command(ExportRequest(weights=weights, preset="retinanet-r18-fpn", imgsz=128, nms=nms, device="cpu"))
    onnx_model = load_exported(out, None, torch.device("cpu"))
    torch_model = load_for_inference(weights, "retinanet-r18-fpn", [], torch.device("cpu"))
    assert onnx_model.class_names == torch_model.class_names and onnx_model.spec.input_size == (128, 77)
    images = torch.randn(2, 3, 96, 128, generator=torch.Generator().manual_seed(3))
    shapes = [(96, 128), (96, 128)] if nms else [(96, 128), (70, 100)]
    metas = [ImageMeta(i, f"{i}.jpg", s, s, np.eye(3).tolist()) for i, s in enumerate(shapes)]
    cfg = torch_model.model.postprocess_cfg.replace(score_thr=0.3, iou_thr=0.5, max_det=50)
    got = onnx_model.model.predict(images, metas, cfg)
    ref = torch_model.model.predict(images, metas, cfg)
    for a, b in zip(got, ref):
        assert len(a.scores) == len(b.scores) > 5
        a, b = sorted(zip(a.labels.tolist(), a.scores.tolist())), sorted(zip(b.labels.tolist(), b.scores.tolist()))
        assert [x[0] for x in a] == [x[0] for x in b]
        np.testing.assert_allclose([x[1] for x in a], [x[1] for x in b], atol=1e-5)
