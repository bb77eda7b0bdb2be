"""``input.size_divisor`` reaches RetinaNet's valid anchors: batches are padded to it (``collate``), and an
image's valid anchors are those of its own ``img_shape`` rounded up to the same divisor (MMDetection's
``pad_shape``). Before the fix the model kept its own 32, so ``--set input.size_divisor=64`` padded batches to 64
but marked anchors valid against 32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.config.loader import load_preset
from detcli.data.collate import collate
from detcli.geometry.anchors import padded_shape
from detcli.geometry.iou import pairwise_iou
from detcli.models import build_model
from detcli.structures import ImageMeta

H, W = 100, 150  # not a multiple of 64: padded to (128, 192) by 64, to (128, 160) by 32


@pytest.fixture(scope="module")
def model_and_batch():
    preset, _ = load_preset("retinanet-r18-fpn", ["input.size_divisor=64", "model.fpn_channels=8",
                                                  "model.stacked_convs=0"])
    torch.manual_seed(0)
    model = build_model(preset, num_classes=2, pretrained=False)
    gts = np.array([[120.0, 30.0, 150.0, 90.0], [10.0, 10.0, 60.0, 70.0]], dtype=np.float32)  # one at the right edge
    sample = {"img": torch.zeros(3, H, W), "boxes": gts, "labels": np.array([0, 1]),
              "meta": ImageMeta(0, "a.jpg", (H, W), (H, W), np.eye(3).tolist())}
    return model, collate([sample], size_divisor=preset.input.size_divisor)


def test_the_model_takes_the_presets_size_divisor(model_and_batch):
    model, batch = model_and_batch
    assert model.size_divisor == 64
    assert tuple(batch.images.shape[-2:]) == padded_shape((H, W), 64) == (128, 192)


def test_valid_anchors_and_assignment_follow_padding_to_64(model_and_batch):
    model, batch = model_and_batch
    priors = model.priors(tuple(batch.images.shape[-2:]))
    valid = model.anchor_generator.valid_flags(priors.level_sizes, [(128, 192)])[0]  # what padding to 64 implies
    narrower = model.anchor_generator.valid_flags(priors.level_sizes, [(128, 160)])[0]  # padding to 32
    assert bool((valid & ~narrower).any())  # the case tells the two apart

    got = model.assign(None, priors, batch.targets, batch.metas)
    want = model.assigner.assign(priors.boxes[valid], batch.targets[0].boxes, batch.targets[0].labels)
    assert torch.equal(got.gt_inds[0][valid], want.gt_inds)
    assert bool((got.gt_inds[0][~valid] == -1).all())  # beyond the image's padded area: ignored
    assert bool((got.gt_inds[0][valid & ~narrower] >= 0).any())  # used, where padding to 32 would ignore them


def test_prior_fit_uses_the_same_padded_area(model_and_batch):
    """The anchor-fit check (``inspect-anchors``) measures each GT's best IoU over the anchors assignment uses."""
    model, batch = model_and_batch
    priors = model.priors(tuple(batch.images.shape[-2:]))
    gts = batch.targets[0].boxes
    fit = model.prior_fit(priors, gts, batch.metas[0])
    valid = model.anchor_generator.valid_flags(priors.level_sizes, [(128, 192)])[0]
    torch.testing.assert_close(fit.measure, pairwise_iou(gts, priors.boxes[valid]).max(dim=1).values)
