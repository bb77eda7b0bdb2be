"""One predictor protocol, two runtimes: the PyTorch detector and an ONNX export give the same detections through
the one prediction loop, and both honour a :class:`PostprocessConfig` given per call."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from detcli.app.export import ExportRequest, export_command
from detcli.config.loader import load_preset, presets_dir
from detcli.data.build import build_transform
from detcli.data.collate import collate
from detcli.export.parity import ParityReport, compare_detections, compare_predictors, detections_as_outputs
from detcli.inference.loop import Frame, predict_batches, predict_loader
from detcli.inference.predictor import Predictor
from detcli.models import build_model
from detcli.models.fuse import fuse_for_inference
from detcli.postprocess import PostprocessConfig
from detcli.structures import Batch, Detections, ImageMeta
from tests.support.official_weights import official_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

PRESET = "nanodet-plus-m"  # the smallest preset
IMGSZ = 96
HIGH = 0.45  # a score threshold some detections of the random images pass (their best score ~0.5)


@pytest.fixture(scope="module")
def runtimes(tmp_path_factory) -> dict:
    """The PyTorch model of a checkpoint and its raw and end-to-end ONNX exports (``OnnxDetector``)."""
    from detcli.export.runtime import OnnxDetector
    from detcli.export.validate import check_onnx

    folder = tmp_path_factory.mktemp("predictor")
    weights = official_checkpoint(presets_dir() / f"{PRESET}.yaml", folder)
    preset, _ = load_preset(PRESET)
    model = build_model(preset, 80, pretrained=False)
    model.load_state_dict(torch.load(weights, weights_only=True)["state_dict"])
    out = {"preset": preset, "torch": model.eval()}
    for mode, nms in (("raw", False), ("end2end", True)):
        path = export_command(ExportRequest(weights=weights, preset=PRESET, imgsz=IMGSZ, nms=nms, device="cpu",
                                            output=folder / f"{mode}.onnx"))
        out[mode] = OnnxDetector(check_onnx(Path(path)), torch.device("cpu"))
    return out


def _frames() -> list[Frame]:
    gen = np.random.default_rng(5)
    shapes = [(120, 160), (90, 70), (96, 96)]
    return [Frame(img=gen.integers(0, 256, (h, w, 3), dtype=np.uint8), path=f"{i}.jpg", index=i)
            for i, (h, w) in enumerate(shapes)]


def _images() -> tuple[torch.Tensor, list[ImageMeta]]:
    images = torch.randn(2, 3, IMGSZ, IMGSZ, generator=torch.Generator().manual_seed(3))
    shapes = [(IMGSZ, IMGSZ), (70, 90)]
    return images, [ImageMeta(i, f"{i}.jpg", s, s, np.eye(3).tolist()) for i, s in enumerate(shapes)]


def _same_class_overlap(det: Detections) -> float:
    """The largest IoU of two detections of one class (what NMS at ``iou_thr`` keeps at most)."""
    iou = box_iou(det.boxes, det.boxes).fill_diagonal_(0)
    same = det.labels[:, None] == det.labels[None]
    return float((iou * same).max()) if len(det.scores) else 0.0


def assert_same_detections(got: list[Detections], ref: list[Detections], max_det: int) -> None:
    """Every detection has a partner of the same class, box within 1e-2 px and score within 1e-4 (the export
    parity check's float32 tolerances: boxes in the hundreds of pixels round by more than scores in [0, 1])."""
    report = ParityReport(input="test", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=0.0)
    compare_detections(detections_as_outputs(ref), detections_as_outputs(got), report, max_det)
    _assert_all_matched(report)


def _assert_all_matched(report: ParityReport) -> None:
    assert not report.problems, report.problems
    for row in report.detections:
        assert row["pytorch"] == row["exported"] == row["matched"], row


def test_both_runtimes_and_the_optimised_model_are_predictors(runtimes):
    for name in ("torch", "raw", "end2end"):
        assert isinstance(runtimes[name], Predictor), name
    assert isinstance(fuse_for_inference(runtimes["torch"]), Predictor)
    assert runtimes["raw"].postprocess_cfg == runtimes["torch"].postprocess_cfg  # the preset's test section
    built_in = runtimes["end2end"].fixed
    e2e = runtimes["end2end"].postprocess_cfg
    assert (e2e.score_thr, e2e.iou_thr, e2e.max_det) == (built_in["score_thr"], built_in["iou_thr"], built_in["max_det"])


def test_a_raw_onnx_export_predicts_like_the_pytorch_model_through_the_loop(runtimes):
    preset = runtimes["preset"]
    transform = build_transform(preset, train=False, imgsz=IMGSZ)
    cfg = runtimes["torch"].postprocess_cfg.replace(score_thr=0.3, max_det=50)
    results = {}
    for name in ("torch", "raw"):
        out = list(predict_batches(runtimes[name], _frames(), transform, 2, "cpu", cfg, preset.input.size_divisor))
        assert [f.index for f, _ in out] == [0, 1, 2]
        results[name] = [d for _, d in out]
    assert all(len(d.scores) > 5 for d in results["torch"])
    for d, f in zip(results["torch"], _frames()):  # original pixels: inside each original image
        h, w = f.img.shape[:2]
        assert float(d.boxes[:, 0::2].max()) <= w and float(d.boxes[:, 1::2].max()) <= h
    assert_same_detections(results["raw"], results["torch"], cfg.max_det)


@pytest.mark.parametrize("name", ["torch", "raw", "end2end"])
def test_each_runtime_honours_the_settings_of_the_call(runtimes, name):
    predictor = runtimes[name]
    images, metas = _images()
    default = predictor.predict(images, metas)
    assert_same_detections(predictor.predict(images, metas, predictor.postprocess_cfg), default, 10**6)
    base = predictor.postprocess_cfg
    high = predictor.predict(images, metas, base.replace(score_thr=HIGH))
    few = predictor.predict(images, metas, base.replace(max_det=3))
    for d, h, f in zip(default, high, few):
        assert len(d.scores) > 3 and float(d.scores.min()) > base.score_thr
        assert 0 < len(h.scores) < len(d.scores) and float(h.scores.min()) > HIGH
        assert len(f.scores) == 3 and torch.equal(f.scores, d.scores[:3])
    if name != "end2end":  # a stricter NMS keeps fewer boxes; the end-to-end graph has its IoU built in
        strict = predictor.predict(images, metas, base.replace(iou_thr=0.1))
        assert max(_same_class_overlap(d) for d in default) > 0.1 >= max(_same_class_overlap(d) for d in strict)


def test_a_raw_export_takes_any_settings_as_pytorch_does(runtimes):
    """The parity check of two predictors (through the loop, in original pixels) with settings of the call."""
    images, metas = _images()
    batch = Batch(images, [], metas, [], [(IMGSZ, IMGSZ)] * len(metas))  # padded to the divisor, 32
    cfg = PostprocessConfig(score_thr=HIGH, iou_thr=0.4, max_det=20)
    report = ParityReport(input="test", dtype="float32", raw_max_abs_diff=0.0, raw_tolerance=0.0)
    compare_predictors(runtimes["torch"], runtimes["raw"], batch, "cpu", cfg, report)
    _assert_all_matched(report)
    assert all(0 < row["pytorch"] <= 20 for row in report.detections)


class _ShiftingPredictor:
    """A predictor that is no module: one box per image, which ``to_original`` moves by the image's id."""

    postprocess_cfg = PostprocessConfig()

    def __init__(self) -> None:
        self.mapped: list[int] = []

    def predict(self, images, metas, cfg=None):
        return [Detections(torch.tensor([[1.0, 2.0, 3.0, 4.0]]), torch.tensor([0.9]), torch.tensor([0])) for _ in metas]

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        self.mapped.append(meta.image_id)
        return Detections(det.boxes + meta.image_id, det.scores, det.labels)


def test_the_loader_loop_maps_back_through_the_predictor_and_names_skipped_images():
    predictor = _ShiftingPredictor()
    assert isinstance(predictor, Predictor)
    metas = [ImageMeta(i, f"{i}.jpg", (8, 8), (8, 8), np.eye(3).tolist()) for i in (10, 20)]
    samples = [{"img": torch.zeros(3, 8, 8), "boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
                "meta": m} for m in metas]
    unreadable = ImageMeta(30, "30.jpg", (8, 8), (8, 8), np.eye(3).tolist())
    batch = collate(samples, size_divisor=8)
    batch = Batch(batch.images, batch.targets, batch.metas, [unreadable], batch.pad_shapes)
    out = list(predict_loader(predictor, [batch], "cpu"))
    assert [(m.image_id, d is None) for m, d in out] == [(30, True), (10, False), (20, False)]
    assert predictor.mapped == [10, 20]  # once per image, in the loop
    assert out[2][1].boxes.tolist() == [[21.0, 22.0, 23.0, 24.0]]
