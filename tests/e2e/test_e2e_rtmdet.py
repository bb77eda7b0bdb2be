"""RTMDet, from an image file to the final detections and through one training step, against MMDetection 3.3.0.

The fixtures come from ``benchmarks/fixtures/make_e2e_mmdet.py`` (official ``init_detector`` + ``inference_detector``, and
the official ``model.loss`` of one step); no official code runs here. The golden weights are written as an
MMEngine checkpoint and loaded through ``detcli predict --weights``; the training step loads them into detcli's
model directly (detcli's parameter names are MMDetection's state-dict keys, shared head convs once).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detcli.config.loader import load_preset
from detcli.models import build_model
from detcli.postprocess import PostprocessConfig, postprocess
from detcli.structures import Priors
from detcli.structures import Detections, ImageMeta, Target
from tests.support.cli_subprocess import run_cli_forked
from tests.golden.end_to_end import GOLDEN, ImageDetections, detcli_detections, e2e_fixture, match_detections, official_checkpoint, \
    official_detections, predict_args
from tests.golden.train_step import grad_checksums, grad_problems, loss_problems, train_step_fixture
from tests.golden.weights import fixture_state_dict, golden_input

PRESETS = ["rtmdet-tiny", "rtmdet-s"]




@pytest.mark.parametrize("preset", PRESETS)
def test_predict_matches_inference_detector(tmp_path, preset):
    """``detcli predict --exact`` of both photographs (451 × 300 resized to 640 × 426 and padded to 640², 1000 × 872
    shrunk to 640 × 558 and padded) gives MMDetection's final detections in original pixels: same count,
    1e-3 px, 1e-5 score. The fixture's BatchNorms are calibrated on these two photos (``weights_overrides``), so
    no score saturates: 300 detections per image and preset, 300 distinct scores, no exact tie, the 300th and
    301st post-NMS scores 1.2e-5 to 1.7e-4 apart, every score dropped at a level's ``nms_pre`` cut below the
    lowest final one (the fixture's ``margins``). Boxes reaching into the padding keep
    their official extent in the original image (MMDetection divides by the scale factor without a second clip)."""
    doc = e2e_fixture(preset)
    for name, m in doc["margins"].items():  # the fixture tests the network, not the order of exact ties or cuts
        assert m["detections"] and not m["tied_pairs"] and (m["nms_pre_cut_max"] or 0) < m["min_score"], (name, m)
    checkpoint = official_checkpoint(doc, tmp_path)
    res = run_cli_forked(*predict_args(doc, checkpoint, tmp_path / "runs"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ours = detcli_detections(tmp_path / "runs" / "run" / "predictions.json")
    official = official_detections(doc)
    assert set(ours) <= set(official)
    none = ImageDetections(np.zeros((0, 4)), np.zeros(0), [])  # an image without detections has no record
    problems = {name: match_detections(official[name], ours.get(name, none)) for name in official}
    assert not any(problems.values()), problems


def test_to_original_rescales_without_clipping_to_the_original_image():
    """MMDetection's rule on a hand-made case: a box clipped at the padded 640 × 640 ``img_shape`` is divided by
    the realised scale factor (640/451, 426/300) and not clipped to the 451 × 300 image again."""
    model = build_model(load_preset("rtmdet-tiny")[0], num_classes=80, pretrained=False)
    sx, sy = 640 / 451, 426 / 300
    meta = ImageMeta(image_id=0, file_name="a.jpg", ori_shape=(300, 451), img_shape=(640, 640),
                     warp_matrix=[[sx, 0, 0], [0, sy, 0], [0, 0, 1]])
    det = Detections(boxes=torch.tensor([[11.0, 543.8, 31.6, 640.0], [-0.0, 0.0, 640.0, 426.0]]),
                     scores=torch.tensor([0.9, 0.8]), labels=torch.tensor([3, 1]))
    out = model.to_original(det, meta)
    expected = torch.tensor([[11.0 / sx, 543.8 / sy, 31.6 / sx, 640.0 / sy], [0.0, 0.0, 451.0, 300.0]])
    torch.testing.assert_close(out.boxes, expected, rtol=0, atol=1e-4)
    assert out.boxes[0, 3] > 300  # reaches below the original image, as MMDetection's [7.75, 382.9, 22.25, 450.7]
    assert out.scores.tolist() == det.scores.tolist() and out.labels.tolist() == det.labels.tolist()


@pytest.mark.parametrize("dense_topk_factor", [0.0, 1e9])  # the dense top-k (falls back on ties) / the sparse path
def test_exactly_tied_scores_survive_the_per_level_cut_as_in_mmdetection(dense_topk_factor):
    """400 priors × 2 classes of one level, 300 pairs saturated at exactly 1.0 and ``nms_pre`` 50: which 50 tied
    pairs survive is decided by MMDetection's ``filter_scores_and_topk`` (the survivors in (prior, class)
    order, ``torch.sort(descending=True)``, not stable, the first 50), not by a stable order (the first 50)."""
    n, c, k = 400, 2, 50
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(1, n, c, generator=gen) - 6
    logits.view(-1)[torch.randperm(n * c, generator=gen)[:300]] = 40.0  # sigmoid(40) == 1.0 in float32
    xy = torch.arange(n, dtype=torch.float32)[:, None] * 20  # disjoint boxes: NMS suppresses nothing
    boxes = torch.cat([xy, xy, xy + 10, xy + 10], dim=1)[None]
    level = Priors(torch.zeros(n, 4), None, torch.zeros(n, dtype=torch.long), ((20, 20),), 1)
    cfg = PostprocessConfig(score_thr=0.001, iou_thr=0.65, max_det=1000, nms_pre=k,
                            dense_topk_factor=dense_topk_factor)
    (det,) = postprocess(boxes, logits, level, cfg, scores_are_logits=True)

    scores = logits[0].sigmoid()  # the reference, in its own steps
    valid = scores > cfg.score_thr
    _, order = scores[valid].sort(descending=True)
    reference = torch.nonzero(valid)[order[:k]]
    got = torch.stack([det.boxes[:, 0] / 20, det.labels.float()], dim=1).long()
    assert sorted(map(tuple, got.tolist())) == sorted(map(tuple, reference.tolist()))
    stable_first = torch.nonzero(valid & (scores == 1.0))[:k]
    assert sorted(map(tuple, reference.tolist())) != sorted(map(tuple, stable_first.tolist()))  # the case bites


@pytest.mark.parametrize("preset", PRESETS)
def test_training_step_matches_official_loss(preset, one_thread):
    """One training step (train mode, BatchNorm batch statistics) from the golden weights on the fixed batch:
    MMDetection's ``loss_cls`` / ``loss_bbox`` within 1e-6 relative, every gradient's checksums within 1e-4 of
    its Σ|g|."""
    doc = train_step_fixture(preset)
    raw = json.loads((GOLDEN / f"{doc['weights']}.json").read_text())
    torch.manual_seed(0)
    model = build_model(load_preset(doc["preset"])[0], num_classes=raw["num_classes"], pretrained=False)
    model.load_state_dict(model.official_state_dict({"state_dict": fixture_state_dict(raw)}), strict=True)
    model.train()
    images = golden_input(doc["input_shape"], doc["input_seed"])
    h, w = doc["input_shape"][-2:]
    targets = [Target(boxes=torch.tensor(t["boxes"], dtype=torch.float32), labels=torch.tensor(t["labels"]))
               for t in doc["targets"]]
    metas = [ImageMeta(image_id=i, file_name=f"{i}.jpg", ori_shape=tuple(s), img_shape=tuple(s),
                       warp_matrix=[[1, 0, 0], [0, 1, 0], [0, 0, 1]]) for i, s in enumerate(doc["img_shapes"])]
    assert all(s == [h, w] for s in doc["img_shapes"])
    model.zero_grad()
    losses = model.loss(images, targets, metas, epoch=doc["epoch"])
    sum(losses.values()).backward()
    ours = {name: float(losses[name].detach()) for name in doc["loss_names"]}
    assert not loss_problems(doc["losses"], ours), loss_problems(doc["losses"], ours)
    problems = grad_problems(doc["grads"], grad_checksums(model.named_parameters()))
    assert not problems, problems[:5]
