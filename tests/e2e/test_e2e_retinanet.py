"""RetinaNet, from an image file to the final detections and through one training step, against MMDetection 3.3.0.

The fixtures come from ``benchmarks/fixtures/make_e2e_retinanet.py`` (official ``init_detector`` + ``inference_detector``,
and the official ``model.loss`` of one step); no official code runs here. The golden weights are written as an
MMEngine checkpoint and loaded through ``detcli predict --weights``; the training step loads them into detcli's
model directly (detcli's parameter names are MMDetection's state-dict keys, so no renaming).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from detcli.config.loader import load_preset
from detcli.config.schema import RetinaNetConfig
from detcli.data.transforms.resize import KeepRatioResizeTransform
from detcli.models import build_model
from detcli.models.detectors.retinanet import RetinaNet
from detcli.structures import Detections, ImageMeta, Target
from tests.support.cli_subprocess import run_cli_forked
from tests.golden.end_to_end import (GOLDEN, detcli_detections, e2e_fixture, match_detections, official_checkpoint,
                               official_detections, predict_args)
from tests.golden.train_step import grad_checksums, grad_problems, loss_problems, train_step_fixture
from tests.golden.weights import fixture_state_dict, golden_input

# r18 in the default run; r50 (the same pipeline, a deeper backbone: ~4x the time) with the slow tests
PRESETS = ["retinanet-r18-fpn", pytest.param("retinanet-r50-fpn", marks=pytest.mark.slow)]




@pytest.mark.parametrize("preset", PRESETS)
def test_predict_matches_inference_detector(preset, tmp_path):
    """``detcli predict`` of both photographs (451 × 300 enlarged to 1203 × 800 and padded to 1216 × 800; 1000 × 872
    shrunk to 917 × 800) gives MMDetection's final detections in original pixels: same count, 1e-3 px, 1e-5 score."""
    doc = e2e_fixture(preset)
    checkpoint = official_checkpoint(doc, tmp_path)
    res = run_cli_forked(*predict_args(doc, checkpoint, tmp_path / "runs"), cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    ours = detcli_detections(tmp_path / "runs" / "run" / "predictions.json")
    official = official_detections(doc)
    assert sorted(ours) == sorted(official)
    problems = {name: match_detections(official[name], ours[name]) for name in official}
    assert not any(problems.values()), problems


@pytest.mark.parametrize("width, height", [(451, 300), (1000, 872), (640, 427), (333, 1000), (1333, 800)])
def test_to_original_is_mmdet_rescale(width, height):
    """MMDetection maps boxes back by clipping to the resized image (``img_shape``) and dividing by
    ``scale_factor`` = (new_w / w, new_h / h) in float32, with no second clip; detcli's inverse warp of the
    realised factors, clipped to the original image, gives the same within 1e-3 px (boxes over the whole
    resized image and beyond it, already clipped there as :meth:`Detector.detections` does)."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    out = KeepRatioResizeTransform(train=False)(img, np.zeros((0, 4), np.float32), np.zeros(0, np.int64))
    new_h, new_w = out["img_shape"]
    meta = ImageMeta(1, "x.jpg", (height, width), (new_h, new_w), out["warp_matrix"].tolist())
    g = torch.Generator().manual_seed(0)
    xy = torch.rand(500, 2, generator=g) * torch.tensor([new_w * 1.1, new_h * 1.1]) - 20
    boxes = torch.cat([xy, xy + torch.rand(500, 2, generator=g) * 400], dim=1)
    boxes = torch.cat([boxes, torch.tensor([[0.0, 0.0, new_w, new_h]])])
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, new_w)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, new_h)
    det = Detections(boxes, torch.rand(len(boxes), generator=g), torch.zeros(len(boxes), dtype=torch.long))
    scale = torch.tensor([new_w / width, new_h / height] * 2, dtype=torch.float32)
    mmdet = boxes * (1 / scale)  # scale_boxes(bboxes, [1 / s for s in scale_factor])
    ours = RetinaNet.from_config(RetinaNetConfig(type="retinanet", depth=18), 1).to_original(det, meta)
    assert len(ours.boxes) == len(boxes)
    assert float((ours.boxes.double() - mmdet.double()).abs().max()) <= 1e-3
    assert ours.boxes[-1].tolist() == [0.0, 0.0, float(width), float(height)]


@pytest.mark.parametrize("preset", PRESETS)
def test_training_step_matches_mmdet(preset, one_thread):
    """One step of detcli's ``RetinaNet.loss`` on the official fixed batch (two images smaller than the
    (160, 224) batch, so each image's own padded shape decides its valid anchors) from the golden weights, in
    ``train()`` mode (stem and layer1 frozen, BatchNorms in eval mode: ``norm_eval`` as the official config):
    the official losses within 1e-6 relative, every gradient's checksums within 1e-4 of its Σ|g|, and no
    gradient where the official model has none."""
    doc = train_step_fixture(preset)
    model = build_model(load_preset(preset)[0], 80, pretrained=False)
    model.load_state_dict(fixture_state_dict(json.loads((GOLDEN / f"{doc['weights']}.json").read_text())), strict=True)
    model.train()
    assert not [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
    images = golden_input(doc["input_shape"], doc["input_seed"])
    targets = [Target(torch.tensor(t["boxes"], dtype=torch.float32), torch.tensor(t["labels"], dtype=torch.long))
               for t in doc["targets"]]
    metas = [ImageMeta(i, f"{i}.jpg", tuple(s), tuple(s), np.eye(3).tolist()) for i, s in enumerate(doc["img_shapes"])]
    model.zero_grad()
    losses = model.loss(images, targets, metas, doc["epoch"])
    sum(losses.values()).backward()
    problems = loss_problems(doc["losses"], {k: float(v.detach()) for k, v in losses.items()})
    problems += grad_problems(doc["grads"], grad_checksums(model.named_parameters()))
    assert not problems, problems
