"""Evaluator (COCO stats, per-class AP, results JSON) and prediction library (sources, batching, drawing, writing)."""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import subprocess

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from rich.console import Console

from detcli.evaluation.evaluator import (
    STAT_NAMES,
    CocoEvaluator,
    merge_results,
    per_class_table,
    stats_table,
)
from detcli.errors import DetcliError
from detcli.structures import Detections
from tests.support.cli_subprocess import run_cli_forked
from tests.support.evaluator_cases import _det, _evaluator, _gt

torch.set_num_threads(1)


# --------------------------------------------------------------------------- evaluator
def test_perfect_detections_give_ap_one():
    ev = _evaluator()
    ev.add(1, _det([[10, 10, 70, 70], [100, 100, 160, 160]], [0.9, 0.8], [1, 0]))
    ev.add(2, _det([[20, 20, 80, 80]], [0.9], [1]))
    ev.add(3, _det([], [], []))
    r = ev.evaluate()
    for name in ("AP50-95", "AP50", "AP75", "APm", "AR1", "AR10", "AR100", "ARm"):
        assert r.stats[name] == pytest.approx(1.0), name
    # no small / large ground truth: pycocotools says -1, we say NaN
    for name in ("APs", "APl", "ARs", "ARl"):
        assert math.isnan(r.stats[name]) and r.raw_stats[STAT_NAMES.index(name)] == -1
    assert [(c.name, c.category_id, c.instances) for c in r.per_class] == [("seven", 7, 1), ("three", 3, 2)]
    assert [v for c in r.per_class for v in (c.ap, c.ap50)] == pytest.approx([1.0] * 4)
    assert r.num_images == 3 and r.num_detections == 3
    assert "Average Precision" in r.log  # pycocotools' summary was captured, not printed


def test_shifted_box_counts_at_050_not_at_075(capsys):
    """Image 2's "three" box is shifted 12 px right: IoU = 48*60 / (72*60) = 2/3.

    It matches at IoU thresholds .50 .55 .60 .65 (4 of 10) and is a false positive at .70 … .95.
    At those 6 thresholds class "three" has [TP (0.9), FP (0.8)] for 2 GT: recall 0.5 with precision 1,
    so 51 of the 101 recall points (0.00 … 0.50) have precision 1 → AP = 51/101.
    """
    ev = _evaluator()
    ev.add(1, _det([[10, 10, 70, 70], [100, 100, 160, 160]], [0.9, 0.9], [1, 0]))
    ev.add(2, _det([[32, 20, 92, 80]], [0.8], [1]))
    ev.add(3, _det([], [], []))
    r = ev.evaluate()
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured
    ap_three = (4 * 1.0 + 6 * 51 / 101) / 10
    three, seven = r.per_class[1], r.per_class[0]
    assert three.ap50 == pytest.approx(1.0)
    assert three.ap == pytest.approx(ap_three)
    assert three.ar100 == pytest.approx((4 * 1.0 + 6 * 0.5) / 10)
    assert seven.ap == pytest.approx(1.0) and seven.ap50 == pytest.approx(1.0)
    assert r.stats["AP50"] == pytest.approx(1.0)
    assert r.stats["AP75"] == pytest.approx((51 / 101 + 1.0) / 2)
    assert r.stats["AP50-95"] == pytest.approx((ap_three + 1.0) / 2)
    assert r.stats["AR100"] == pytest.approx((0.7 + 1.0) / 2)


def test_false_positive_on_image_without_gt_counts():
    """A 0.95 "seven" box on image 3 (no GT) ranks above the true one: precision [0, 1/2] → AP 0.5."""
    ev = _evaluator()
    ev.add(1, _det([[10, 10, 70, 70], [100, 100, 160, 160]], [0.9, 0.9], [1, 0]))
    ev.add(2, _det([[20, 20, 80, 80]], [0.9], [1]))
    ev.add(3, _det([[0, 0, 50, 50]], [0.95], [0]))
    r = ev.evaluate()
    assert r.per_class[0].ap == pytest.approx(0.5) and r.per_class[0].ap50 == pytest.approx(0.5)
    assert r.per_class[1].ap == pytest.approx(1.0)
    assert r.stats["AP50-95"] == pytest.approx(0.75)


def test_only_added_images_are_evaluated():
    """Image 2 never added: its GT must not count as missed (AP stays 1 on image 1 alone)."""
    ev = _evaluator()
    ev.add(1, _det([[10, 10, 70, 70], [100, 100, 160, 160]], [0.9, 0.9], [1, 0]))
    r = ev.evaluate()
    assert r.num_images == 1
    assert r.stats["AP50-95"] == pytest.approx(1.0)
    assert r.per_class[1].instances == 1


def test_zero_detections_give_zero_not_crash():
    ev = _evaluator()
    for image_id in (1, 2, 3):
        ev.add(image_id, _det([], [], []))
    r = ev.evaluate()
    for name in ("AP50-95", "AP50", "AP75", "APm", "AR1", "AR10", "AR100", "ARm"):
        assert r.stats[name] == 0.0, name
    assert [v for c in r.per_class for v in (c.ap, c.ap50, c.ar100)] == [0.0] * 6
    assert ev.results_json() == [] and r.num_detections == 0
    # nothing added at all: every GT image is evaluated, still zeros
    r2 = _evaluator().evaluate()
    assert r2.num_images == 3 and r2.stats["AP50"] == 0.0


def test_results_json_format_and_category_mapping():
    ev = _evaluator()
    ev.add(2, _det([[10.123, 20.456, 30.789, 40.0]], [0.123456789], [0]))
    ev.add(1, _det([[1, 2, 3, 4], [5, 6, 9, 10]], [0.5, 0.25], [1, 0]))
    out = ev.results_json()
    x1, y1, x2, y2 = (float(np.float32(v)) for v in (10.123, 20.456, 30.789, 40.0))
    assert out == [
        {"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 2.0, 2.0], "score": 0.5},
        {"image_id": 1, "category_id": 7, "bbox": [5.0, 6.0, 4.0, 4.0], "score": 0.25},
        {"image_id": 2, "category_id": 7, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(np.float32(0.123456789))},
    ]  # full float32 precision: the float32 corners and score, w and h their float64 differences
    json.dumps(out)  # plain Python types only
    with pytest.raises(ValueError, match="image id 99"):
        ev.add(99, _det([], [], []))
    with pytest.raises(ValueError, match="labels"):
        ev.add(1, _det([[0, 0, 1, 1]], [0.5], [2]))


def _render(table) -> str:
    console = Console(file=io.StringIO(), width=150, color_system=None)
    console.print(table)
    return console.file.getvalue()


def test_tables_and_json_report_values():
    gt = _gt()
    gt.dataset["categories"].append({"id": 9, "name": "nine"})  # a class with no GT at all
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    ev = CocoEvaluator(gt, [7, 3, 9], ["seven", "three", "nine"])
    ev.add(1, _det([[10, 10, 70, 70], [100, 100, 160, 160]], [0.9, 0.9], [1, 0]))
    ev.add(2, _det([[32, 20, 92, 80]], [0.8], [1]))
    r = ev.evaluate()
    assert math.isnan(r.per_class[2].ap) and r.per_class[2].instances == 0

    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in _render(per_class_table(r)).splitlines() if line.count("│") >= 6}
    ap_three = (4 + 6 * 51 / 101) / 10
    # P, R (IoU 0.50, at the confidence of the best mean F1: every detection is a TP there), AP50-95, AP50, AR100
    assert rows["three"] == ["2", "1.000", "1.000", f"{ap_three:.3f}", "1.000", "0.700"]
    assert rows["seven"] == ["1", "1.000", "1.000", "1.000", "1.000", "1.000"]
    assert rows["nine"] == ["0", "-", "-", "-", "-", "-"]
    assert rows["all"] == ["3", "1.000", "1.000", f"{(ap_three + 1) / 2:.3f}", "1.000", "0.850"]

    text = _render(stats_table(r))
    for name in STAT_NAMES:
        assert f" {name} " in text
    assert "AP  IoU=0.75" in text

    d = json.loads(r.to_json())
    assert d["stats"]["AP50"] == pytest.approx(1.0) and d["stats"]["APs"] is None
    assert d["per_class"][2] == {"class": "nine", "category_id": 9, "instances": 0,
                                 "AP50-95": None, "AP50": None, "AR100": None, "P": None, "R": None}
    assert d["raw_stats"][3] == -1 and d["num_images"] == 2 and d["num_detections"] == 3


def test_merge_results_keeps_each_image_once():
    a = {1: [{"image_id": 1, "score": 0.5}], 2: [{"image_id": 2, "score": 0.1}]}
    b = {2: [{"image_id": 2, "score": 0.1}], 3: []}
    merged = merge_results([a, b, None])
    assert sorted(merged) == [1, 2, 3] and merged[2] == a[2]


def test_gather_is_a_noop_without_distributed_and_works_with_one_rank():
    import torch.distributed as dist

    ev = _evaluator()
    ev.add(1, _det([[10, 10, 70, 70]], [0.9], [1]))
    before = ev.results_json()
    ev.gather()
    assert ev.results_json() == before
    if not dist.is_available():
        pytest.skip("torch.distributed not available")
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    try:
        ev.gather()
        assert ev.results_json() == before
    finally:
        dist.destroy_process_group()


def _gather_worker(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ev = _evaluator()
    if rank == 0:
        ev.add(1, _det([[10, 10, 70, 70]], [0.9], [1]))
        ev.add(3, _det([], [], []))
    else:  # image 3 again, as DistributedSampler padding would: rank 0's copy wins
        ev.add(2, _det([[20, 20, 80, 80]], [0.9], [1]))
        ev.add(3, _det([[0, 0, 5, 5]], [0.2], [0]))
    ev.gather()
    queue.put((rank, ev.results_json()))
    dist.destroy_process_group()


def test_gather_across_two_processes():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # forked, not spawned: the gather is under test, not the start method (detcli's own spawn is covered by the
    # DDP tests in test_engine and test_cli), and two fresh interpreters would re-import torch for a few tensors
    queue = mp.get_context("fork").SimpleQueue()
    mp.start_processes(_gather_worker, args=(port, queue), nprocs=2, start_method="fork")
    got = dict(queue.get() for _ in range(2))
    score = float(np.float32(0.9))  # full float32 precision
    expected = [
        {"image_id": 1, "category_id": 3, "bbox": [10.0, 10.0, 60.0, 60.0], "score": score},
        {"image_id": 2, "category_id": 3, "bbox": [20.0, 20.0, 60.0, 60.0], "score": score},
    ]
    assert got[0] == expected and got[1] == expected


# --------------------------------------------------------------------------- prediction sources
from detcli.inference import writer as W  # noqa: E402
from detcli.inference.loop import Frame, iter_sources, predict_batches  # noqa: E402
from detcli.inference.writer import PredictionWriter  # noqa: E402
from detcli.models.base import Detector  # noqa: E402
from detcli.plots.detections import class_color, draw_detections, place_labels  # noqa: E402
from detcli.postprocess import PostprocessConfig  # noqa: E402


def _img(h: int, w: int, value: int) -> np.ndarray:
    img = np.full((h, w, 3), value, np.uint8)
    img[0, 0] = (1, 2, 3)  # an asymmetric pixel: catches a transposed or channel-swapped read
    return img


def _write_video(path, n: int = 5, size=(64, 48), fps: float = 10.0) -> bool:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, size)
    if not writer.isOpened():
        return False
    for i in range(n):
        writer.write(np.full((size[1], size[0], 3), 40 * i + 20, np.uint8))
    writer.release()
    return os.path.getsize(path) > 0


class _Warnings(list):
    def __call__(self, message: str) -> None:
        self.append(message)


def test_source_single_file(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _img(10, 20, 7))
    frames = list(iter_sources(str(tmp_path / "a.png")))
    assert len(frames) == 1
    f = frames[0]
    assert (f.path, f.index, f.frame, f.is_video) == (str(tmp_path / "a.png"), 0, None, False)
    np.testing.assert_array_equal(f.img, _img(10, 20, 7))


def test_source_folder_sorted_skips_corrupt_and_other_files(tmp_path):
    cv2.imwrite(str(tmp_path / "b.jpg"), _img(8, 8, 100))
    cv2.imwrite(str(tmp_path / "a.png"), _img(6, 9, 50))
    (tmp_path / "c.jpg").write_bytes(b"not a jpeg at all")
    (tmp_path / "d.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("ignored")
    cv2.imwrite(str(tmp_path / "e.BMP"), _img(5, 5, 0))
    warn = _Warnings()
    frames = list(iter_sources(str(tmp_path), warn=warn))
    assert [os.path.basename(f.path) for f in frames] == ["a.png", "b.jpg", "e.BMP"]
    assert [f.index for f in frames] == [0, 1, 2]
    assert frames[0].img.shape == (6, 9, 3)
    assert len(warn) == 2 and "c.jpg" in warn[0] and "d.png" in warn[1]


def test_source_default_warning_is_a_python_warning(tmp_path):
    cv2.imwrite(str(tmp_path / "a.png"), _img(4, 4, 1))
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.warns(UserWarning, match="b.png"):
        assert len(list(iter_sources(str(tmp_path)))) == 1


def test_source_glob(tmp_path):
    for name in ("x1.png", "x2.png", "y.png"):
        cv2.imwrite(str(tmp_path / name), _img(4, 4, 1))
    cv2.imwrite(str(tmp_path / "x3.jpg"), _img(4, 4, 1))
    frames = list(iter_sources(str(tmp_path / "x*.png")))
    assert [os.path.basename(f.path) for f in frames] == ["x1.png", "x2.png"]


def test_source_errors_name_the_path(tmp_path):
    missing = str(tmp_path / "nope.jpg")
    with pytest.raises(DetcliError, match="nope.jpg"):
        iter_sources(missing)  # raised at call time, not at first iteration
    (tmp_path / "empty").mkdir()
    with pytest.raises(DetcliError, match="empty"):
        iter_sources(str(tmp_path / "empty"))
    with pytest.raises(DetcliError, match=r"zzz\*\.png"):
        iter_sources(str(tmp_path / "zzz*.png"))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    warn = _Warnings()
    with pytest.raises(DetcliError, match="no readable"):
        list(iter_sources(str(tmp_path / "bad.jpg"), warn=warn))
    assert warn and "bad.jpg" in warn[0]


def test_source_video_and_mixed_folder(tmp_path):
    if not _write_video(tmp_path / "clip.mp4"):
        pytest.skip("no mp4v video writer in this OpenCV build")
    cv2.imwrite(str(tmp_path / "a.png"), _img(4, 4, 1))
    frames = list(iter_sources(str(tmp_path)))
    assert [(os.path.basename(f.path), f.index, f.frame) for f in frames] == [("a.png", 0, None)] + [
        ("clip.mp4", 1 + i, i) for i in range(5)
    ]
    video = frames[1:]
    assert all(f.is_video and f.fps == pytest.approx(10.0) and f.img.shape == (48, 64, 3) for f in video)
    means = [float(f.img.mean()) for f in video]
    assert means == pytest.approx([20, 60, 100, 140, 180], abs=8)  # lossy codec, distinct frames in order


# --------------------------------------------------------------------------- batching and back-mapping
class _FixedBoxDetector(Detector):
    """Returns the same two boxes (network-input pixels) for every image and records what it saw."""

    strides = (8,)
    num_classes = 2

    def __init__(self) -> None:
        super().__init__()
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.calls: list[dict] = []

    def forward(self, images):
        return images.mean(dim=(1, 2, 3))

    def loss(self, images, targets, metas, epoch):
        return {"loss": self.dummy.sum()}

    def _unused(self, *args, **kwargs):
        raise AssertionError("predict_batches only calls predict")

    priors = decode_boxes = encode_boxes = decode_scores = assign = _unused

    def predict(self, images, metas, cfg=None):
        self.calls.append(dict(shape=tuple(images.shape), metas=list(metas), training=self.training,
                               inference=torch.is_inference_mode_enabled(), cfg=cfg))
        boxes = torch.tensor([[10.0, 4.0, 50.0, 20.0], [90.0, 30.0, 110.0, 50.0]])
        return [Detections(boxes, torch.tensor([0.9, 0.4]), torch.tensor([1, 0])) for _ in metas]


def test_predict_batches_maps_boxes_back_through_stretch_resize():
    """Original (h=120, w=200) stretched to input (w=100, h=40): x / 0.5, y / (1/3).

    (10, 4, 50, 20) → (20, 12, 100, 60); (90, 30, 110, 50) → (180, 90, 220, 150), clipped to (180, 90, 200, 120).
    """
    from detcli.data.transforms.nanodet import NanoDetTransform

    transform = NanoDetTransform(input_size=(100, 40), train=False)
    frames = [Frame(img=_img(120, 200, 10 * i), path=f"{i}.png", index=i) for i in range(3)]
    model = _FixedBoxDetector()
    model.train()
    cfg = PostprocessConfig(score_thr=0.3, iou_thr=0.6, max_det=50)
    out = list(predict_batches(model, iter(frames), transform, batch_size=2, device="cpu", cfg=cfg, size_divisor=32))
    assert [f.index for f, _ in out] == [0, 1, 2]
    assert [c["shape"] for c in model.calls] == [(2, 3, 64, 128), (1, 3, 64, 128)]  # padded to 32
    assert all(not c["training"] and c["inference"] and c["cfg"] is cfg for c in model.calls)
    assert model.training  # mode restored
    meta = model.calls[0]["metas"][1]
    assert (meta.image_id, meta.file_name, meta.ori_shape, meta.img_shape) == (1, "1.png", (120, 200), (40, 100))
    for _, det in out:
        torch.testing.assert_close(det.boxes, torch.tensor([[20.0, 12.0, 100.0, 60.0], [180.0, 90.0, 200.0, 120.0]]))
        torch.testing.assert_close(det.scores, torch.tensor([0.9, 0.4]))
        assert det.labels.tolist() == [1, 0]


# --------------------------------------------------------------------------- drawing and writing
def test_class_colors_are_stable_and_distinct():
    colors = [class_color(i) for i in range(20)]
    assert colors == [class_color(i) for i in range(20)]
    assert len(set(colors)) == 20


def test_draw_detections(tmp_path):
    img = np.full((100, 200, 3), 128, np.uint8)
    det = Detections(torch.tensor([[40.0, 50.0, 120.0, 90.0]]), torch.tensor([0.87]), torch.tensor([1]))
    out = draw_detections(img, det, ["cat", "dog"])
    assert out.shape == img.shape and out.dtype == np.uint8
    assert (img == 128).all()  # input untouched
    assert tuple(int(v) for v in out[70, 40]) == class_color(1)  # left edge of the box
    assert (out[45:50, 41:60] != 128).any()  # label background above the box
    assert (out[60:80, 60:100] == 128).all()  # box interior untouched
    empty = Detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    np.testing.assert_array_equal(draw_detections(img, empty, ["cat", "dog"]), img)


def test_label_at_the_right_edge_moves_left_into_the_image():
    """Image 200×100, box (180, 40)–(199, 90), label 60×14: above the box, shifted left to end at x = 200."""
    assert place_labels([(180, 40, 199, 90)], [(60, 14)], (200, 100)) == [(140, 26, 200, 40)]
    assert place_labels([(-5, 0, 30, 30)], [(20, 10)], (200, 100)) == [(0, 0, 20, 10)]  # no room above: inside
    assert place_labels([(150, 95, 199, 99)], [(60, 14)], (200, 100)) == [(140, 81, 200, 95)]
    assert place_labels([(10, 10, 20, 20)], [(300, 14)], (200, 100)) == [(0, 10, 300, 24)]  # wider than the image


def test_labels_of_one_box_do_not_cover_each_other():
    rects = place_labels([(50, 40, 120, 90)] * 3, [(60, 14), (50, 14), (60, 14)], (200, 100))
    assert rects == [(50, 26, 110, 40), (50, 40, 100, 54), (50, 54, 110, 68)]  # above, then stacked inside
    # no room left below: the label stays inside the image, over the last one
    crowded = place_labels([(0, 0, 50, 20)] * 3, [(40, 10)] * 3, (60, 20))
    assert crowded == [(0, 0, 40, 10), (0, 10, 40, 20), (0, 10, 40, 20)]


def test_drawn_labels_stay_inside_and_apart():
    img = np.full((100, 200, 3), 128, np.uint8)
    right = Detections(torch.tensor([[180.0, 40.0, 199.0, 90.0]]), torch.tensor([0.87]), torch.tensor([1]))
    out = draw_detections(img, right, ["cat", "dog"])
    label_rows = out[20:39]
    assert (label_rows[:, 140:178] != 128).any(axis=2).mean() > 0.5  # the label, moved left of the box

    same = Detections(torch.tensor([[40.0, 50.0, 120.0, 90.0]] * 2), torch.tensor([0.9, 0.5]), torch.tensor([0, 1]))
    out = draw_detections(img, same, ["cat", "dog"])
    # the stronger label above the box, the weaker one below it, inside the box's top edge
    assert (out[38:48, 45:80] == class_color(0)).all(axis=2).mean() > 0.3  # background between the letters
    assert (out[53:62, 45:80] == class_color(1)).all(axis=2).mean() > 0.3


def test_writer_images_video_and_json(tmp_path):
    names = ["cat", "dog"]
    det = Detections(torch.tensor([[10.0, 20.0, 30.5, 45.25]]), torch.tensor([0.123456]), torch.tensor([1]))
    out_dir = tmp_path / "out"
    frames = [Frame(_img(60, 80, 50), "x/a.png", 0), Frame(_img(60, 80, 60), "y/a.png", 1)]
    video_ok = _write_video(tmp_path / "clip.mp4")
    if video_ok:
        frames += [dataclasses.replace(f, index=2 + f.index) for f in iter_sources(str(tmp_path / "clip.mp4"))]
    with PredictionWriter(out_dir, names, cat_ids=[11, 12]) as writer:
        for f in frames:
            writer.write(f, det)
    files = sorted(p.name for p in out_dir.iterdir())
    assert files == sorted(["a.png", "a_2.png", "predictions.json"] + (["clip.mp4"] if video_ok else []))
    assert cv2.imread(str(out_dir / "a_2.png")).shape == (60, 80, 3)
    records = json.loads((out_dir / "predictions.json").read_text())
    assert len(records) == len(frames)
    assert records[0] == {"image_id": 1, "category_id": 12, "bbox": [10.0, 20.0, 20.5, 25.25],
                          "score": float(np.float32(0.123456)),  # full float32 precision
                          "file_name": "x/a.png", "frame": None, "category": "dog"}
    assert [r["image_id"] for r in records] == list(range(1, len(frames) + 1))  # one id per image / frame
    if video_ok:
        assert [r["frame"] for r in records[2:]] == [0, 1, 2, 3, 4]
        cap = cv2.VideoCapture(str(out_dir / "clip.mp4"))
        assert cap.get(cv2.CAP_PROP_FRAME_COUNT) == 5 and cap.get(cv2.CAP_PROP_FRAME_HEIGHT) == 48
        cap.release()


def test_writer_falls_back_to_frames_and_can_skip_images(tmp_path, monkeypatch):
    class _NoVideo:
        def __init__(self, *args):
            pass

        def isOpened(self):
            return False

        def release(self):
            pass

    monkeypatch.setattr(W.cv2, "VideoWriter", _NoVideo)
    empty = Detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    frames = [Frame(_img(8, 8, i), "v/clip.avi", i, frame=i, fps=5.0) for i in range(3)]
    writer = PredictionWriter(tmp_path / "o", ["cat"])
    for f in frames:
        writer.write(f, empty)
    assert writer.close() == tmp_path / "o" / "predictions.json"
    assert sorted(p.name for p in (tmp_path / "o" / "clip").iterdir()) == [f"clip_{i:06d}.jpg" for i in range(3)]
    assert json.loads((tmp_path / "o" / "predictions.json").read_text()) == []

    writer = PredictionWriter(tmp_path / "p", ["cat"], save_images=False)
    writer.write(frames[0], Detections(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([0.5]), torch.tensor([0])))
    writer.close()
    assert [p.name for p in (tmp_path / "p").iterdir()] == ["predictions.json"]
    assert json.loads((tmp_path / "p" / "predictions.json").read_text())[0]["category_id"] == 0


# --------------------------------------------------------------------------- output files of eval and predict
def _cli(*args: str, cwd) -> subprocess.CompletedProcess:
    """``python -m detcli ARGS``, forked from a helper that has imported detcli (it inherits the umask)."""
    return run_cli_forked(*args, cwd=cwd)


@pytest.fixture(scope="module")
def confident_checkpoint(tmp_path_factory):
    """A detcli checkpoint written in-process (no training): NanoDet-Plus-m, the 5 demo classes, class
    logits biased to 0 (scores near 0.5, so every image gets detections), trained size 64×64, and the
    4-image demo val split as its dataset. Returns (checkpoint, val annotation file, val image folder)."""
    from tests.support.demo_checkpoint import write_confident_checkpoint

    path, val_ann, val_dir = write_confident_checkpoint(tmp_path_factory.mktemp("outputs"), "confident.pt")
    return path, val_ann, val_dir


@contextlib.contextmanager
def _umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def _load_results(gt: COCO, path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return gt.loadRes(str(path))


def test_predict_writes_coco_results_at_the_trained_size(tmp_path, confident_checkpoint):
    ckpt, val_ann, val_dir = confident_checkpoint
    with _umask(0o022):
        out = _cli("predict", str(val_dir), "--weights", str(ckpt), "--conf", "0.3", "--no-save", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "input 64×64" in out.stdout  # the checkpoint's size, not the preset's 320
    path = tmp_path / "runs" / "predict" / "predict" / "predictions.json"
    assert path.stat().st_mode & 0o777 == 0o644
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_ann))
    records = json.loads(path.read_text())
    dt = _load_results(gt, path)
    assert len(dt.getAnnIds()) == len(records) > 0
    # ids number the sorted files from 1; the demo's ids do the same, so this run scores against its json
    ids = {os.path.basename(r["file_name"]): r["image_id"] for r in records}
    assert ids == {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    assert all(set(r) == {"image_id", "category_id", "bbox", "score", "file_name", "frame", "category"}
               and len(r["bbox"]) == 4 and r["category_id"] in gt.cats for r in records)


def test_eval_saves_its_detections_as_coco_results(tmp_path, confident_checkpoint):
    ckpt, val_ann, _ = confident_checkpoint
    with _umask(0o022):
        out = _cli("eval", "--weights", str(ckpt), "--conf", "0.3", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "runs" / "eval" / "eval"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["imgsz"] == [64, 64]
    path = run / "predictions.json"
    assert path.stat().st_mode & 0o777 == 0o644
    records = json.loads(path.read_text())
    assert set(records[0]) == {"image_id", "category_id", "bbox", "score"}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(val_ann))
    dt = _load_results(gt, path)
    assert len(dt.getAnnIds()) == len(records) == metrics["num_detections"] > 0
    assert {r["image_id"] for r in records} == set(gt.getImgIds())
    assert {r["category_id"] for r in records} <= set(gt.getCatIds())


def test_inference_size_defaults_to_the_trained_size(tmp_path):
    """The spec's ``imgsz`` (resolved once, where the file is read): --imgsz, else the trained size."""
    from detcli.checkpoints.io import FORMAT, load_checkpoint, save_checkpoint
    from detcli.inference.loading import resolve_imgsz

    def trained(payload: dict) -> int | None:
        path = tmp_path / f"{len(list(tmp_path.iterdir()))}.pt"
        save_checkpoint(path, {"format": FORMAT, **payload})
        return load_checkpoint(path).trained_imgsz

    assert resolve_imgsz(None, trained({"input_size": [96, 64]}), "detcli", []) == 96  # long side of the trained size
    assert resolve_imgsz(None, trained({"train_args": {"imgsz": 160}}), "detcli", []) == 160  # older checkpoints
    assert resolve_imgsz(None, trained({"train_args": {"imgsz": None}}), "detcli", []) is None  # the preset's size
    assert resolve_imgsz(None, trained({}), "detcli", []) is None
    assert resolve_imgsz(128, 96, "detcli", []) == 128  # --imgsz wins
    assert resolve_imgsz(None, 96, "detcli", ["input.size=[416,416]"]) is None  # so does --set
    assert resolve_imgsz(None, 96, "official", []) is None
