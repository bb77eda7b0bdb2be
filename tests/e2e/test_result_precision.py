"""``predictions.json`` of ``predict`` and ``eval`` holds the model's float32 numbers, nothing rounded.

Every corner and score written is its float32 value exactly (read back as float64, it compares equal), w and h are
the float64 differences of the float32 corners (so ``x + w`` gives back x2), and COCOeval reads the file and scores
it as ``eval`` did.
"""
from __future__ import annotations

import contextlib
import io
import json

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from detcli.evaluation.coco_results import coco_boxes_scores
from detcli.evaluation.evaluator import CocoEvaluator
from detcli.fileio import atomic_write_json
from detcli.inference.loop import Frame
from detcli.inference.writer import PredictionWriter
from detcli.structures import Detections
from tests.support.synthetic_coco import synthetic_coco

# the MMDetection box and scores that 2 / 5 decimals change; a box from ~0 and one far from the origin
BOXES = [[7.75, 382.94, 22.25, 450.70], [0.1, 1e-3, 3.3333333, 299.99997], [1234.5678, 0.0, 1333.0, 799.99]]
SCORES = [0.123456789, 0.3000001, 0.99999]


def det(boxes=BOXES, scores=SCORES, dtype=torch.float32) -> Detections:
    return Detections(torch.tensor(boxes, dtype=dtype), torch.tensor(scores, dtype=dtype),
                      torch.zeros(len(scores), dtype=torch.int64))


def assert_float32_exact(xywh: list[list[float]], scores: list[float]) -> None:
    """Corners and scores are the float32 values of BOXES / SCORES; x + w, y + h give back x2, y2 exactly."""
    b32, s32 = np.asarray(BOXES, np.float32), np.asarray(SCORES, np.float32)
    for (x, y, w, h), (x1, y1, x2, y2) in zip(xywh, b32.tolist()):
        assert (x, y, x + w, y + h) == (x1, y1, x2, y2)
    assert scores == s32.tolist() and scores != SCORES  # the float32 values, not the decimal inputs


def test_coco_numbers_are_the_float32_values():
    xywh, scores = coco_boxes_scores(det())
    assert_float32_exact(xywh, scores)
    assert coco_boxes_scores(det(dtype=torch.float64)) == (xywh, scores)  # taken at float32, the model's precision
    assert coco_boxes_scores(Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))) == ([], [])


def test_predictions_json_keeps_float32_precision(tmp_path):
    with PredictionWriter(tmp_path, ["thing"], save_images=False) as writer:
        writer.write(Frame(np.zeros((800, 1333, 3), np.uint8), "a.jpg", 0), det())
    records = json.loads((tmp_path / "predictions.json").read_text())
    assert_float32_exact([r["bbox"] for r in records], [r["score"] for r in records])


def test_eval_results_keep_float32_precision():
    gt = _coco({"images": [{"id": 1, "width": 1333, "height": 800, "file_name": "a.jpg"}],
                "categories": [{"id": 1, "name": "thing"}], "annotations": []})
    evaluator = CocoEvaluator(gt, [1], ["thing"])
    evaluator.add(1, det())
    results = evaluator.results_json()
    assert_float32_exact([r["bbox"] for r in results], [r["score"] for r in results])


def test_cocoeval_reads_the_file_and_scores_it_alike(tmp_path):
    """Detections off the 2-decimal grid (float32 values) written as ``eval`` writes them: pycocotools reads the file
    and gives exactly the stats ``CocoEvaluator`` reported."""
    dataset, results = synthetic_coco(40, seed=3)
    gt = _coco(dataset)
    names = [c["name"] for c in dataset["categories"]]
    evaluator = CocoEvaluator(gt, [c["id"] for c in dataset["categories"]], names)
    rng = np.random.default_rng(0)
    by_image: dict[int, list[dict]] = {img["id"]: [] for img in dataset["images"]}
    for r in results:
        by_image[r["image_id"]].append(r)
    label_of = {c["id"]: k for k, c in enumerate(dataset["categories"])}
    for image_id, rs in by_image.items():
        xywh = np.asarray([r["bbox"] for r in rs], np.float64).reshape(-1, 4) + rng.uniform(0, 1e-2, (len(rs), 4))
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        scores = np.asarray([r["score"] for r in rs], np.float64) * (1 - 1e-6 * rng.random(len(rs)))
        evaluator.add(image_id, Detections(torch.tensor(boxes, dtype=torch.float32),
                                           torch.tensor(scores, dtype=torch.float32),
                                           torch.tensor([label_of[r["category_id"]] for r in rs], dtype=torch.int64)))
    result = evaluator.evaluate()
    path = atomic_write_json(tmp_path / "predictions.json", evaluator.results_json(), indent=None, allow_nan=False)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_eval = COCOeval(gt, gt.loadRes(str(path)), "bbox")
        coco_eval.params.imgIds = sorted(gt.getImgIds())
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    assert result.raw_stats[0] > 0.1  # a real score, not an empty evaluation
    assert [float(s) for s in coco_eval.stats] == pytest.approx(result.raw_stats, abs=1e-12)


def _coco(dataset: dict) -> COCO:
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    return gt
