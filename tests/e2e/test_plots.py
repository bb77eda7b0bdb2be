"""What a run leaves behind: P/R/F1 curves and the confusion matrix on hand-made cases, the plots of a tiny
training run and of ``detcli eval``, label statistics, and the ``train --check`` report."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from rich.console import Console

from detcli.data.demo import ensure_demo_dataset
from detcli.engine.run_dir import ResultsCSV
from detcli.evaluation.confusion import add_image, greedy_pairs
from detcli.evaluation.evaluator import mean_precision_recall, per_class_table
from detcli.plots.results import plot_results, results_panels
from detcli.plots.validation import save_validation_plots
from tests.support.cli_subprocess import run_cli_forked
from tests.support.plot_cases import _evaluate

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------- a hand-made evaluation
def test_precision_recall_f1_against_confidence_by_hand():
    curves = _evaluate().curves
    at = {c: int(round(c * 1000)) for c in (0.05, 0.5, 0.7, 0.85, 0.95)}
    p, r, f1 = curves.precision, curves.recall, curves.f1
    # class a at c=0.5: 0.9, 0.8, 0.6 kept: 2 TP of 3 detections, 2 of 3 GT
    assert (p[0, at[0.5]], r[0, at[0.5]], f1[0, at[0.5]]) == pytest.approx((2 / 3, 2 / 3, 2 * 2 / (3 + 3)))
    assert (p[0, at[0.7]], r[0, at[0.7]], f1[0, at[0.7]]) == pytest.approx((1 / 2, 1 / 3, 2 * 1 / (2 + 3)))
    assert (p[0, at[0.85]], r[0, at[0.85]], f1[0, at[0.85]]) == pytest.approx((1.0, 1 / 3, 2 * 1 / (1 + 3)))
    assert (p[0, at[0.05]], r[0, at[0.05]], f1[0, at[0.05]]) == pytest.approx((3 / 4, 1.0, 2 * 3 / (4 + 3)))
    assert math.isnan(p[0, at[0.95]]) and r[0, at[0.95]] == 0 and f1[0, at[0.95]] == 0  # no detection left
    # class b: 0.7 TP, 0.3 FP; a score counts at a threshold equal to it
    assert (p[1, 300], r[1, 300], f1[1, 300]) == pytest.approx((1 / 2, 1.0, 2 / 3))
    assert (p[1, 301], r[1, 301], f1[1, 301]) == pytest.approx((1.0, 1.0, 1.0))
    # mean F1: (2/3 + 1) / 2 on (0.3, 0.6], the highest; the table reads P and R at its lowest confidence
    assert curves.best_confidence == pytest.approx(0.301)
    assert curves.mean_f1()[curves.best_index] == pytest.approx(5 / 6)
    # PR curve (COCO-interpolated, IoU 0.5) of class a: precision 1 up to recall 1/3 (34 recall points), then 3/4
    assert curves.ap50[0] == pytest.approx((34 + 67 * 0.75) / 101)
    assert curves.pr[0, [0, 33, 34, 100]] == pytest.approx([1.0, 1.0, 0.75, 0.75])


def _pycocotools_matches(coco_eval, cat_ids):
    """The reference: each class' (scores, TP) at IoU 0.50, area all, from pycocotools' ``evalImgs``."""
    p = coco_eval.params
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    out = []
    for cat_id in cat_ids:
        start = (list(p.catIds).index(cat_id) * n_area + p.areaRngLbl.index("all")) * n_img
        entries = [e for e in coco_eval.evalImgs[start:start + n_img] if e is not None]
        scores = np.concatenate([np.asarray(e["dtScores"], dtype=float) for e in entries] or [np.zeros(0)])
        tp = np.concatenate([np.asarray(e["dtMatches"])[0].reshape(-1) > 0 for e in entries] or [np.zeros(0, bool)])
        ign = np.concatenate([np.asarray(e["dtIgnore"])[0].reshape(-1) > 0 for e in entries] or [np.zeros(0, bool)])
        n_gt = sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries)
        out.append((scores[~ign], tp[~ign], n_gt))
    return out


def test_matches_equal_pycocotools_on_random_scenes_with_crowds():
    """Our matcher (any COCOeval backend) against pycocotools' own per-image matches: 40 images, 3 classes,
    overlapping boxes, crowd regions, tied scores, more than maxDets detections of one class in one image."""
    from pycocotools.cocoeval import COCOeval

    from detcli.evaluation.curves import coco_matches

    rng = np.random.default_rng(3)
    images, anns, results = [], [], {}
    for i in range(1, 41):
        images.append({"id": i, "file_name": f"{i}.jpg", "width": 200, "height": 200})
        for _ in range(int(rng.integers(0, 7))):
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(4, 60), rng.uniform(4, 60)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(rng.integers(1, 4)),
                         "bbox": [x, y, w, h], "area": w * h, "iscrowd": int(rng.random() < 0.15)})
        gt = [a for a in anns if a["image_id"] == i]
        dets = []
        for a in gt:  # jittered copies of the GT, some with the wrong class
            for _ in range(int(rng.integers(0, 3))):
                x, y, w, h = np.asarray(a["bbox"]) + rng.normal(0, 4, 4)
                cat = a["category_id"] if rng.random() < 0.8 else int(rng.integers(1, 4))
                dets.append({"image_id": i, "category_id": cat, "bbox": [x, y, abs(w) + 1, abs(h) + 1],
                             "score": float(np.round(rng.uniform(0, 1), 2))})
        n_random = 110 if i == 7 else int(rng.integers(0, 5))
        for _ in range(n_random):
            x, y, w, h = rng.uniform(0, 150), rng.uniform(0, 150), rng.uniform(4, 60), rng.uniform(4, 60)
            dets.append({"image_id": i, "category_id": 2 if i == 7 else int(rng.integers(1, 4)),
                         "bbox": [x, y, w, h], "score": float(np.round(rng.uniform(0, 1), 2))})
        results[i] = dets
    coco = COCO()
    coco.dataset = {"images": images, "annotations": anns,
                    "categories": [{"id": c, "name": str(c)} for c in (1, 2, 3)]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        flat = [dict(r) for i in sorted(results) for r in results[i]]
        e = COCOeval(coco, coco.loadRes(flat), iouType="bbox")
        e.evaluate()
    ours = coco_matches(coco, results, [3, 1, 2])
    for m, (scores, tp, n_gt) in zip(ours, _pycocotools_matches(e, [3, 1, 2])):
        assert m.num_gt == n_gt
        # the same multiset of (score, TP): the order within an image may differ on tied scores
        assert sorted(zip(m.scores.tolist(), m.true_positive.tolist())) == sorted(zip(scores.tolist(), tp.tolist()))
    assert sum(len(m.scores) for m in ours) > 200 and sum(m.true_positive.sum() for m in ours) > 30


def test_per_class_table_gains_precision_and_recall():
    result = _evaluate()
    a, b = result.per_class
    assert (a.precision, a.recall, b.precision, b.recall) == pytest.approx((2 / 3, 2 / 3, 1.0, 1.0))
    assert a.ap50 == pytest.approx(result.curves.ap50[0])  # the curve's area is the table's AP50
    assert mean_precision_recall(result) == pytest.approx((5 / 6, 5 / 6))
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(per_class_table(result))
    text = console.file.getvalue()
    assert "P, R at IoU 0.50 and conf 0.301, the max mean F1" in " ".join(text.split())  # the title wraps
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]]
            for line in text.splitlines() if line.count("│") >= 8}
    header = next(line for line in text.splitlines() if "┃" in line)
    columns = [c.strip() for c in header.split("┃")[1:-1]]
    assert columns == ["class", "instances", "P", "R", "AP50-95", "AP50", "AR100"]
    assert rows["a"][:3] == ["3", "0.667", "0.667"] and rows["b"][:3] == ["1", "1.000", "1.000"]
    assert rows["all"][:3] == ["4", "0.833", "0.833"]
    d = result.to_dict()
    assert d["PR_confidence"] == pytest.approx(0.301)
    assert d["per_class"][0]["P"] == pytest.approx(2 / 3) and d["per_class"][1]["R"] == 1.0
    json.dumps(d)  # plain Python types


def test_confusion_matrix_by_hand():
    """At conf 0.25 (the 0.1 detection left out): image 1: a↔a, a missed, a false alarm; image 2: a↔a, b↔b,
    the 0.3 "b" on the "a" box loses that box to the exact "a" detection: a false alarm."""
    m = _evaluate().confusion
    assert m.conf == 0.25 and m.iou_thr == 0.45 and m.class_names == ["a", "b"]
    # rows predicted (a, b, background), columns true
    assert m.counts.tolist() == [[2, 0, 1], [0, 1, 1], [1, 0, 0]]
    assert m.normalized()[:, 0] == pytest.approx([2 / 3, 0, 1 / 3])  # per true class
    assert m.to_dict()["labels"] == ["a", "b", "background"]


def test_confusion_counts_a_wrong_class_on_the_right_box():
    counts = np.zeros((3, 3), dtype=np.int64)
    gt = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], dtype=float)
    det = np.array([[0, 0, 10, 10], [50, 50, 60, 61], [80, 80, 90, 90]], dtype=float)
    add_image(counts, gt, np.array([0, 1]), det, np.array([1, 1, 0]), np.array([0.9, 0.2, 0.5]), 0.25, 0.45)
    # "b" on the "a" box: [b, a]; the 0.2 detection is below conf: "b" missed; the 0.5 "a" on nothing: [a, bg]
    assert counts.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]


def test_greedy_pairs_take_the_highest_iou_first_one_to_one():
    # GT 0 overlaps detections 0 (.9) and 1 (.8), GT 1 only detection 1 (.7): greedy keeps (0,0) and (1,1)
    iou = torch.tensor([[0.9, 0.8], [0.0, 0.7]])
    g, d = greedy_pairs(iou, 0.45)
    assert sorted(zip(g.tolist(), d.tolist())) == [(0, 0), (1, 1)]
    g, d = greedy_pairs(torch.tensor([[0.9, 0.8], [0.85, 0.3]]), 0.45)  # GT 1's best detection is taken
    assert sorted(zip(g.tolist(), d.tolist())) == [(0, 0)]
    assert len(greedy_pairs(torch.zeros(2, 0), 0.45)[0]) == 0


def _is_image(path: Path) -> bool:
    img = cv2.imread(str(path))
    return img is not None and img.shape[0] > 50 and img.shape[1] > 50


def test_validation_plots_are_written(tmp_path):
    result = _evaluate()
    written = save_validation_plots(result.curves, result.confusion, tmp_path)
    names = {p.name for p in written}
    assert names == {"PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png",
                     "confusion_matrix.json"}
    for name in names - {"confusion_matrix.json"}:
        assert _is_image(tmp_path / name), name
    assert json.loads((tmp_path / "confusion_matrix.json").read_text())["counts"] == [[2, 0, 1], [0, 1, 1], [1, 0, 0]]


def test_results_png_from_results_csv(tmp_path):
    csv = ResultsCSV(tmp_path / "results.csv")
    assert plot_results(*csv.read(), tmp_path / "results.png") is None  # no rows yet: nothing drawn
    for epoch, ap in ((1, None), (2, 0.25), (3, float("nan"))):  # validation only in epoch 2
        csv.append({"epoch": epoch, "time": epoch * 2.0, "train/loss_qfl": 1.0 / epoch, "train/loss_bbox": 0.5,
                    "lr/pg0": 0.001, "metrics/AP50-95": ap, "metrics/AP50": ap, "metrics/APs": ap,
                    "metrics/APm": ap, "metrics/AR1": ap})
    columns, rows = csv.read()
    titles = [t for t, _ in results_panels(columns)]
    assert titles == ["loss_qfl", "loss_bbox", "lr/pg0", "AP50-95", "AP50", "APs APm APl"]  # AR1 left out
    assert _is_image(plot_results(columns, rows, tmp_path / "results.png"))


def test_a_failing_plot_warns_once_and_training_goes_on(tmp_path):
    from detcli.plots.training import TrainingPlots

    class Broken:
        def read(self):
            raise OSError("disk gone")

    warnings: list[str] = []
    reporter = type("R", (), {"warn": lambda self, msg: warnings.append(msg)})()
    plots = TrainingPlots(tmp_path, None, ["a"], reporter)
    assert plots.results(Broken()) is None and plots.results(Broken()) is None  # no exception reaches the loop
    assert plots.labels(object()) is None  # a dataset without annotations to read: skipped, not a failure
    assert warnings == ["could not draw results.png (OSError: disk gone); training goes on "
                        "(further plot failures of this run are not reported)"]
    assert plots.failed == 2 and not list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- label statistics
def _folder_with_duplicates(root: Path) -> Path:
    """A COCO folder: 4 train images (b.jpg a byte copy of a.jpg, c.jpg without labels, a.jpg with one box
    twice), 2 val images (v2.jpg a copy of a.jpg)."""
    ensure_demo_dataset(root / "demo", num_train=4, num_val=2)
    demo = root / "demo"
    out = root / "dup"
    (out / "annotations").mkdir(parents=True)
    for split in ("train", "val"):
        (out / split).mkdir()
    src = sorted((demo / "train").iterdir())
    for name, s in zip(("a.jpg", "c.jpg", "d.jpg"), src):
        shutil.copy(s, out / "train" / name)
    shutil.copy(out / "train" / "a.jpg", out / "train" / "b.jpg")
    shutil.copy(sorted((demo / "val").iterdir())[0], out / "val" / "v1.jpg")
    shutil.copy(out / "train" / "a.jpg", out / "val" / "v2.jpg")
    cats = [{"id": 1, "name": "circle"}, {"id": 2, "name": "square"}]

    def ann(i, img, cat, box):
        return {"id": i, "image_id": img, "category_id": cat, "bbox": box, "area": box[2] * box[3], "iscrowd": 0}

    h, w = cv2.imread(str(out / "train" / "a.jpg")).shape[:2]
    train = {"images": [{"id": i + 1, "file_name": n, "width": w, "height": h}
                        for i, n in enumerate(("a.jpg", "b.jpg", "c.jpg", "d.jpg"))],
             "categories": cats,
             "annotations": [ann(1, 1, 1, [10, 10, 20, 20]), ann(2, 1, 1, [10, 10, 20, 20]),
                             ann(3, 1, 2, [10, 10, 20, 20]), ann(4, 2, 2, [5, 5, 40, 10]), ann(5, 4, 1, [1, 1, 8, 30])]}
    val = {"images": [{"id": i + 1, "file_name": n, "width": w, "height": h}
                      for i, n in enumerate(("v1.jpg", "v2.jpg"))],
           "categories": cats, "annotations": [ann(1, 1, 1, [0, 0, 30, 30]), ann(2, 2, 2, [3, 3, 12, 12])]}
    (out / "annotations" / "instances_train.json").write_text(json.dumps(train))
    (out / "annotations" / "instances_val.json").write_text(json.dumps(val))
    return out


def test_label_stats_find_empty_images_and_duplicate_boxes(tmp_path):
    from detcli.data.coco import CocoDetection
    from detcli.data.label_stats import SIZE_EDGES, class_histogram, duplicate_files, label_stats
    from detcli.plots.labels import plot_labels

    root = _folder_with_duplicates(tmp_path)
    ds = CocoDetection(root / "annotations" / "instances_train.json", root / "train", None, filter_empty=False)
    s = label_stats(ds)
    assert s.per_class().tolist() == [3, 2] and s.images_without_labels() == ["c.jpg"]
    # the "square" box at the same place is another class: not a duplicate
    assert s.duplicate_boxes() == [{"file_name": "a.jpg", "class": "circle", "box": [10.0, 10.0, 30.0, 30.0],
                                    "copies": 2}]
    assert s.sqrt_area().tolist() == pytest.approx([20, 20, 20, math.sqrt(400), math.sqrt(240)])
    assert s.aspect()[-1] == pytest.approx(8 / 30)
    hist = class_histogram(s.sqrt_area(), s.labels, 2, SIZE_EDGES)
    assert hist[0].tolist() == [0, 1, 2, 0, 0, 0, 0, 0, 0] and hist[1].tolist() == [0, 0, 2, 0, 0, 0, 0, 0, 0]
    groups, unreadable = duplicate_files([root / "train" / n for n in ("a.jpg", "c.jpg", "b.jpg")]
                                         + [root / "val" / "v2.jpg", root / "val" / "gone.jpg"])
    assert groups == [[0, 2, 3]] and unreadable == [(4, "No such file or directory")]
    assert _is_image(plot_labels(s, tmp_path / "labels.jpg"))


# ----------------------------------------------------------------------------------- through the CLI
def test_demo_run_and_eval_leave_their_plots(tmp_path: Path, tiny_data: Path):
    train = run_cli_forked(
        "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--epochs", "1", "--batch", "2",
        "--imgsz", "64", "--workers", "0", cwd=tmp_path,
    )
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    run = tmp_path / "runs" / "train" / "train"
    for name in ("results.png", "labels.jpg", "train_batch0.jpg", "train_batch1.jpg", "train_batch2.jpg",
                 "PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        assert _is_image(run / name), name
    assert not (run / "train_batch3.jpg").exists()  # the first three batches only
    counts = json.loads((run / "confusion_matrix.json").read_text())
    assert counts["labels"][-1] == "background" and len(counts["counts"]) == 6
    assert sum(map(sum, counts["counts"])) >= 4  # every val box is somewhere: matched or missed
    assert "could not draw" not in train.stdout
    assert re.search(r"per class, epoch 1 \(EMA weights; P, R at IoU 0\.50, conf [\d.]+ \(max mean F1\)\)",
                     train.stdout)
    assert "validation plots from the last validation, epoch 1" in train.stdout

    ev = run_cli_forked("eval", "--weights", str(run / "weights" / "last.pt"), "--workers", "0",
                        "--conf", "0.001", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    out = tmp_path / "runs" / "eval" / "eval"
    for name in ("PR_curve.png", "F1_curve.png", "P_curve.png", "R_curve.png", "confusion_matrix.png"):
        assert _is_image(out / name), name
    assert f"Results saved to {Path('runs/eval/eval')}" in ev.stdout and "confusion_matrix.png" in ev.stdout
    assert re.search(r"class\s+┃ instances ┃\s+P ┃\s+R ┃ AP50-95 ┃", ev.stdout), ev.stdout[-3000:]
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"P", "R"} <= set(metrics["per_class"][0]) and metrics["confusion_conf"] == 0.25


def test_check_on_the_demo_data(tmp_path: Path, tiny_data: Path):
    out = run_cli_forked("train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--check", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folder = tmp_path / "runs" / "check" / "check"
    assert _is_image(folder / "labels.jpg") and _is_image(folder / "labels_val.jpg")
    assert not (tmp_path / "runs" / "train").exists()  # nothing trained
    text = out.stdout
    assert "train: box size per class, sqrt(area) in px" in text and "train: box aspect per class" in text
    assert "no duplicate images among 12 file(s)" in text and "train: no duplicate boxes" in text
    report = json.loads((folder / "report.json").read_text())
    assert report["splits"]["train"]["images"] == 8 and report["duplicate_images"] == []
    assert sum(report["splits"]["train"]["instances"].values()) == report["splits"]["train"]["boxes"] > 0
    assert "Nothing was trained" in text


def test_check_reports_duplicates_and_images_without_labels(tmp_path: Path):
    root = _folder_with_duplicates(tmp_path / "data")
    out = run_cli_forked("train", "-p", "nanodet-plus-m", "--data", str(root), "--check", "--name", "dup",
                         cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())  # plain output wraps long lines
    assert "train: 1 of 4 image(s) without labels (kept: they train as background): c.jpg" in text
    assert ("train: 1 duplicate box(es) (same image, class and coordinates): "
            "a.jpg circle [10.0, 10.0, 30.0, 30.0] x2") in text
    assert ("1 group(s) of identical image files (2 duplicate(s); 1 shared between splits): "
            "train: a.jpg = train: b.jpg = val: v2.jpg") in text
    report = json.loads((tmp_path / "runs" / "check" / "dup" / "report.json").read_text())
    assert report["duplicate_images"] == [["train: a.jpg", "train: b.jpg", "val: v2.jpg"]]
    assert report["splits"]["train"]["images_without_labels"] == ["c.jpg"]
    # data that cannot be read is the one failure
    bad = run_cli_forked("train", "-p", "nanodet-plus-m", "--data", str(tmp_path / "nowhere"), "--check",
                         cwd=tmp_path)
    assert bad.returncode == 2 and "nowhere" in bad.stderr and "Traceback" not in bad.stderr
