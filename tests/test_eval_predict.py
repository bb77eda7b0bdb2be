"""Evaluator (COCO stats, per-class AP, results JSON) and prediction library (sources, batching, drawing, writing)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from rich.console import Console

from detcli.engine.evaluator import (
    STAT_NAMES,
    CocoEvaluator,
    merge_results,
    per_class_table,
    stats_table,
)
from detcli.errors import DetcliError
from detcli.structures import Detections

torch.set_num_threads(1)


# --------------------------------------------------------------------------- evaluator

def _gt() -> COCO:
    """3 images, categories 3 ("three") and 7 ("seven"); every box is 60x60 (area 3600 = COCO 'medium').

    image 1: cat 3 at xyxy (10,10,70,70), cat 7 at (100,100,160,160); image 2: cat 3 at (20,20,80,80);
    image 3: no ground truth at all.
    """
    coco = COCO()
    coco.dataset = {
        "images": [{"id": i, "file_name": f"{i}.jpg", "height": 200, "width": 200} for i in (1, 2, 3)],
        "categories": [{"id": 3, "name": "three"}, {"id": 7, "name": "seven"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 3, "bbox": [10, 10, 60, 60], "area": 3600, "iscrowd": 0},
            {"id": 2, "image_id": 1, "category_id": 7, "bbox": [100, 100, 60, 60], "area": 3600, "iscrowd": 0},
            {"id": 3, "image_id": 2, "category_id": 3, "bbox": [20, 20, 60, 60], "area": 3600, "iscrowd": 0},
        ],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


# Class index 0 is category 7 and index 1 is category 3: the reverse of COCOeval's sorted order.
CAT_IDS = [7, 3]
NAMES = ["seven", "three"]


def _det(boxes, scores, labels) -> Detections:
    return Detections(
        boxes=torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        scores=torch.tensor(scores, dtype=torch.float32),
        labels=torch.tensor(labels, dtype=torch.int64),
    )


def _evaluator() -> CocoEvaluator:
    return CocoEvaluator(_gt(), CAT_IDS, NAMES)


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
    assert out == [
        {"image_id": 1, "category_id": 3, "bbox": [1.0, 2.0, 2.0, 2.0], "score": 0.5},
        {"image_id": 1, "category_id": 7, "bbox": [5.0, 6.0, 4.0, 4.0], "score": 0.25},
        {"image_id": 2, "category_id": 7, "bbox": [10.12, 20.46, 20.67, 19.54], "score": 0.12346},
    ]
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
    assert rows["three"] == ["2", f"{ap_three:.3f}", "1.000", "0.700"]
    assert rows["seven"] == ["1", "1.000", "1.000", "1.000"]
    assert rows["nine"] == ["0", "-", "-", "-"]
    assert rows["all"] == ["3", f"{(ap_three + 1) / 2:.3f}", "1.000", "0.850"]

    text = _render(stats_table(r))
    for name in STAT_NAMES:
        assert f" {name} " in text
    assert "AP  IoU=0.75" in text

    d = json.loads(r.to_json())
    assert d["stats"]["AP50"] == pytest.approx(1.0) and d["stats"]["APs"] is None
    assert d["per_class"][2] == {"class": "nine", "category_id": 9, "instances": 0,
                                 "AP50-95": None, "AP50": None, "AR100": None}
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
