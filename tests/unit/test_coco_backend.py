"""COCO evaluation backends: faster-coco-eval gives pycocotools' numbers; the choice and its errors."""
from __future__ import annotations

import contextlib
import copy
import io
import math

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO

from detcli.errors import DetcliError
from detcli.evaluation import coco_backend
from detcli.evaluation.coco_backend import BACKENDS, ENV, FASTER, PYCOCOTOOLS, backend_name, bbox_cocoeval
from detcli.evaluation.evaluator import CocoEvaluator
from detcli.structures import Detections
from tests.support.synthetic_coco import CATEGORIES, synthetic_coco

needs_faster = pytest.mark.skipif(not coco_backend.faster_installed(), reason="faster-coco-eval is not installed")


def _gt(dataset: dict) -> COCO:
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _run(backend: str, dataset: dict, results: list[dict]):
    """evaluate/accumulate/summarize of one backend over every image and category."""
    gt = _gt(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        ev = bbox_cocoeval(gt, copy.deepcopy(results), backend)
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.params.catIds = list(CATEGORIES)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


@pytest.fixture(scope="module")
def synthetic() -> tuple[dict, list[dict]]:
    dataset, results = synthetic_coco(300, seed=3)
    areas = np.array([a["area"] for a in dataset["annotations"]])
    # the set reaches what it claims to: every area range, crowd boxes, empty images, >100 detections per image
    assert (areas < 32 ** 2).any() and ((areas >= 32 ** 2) & (areas < 96 ** 2)).any() and (areas >= 96 ** 2).any()
    assert any(a["iscrowd"] for a in dataset["annotations"])
    assert len({a["image_id"] for a in dataset["annotations"]}) < len(dataset["images"])
    per_image = np.bincount([r["image_id"] for r in results])
    assert per_image.max() > 100 and len(results) > 3000
    return dataset, results


@needs_faster
def test_faster_coco_eval_gives_the_same_stats_and_arrays(synthetic):
    dataset, results = synthetic
    slow, fast = _run(PYCOCOTOOLS, dataset, results), _run(FASTER, dataset, results)
    assert type(fast).__module__.startswith("faster_coco_eval") and type(slow).__module__.startswith("pycocotools")
    slow_stats, fast_stats = np.asarray(slow.stats), np.asarray(fast.stats)
    assert slow_stats.shape == fast_stats.shape == (12,)
    assert slow_stats.tolist() == fast_stats.tolist()  # bit for bit
    assert 0.05 < slow_stats[0] < 0.9 and (slow_stats[3:6] > 0).all()  # a real score in every area range
    p_slow, p_fast = slow.eval["precision"], np.asarray(fast.eval["precision"])
    assert p_slow.shape == p_fast.shape == (10, 101, len(CATEGORIES), 4, 3)  # [T, R, K, A, M]
    assert np.array_equal(p_slow == -1, p_fast == -1)  # the same classes without ground truth
    np.testing.assert_allclose(p_fast, p_slow, rtol=0, atol=1e-15)  # pycocotools' 1 − 2⁻⁵² vs 1.0
    assert np.array_equal(slow.eval["recall"], np.asarray(fast.eval["recall"]))  # [T, K, A, M]
    assert np.array_equal(slow.eval["scores"], np.asarray(fast.eval["scores"]))
    k8, k13, k21 = (CATEGORIES.index(c) for c in (8, 13, 21))
    assert (p_slow[:, :, k8] == 0).all()  # ground truth, never detected: AP 0
    assert (p_slow[:, :, [k13, k21]] == -1).all()  # no ground truth: -1 (left out of the means)


def _evaluator_result(monkeypatch, backend: str, dataset: dict, results: list[dict]):
    """The CocoEvaluator's EvalResult with ``backend`` chosen through the environment."""
    monkeypatch.setenv(ENV, backend)
    cat_ids = [1, 2, 3, 5, 8, 13]  # class index → category; 21 is not a class of this model
    ev = CocoEvaluator(_gt(dataset), cat_ids, [f"class{c}" for c in cat_ids])
    by_image: dict[int, list[dict]] = {image["id"]: [] for image in dataset["images"]}
    for r in results:
        if r["category_id"] in cat_ids:
            by_image[r["image_id"]].append(r)
    for image_id, found in by_image.items():
        xywh = torch.tensor([r["bbox"] for r in found], dtype=torch.float64).reshape(-1, 4)
        ev.add(image_id, Detections(
            boxes=torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1),
            scores=torch.tensor([r["score"] for r in found], dtype=torch.float64),
            labels=torch.tensor([cat_ids.index(r["category_id"]) for r in found], dtype=torch.int64),
        ))
    return ev.evaluate()


@needs_faster
def test_evaluator_reports_the_same_numbers_with_either_backend(monkeypatch, synthetic):
    dataset, results = synthetic
    slow = _evaluator_result(monkeypatch, PYCOCOTOOLS, dataset, results)
    fast = _evaluator_result(monkeypatch, FASTER, dataset, results)
    assert fast.raw_stats == slow.raw_stats and fast.num_detections == slow.num_detections > 3000
    assert "by faster-coco-eval" in fast.log and "by pycocotools" in slow.log
    assert "Average Precision" in fast.log  # its summary is captured like pycocotools'
    assert len(fast.per_class) == len(slow.per_class) == 6
    for a, b in zip(slow.per_class, fast.per_class):
        assert (a.name, a.category_id, a.instances) == (b.name, b.category_id, b.instances)
        for x, y in ((a.ap, b.ap), (a.ap50, b.ap50), (a.ar100, b.ar100)):
            assert (math.isnan(x) and math.isnan(y)) or x == pytest.approx(y, rel=0, abs=1e-12)
    assert math.isnan(slow.per_class[5].ap) and slow.per_class[4].ap == 0.0  # class13: no GT; class8: missed


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_model_without_detections_scores_zero(monkeypatch, backend):
    if backend == FASTER and not coco_backend.faster_installed():
        pytest.skip("faster-coco-eval is not installed")
    dataset, _ = synthetic_coco(20, seed=1)
    result = _evaluator_result(monkeypatch, backend, dataset, [])
    assert result.num_detections == 0
    assert result.stats["AP50-95"] == 0.0 and result.stats["AR100"] == 0.0
    assert [c.ap for c in result.per_class][:5] == [0.0] * 5


def test_backend_choice(monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    assert backend_name() == (FASTER if coco_backend.faster_installed() else PYCOCOTOOLS)
    assert backend_name("PYCOCOTOOLS") == PYCOCOTOOLS
    if coco_backend.faster_installed():
        assert backend_name("faster_coco_eval") == FASTER  # the import name works too
    monkeypatch.setattr(coco_backend, "faster_installed", lambda: False)
    assert backend_name() == PYCOCOTOOLS  # the fallback
    with pytest.raises(DetcliError, match="faster-coco-eval is not installed"):
        backend_name(FASTER)
    monkeypatch.setenv(ENV, "cocoapi")
    with pytest.raises(DetcliError, match=f"{ENV} 'cocoapi'.*one of faster-coco-eval, pycocotools"):
        backend_name()
    monkeypatch.setenv(ENV, "pycocotools")
    assert backend_name() == PYCOCOTOOLS
