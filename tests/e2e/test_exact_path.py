"""``predict --exact`` / ``eval --exact`` (and ``DETCLI_NO_FUSE=1``): the network as loaded, the official numbers.

The default path runs the optimised model (``detcli.models.fuse``: BatchNorms folded, channels_last on CPU), equal
to float32 rounding only. ``--exact`` runs the model as loaded: its raw outputs are those of the unfused model bit
for bit (for every family, on the golden weights loaded from official checkpoints), and the CLI's
``predictions.json`` holds exactly the detections of that model. Each run says which path it took (predict's
output, eval's ``metrics.json``); an exported ONNX file cannot run exactly and is refused with a message.
"""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from detcli.inference.loading import load_for_inference
from detcli.inference.paths import NO_FUSE_ENV, inference_model, inference_path
from detcli.models.base import Detector
from detcli.models.fuse import InferenceDetector, fuse_for_inference
from tests.golden.checkpoints import write_official_checkpoint
from tests.golden.weights import fixture_state_dict, golden_input
from tests.support.cli_subprocess import run_cli_forked

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
IMAGES = GOLDEN / "e2e" / "images"  # a photo padded by every family, one shrunk by every family
FAMILIES = ["nanodet-plus-m", "rtmdet-tiny", "retinanet-r18-fpn",
            pytest.param("defcn-r50-fpn", marks=pytest.mark.slow)]  # R50 at 256×640: seconds, not one


@pytest.fixture(autouse=True)
def _one_thread_and_tf32(monkeypatch):
    """One thread (the CLI children run with one: the same kernels) and TF32 settings restored after the test."""
    threads, tf32 = torch.get_num_threads(), (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.set_num_threads(1)
    monkeypatch.delenv(NO_FUSE_ENV, raising=False)
    yield
    torch.set_num_threads(threads)
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def golden_checkpoint(preset: str, directory: Path) -> tuple[Path, torch.Tensor]:
    """The preset's golden weights written as an official checkpoint, and the golden fixture's input."""
    doc = json.loads((GOLDEN / f"{preset}.json").read_text())
    path, _ = write_official_checkpoint(doc, fixture_state_dict(doc), directory)
    if "input_shape" in doc:
        return path, golden_input(doc["input_shape"], doc["seed"])
    with np.load(GOLDEN / f"{preset}.npz") as npz:
        return path, torch.from_numpy(npz["input"])


def raw(model: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [t for t in model(images) if t is not None]


# ----------------------------------------------------------------------------- the exact model
@pytest.mark.parametrize("preset", FAMILIES)
def test_exact_raw_outputs_are_the_unfused_models_bit_for_bit(preset, tmp_path):
    path, images = golden_checkpoint(preset, tmp_path)
    unfused = load_for_inference(path, preset, [], torch.device("cpu")).model
    expected = raw(unfused, images)
    model = load_for_inference(path, preset, [], torch.device("cpu")).model
    exact = inference_model(model, exact=True)
    assert inference_path(exact) == "exact" and not exact.training
    assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32  # float32 on CUDA too
    for got, want in zip(raw(exact, images), expected, strict=True):
        assert got.dtype == torch.float32 and torch.equal(got, want)
    # the parts of the optimisation that change no number (training modules dropped, inference mode, priors
    # cached) are exact too; folding and channels_last are not (benchmarks/parity/inference_exactness.py)
    for got, want in zip(raw(fuse_for_inference(model, channels_last=False, fold=False), images), expected):
        assert torch.equal(got, want)
    default = inference_model(model)
    assert isinstance(default, InferenceDetector) and inference_path(default) == "optimised"


def test_no_fuse_environment_is_the_exact_path(monkeypatch, tmp_path):
    path, _ = golden_checkpoint("nanodet-plus-m", tmp_path)
    model = load_for_inference(path, "nanodet-plus-m", [], torch.device("cpu")).model
    monkeypatch.setenv(NO_FUSE_ENV, "1")
    assert inference_model(model) is model and inference_path(model) == "exact"
    monkeypatch.setenv(NO_FUSE_ENV, "0")
    assert inference_path(inference_model(model)) == "optimised"


def test_the_optimised_model_keeps_the_familys_own_rules():
    """What predict/eval call on the model they run reaches the family's own code (e.g. RTMDet's un-padding rule
    in ``to_original``): InferenceDetector forwards every inference method a family may override."""
    forwarded = {"forward", "priors", "decode_boxes", "encode_boxes", "decode_scores", "detections", "postprocess",
                 "to_original", "predict"}
    for name in forwarded:
        assert name in vars(InferenceDetector), f"InferenceDetector does not forward {name}"
    import importlib
    import pkgutil

    import detcli.models.detectors as shipped

    for info in pkgutil.iter_modules(shipped.__path__):
        importlib.import_module(f"{shipped.__name__}.{info.name}")
    families = {cls for cls in _subclasses(Detector)  # the shipped ones, not test doubles
                if cls is not InferenceDetector and cls.__module__.startswith("detcli.")}
    assert len(families) >= 4
    overridden = {name for cls in families for name in vars(cls) if name in vars(Detector)}
    assert not {"decode", "predict"} & overridden, "a family overrides decode/predict: InferenceDetector must forward it"


@pytest.mark.parametrize("preset", ["defcn-r50-fpn", "rtmdet-tiny"])
def test_the_optimised_model_runs_the_familys_own_rules(preset):
    """DeFCN's own ``detections`` (boxes not clipped in input pixels) and RTMDet's own ``to_original`` (no clip to
    the original image) are what the optimised model runs, not the shared defaults."""
    from detcli.config.loader import load_preset
    from detcli.models import build_model
    from detcli.structures import Detections, ImageMeta

    cfg, _ = load_preset(preset, ["model.num_classes=3"])
    model = build_model(cfg, None, pretrained=False).eval()
    fused = fuse_for_inference(model)
    shape = (1, 3, 64, 96)
    with torch.no_grad():
        outputs = model(torch.zeros(shape))
    torch.manual_seed(0)
    outputs = type(outputs)(*(None if t is None else 3 * torch.randn_like(t) for t in outputs))  # boxes cross 0
    meta = ImageMeta(0, "a.jpg", (30, 60), (64, 96), np.diag([64 / 60, 64 / 60, 1.0]).tolist())  # padded input
    settings = model.postprocess_cfg.replace(score_thr=0.0, max_det=outputs.cls_logits.shape[1])
    got, = fused.detections(outputs, shape, [meta], settings)
    want, = model.detections(outputs, shape, [meta], settings)
    assert torch.equal(got.boxes, want.boxes) and torch.equal(got.scores, want.scores)
    if preset == "defcn-r50-fpn":
        assert float(got.boxes.min()) < 0  # unclipped: DeFCN's detections ran
    det = Detections(torch.tensor([[1.0, 20.0, 20.0, 63.0]]), torch.tensor([0.9]), torch.tensor([0]))
    assert torch.equal(fused.to_original(det, meta).boxes, model.to_original(det, meta).boxes)
    if preset == "rtmdet-tiny":
        assert float(fused.to_original(det, meta).boxes[0, 3]) > 30  # into the padding: RTMDet's rule ran


def _subclasses(cls: type) -> set[type]:
    return {s for c in cls.__subclasses__() for s in {c, *_subclasses(c)}}


# ----------------------------------------------------------------------------- through the CLI
def test_predict_exact_writes_the_loaded_models_detections(tmp_path):
    """``predict --exact``: ``predictions.json`` holds, bit for bit, the detections of the model as loaded run in
    this process; the default run says it took the optimised path."""
    from detcli.data.build import build_transform
    from detcli.evaluation.coco_results import coco_boxes_scores
    from detcli.inference.loop import iter_sources, predict_batches

    preset = "nanodet-plus-m"
    ckpt, _ = golden_checkpoint(preset, tmp_path)
    args = ["predict", str(IMAGES), "--preset", preset, "--weights", str(ckpt), "--conf", "0.05",
            "--batch", "1", "--no-save", "--project", str(tmp_path / "runs")]
    exact = run_cli_forked(*args, "--exact", "--name", "exact", cwd=tmp_path)
    default = run_cli_forked(*args, "--name", "default", cwd=tmp_path)
    for res in (exact, default):
        assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert "inference path: exact" in exact.stdout and "inference path: optimised" in default.stdout

    loaded = load_for_inference(ckpt, preset, [], torch.device("cpu"))
    cfg = loaded.preset
    expected = []
    for frame, det in predict_batches(loaded.model, iter_sources(str(IMAGES)), build_transform(cfg, train=False), 1,
                                      "cpu", loaded.model.postprocess_cfg.replace(score_thr=0.05),
                                      cfg.input.size_divisor):
        xywh, scores = coco_boxes_scores(det)
        expected += [(frame.index + 1, int(c), b, s) for b, s, c in zip(xywh, scores, det.labels.tolist())]
    records = json.loads((tmp_path / "runs" / "exact" / "predictions.json").read_text())
    got = [(r["image_id"], r["category_id"], r["bbox"], r["score"]) for r in records]
    assert len(got) == len(expected) > 10 and {r[0] for r in got} == {1, 2}
    assert got == [(i, loaded.cat_ids[c], b, s) for i, c, b, s in expected]


@pytest.fixture(scope="module")
def demo_checkpoint(tmp_path_factory):
    """A detcli NanoDet-Plus-m checkpoint for the 4-image demo val split (class logits biased to 0: every image
    gets detections), trained size 64×64, written in-process."""
    from tests.support.demo_checkpoint import write_confident_checkpoint

    path, val_ann, val_dir = write_confident_checkpoint(tmp_path_factory.mktemp("exact"), "demo.pt")
    return path, val_ann


def test_eval_exact_records_its_path_and_full_precision(tmp_path, demo_checkpoint):
    ckpt, val_ann = demo_checkpoint
    res = run_cli_forked("eval", "--weights", str(ckpt), "--conf", "0.3", "--workers", "0", "--exact", cwd=tmp_path)
    assert res.returncode == 0 and "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
    assert "inference path: exact" in res.stdout
    run = tmp_path / "runs" / "eval" / "eval"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["inference_path"] == "exact"
    records = json.loads((run / "predictions.json").read_text())
    assert len(records) == metrics["num_detections"] > 0
    xywh = np.asarray([r["bbox"] for r in records])
    corners = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    scores = np.asarray([r["score"] for r in records])
    for values in (corners, scores):  # float32 values, unrounded
        assert np.array_equal(values.astype(np.float32).astype(np.float64), values)
    assert (np.round(corners, 2) != corners).any()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_ann))
        assert len(gt.loadRes(str(run / "predictions.json")).getAnnIds()) == len(records)


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_exact_refuses_an_exported_model(command, tmp_path):
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"not read: refused by its name")
    args = [command, *([str(IMAGES)] if command == "predict" else ["--data", "demo"]), "--weights", str(onnx), "--exact"]
    res = run_cli_forked(*args, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    assert "--exact" in res.stderr and "model.onnx" in res.stderr and "onnxruntime" in res.stderr


@pytest.mark.parametrize("command", ["predict", "eval"])
def test_help_says_which_path_is_exact(command):
    from typer.testing import CliRunner

    from detcli.cli import app

    out = CliRunner().invoke(app, [command, "--help"], prog_name="detcli", env={"COLUMNS": "200"})
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "--exact" in text
    assert "reproduces the official numbers" in text and "Default: the optimised model" in text
    assert "DETCLI_NO_FUSE=1" in text
