"""The detector contract (``detcli.models.base``), checked on every shipped preset without naming a family.

Each preset (globbed from ``presets/``, so one added later is covered; one that differs from another only in its
input size builds the same network here and runs with ``-m slow``) is built with 3 classes and run at a
small non-square input (a multiple of 32, as the batch padding makes it): head output and priors agree,
decode inverts encode, the assignment follows the one convention, ``forward`` + ``decode`` trace and export,
``predict`` is the shared postprocess. The weights are trained-like (``golden/weights.py::trained_like_``:
the golden fixtures' recipe, BatchNorms calibrated on the input), so scores and boxes spread as a trained
detector's: a freshly initialised RTMDet-tiny head predicts one score everywhere and boxes of 1e-9 px, where
the postprocess would have nothing to decide.
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch

from detcli.assigners.assignment import Assignment
from detcli.config.loader import load_preset, presets_dir
from detcli.export.graph import DecodedGraph
from detcli.models import build_model
from detcli.models.base import Detector
from detcli.postprocess import clip_boxes, image_limits
from detcli.structures import HeadOutput, Priors
from detcli.structures import ImageMeta, Target
from tests.golden.weights import trained_like_
from tests.support.preset_cases import preset_params

torch.set_num_threads(1)

PRESETS = sorted(presets_dir().glob("*.yaml"))
C = 3
SIZE = (96, 160)


def meta(i: int, img_shape: tuple[int, int]) -> ImageMeta:
    return ImageMeta(i, f"{i}.jpg", SIZE, img_shape, np.eye(3).tolist())


def test_every_preset_is_covered():
    assert len(PRESETS) >= 6 and {p.stem for p in PRESETS} >= {"nanodet-plus-m", "retinanet-r50-fpn"}


@pytest.fixture(scope="module", params=preset_params())
def case(request):
    preset, _ = load_preset(request.param, [f"model.num_classes={C}"])
    torch.manual_seed(0)
    model = build_model(preset, None, pretrained=False)
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    trained_like_(model, images)
    with torch.no_grad():
        outputs = model(images)
    return model, images, outputs, model.priors(SIZE)


def test_head_output_rows_are_the_priors(case):
    model, _, outputs, priors = case
    assert isinstance(model, Detector) and isinstance(outputs, HeadOutput) and isinstance(priors, Priors)
    n = priors.num
    assert outputs.cls_logits.shape == (2, n, C)
    assert outputs.bbox_reg.ndim == 3 and outputs.bbox_reg.shape[:2] == (2, n)
    # priors computed without the network, from ⌈H/s⌉ × ⌈W/s⌉ maps, in level order
    assert priors.level_sizes == tuple((-(-SIZE[0] // s), -(-SIZE[1] // s)) for s in model.strides)
    assert sum(priors.level_counts) == n
    assert priors.levels.tolist() == sorted(priors.levels.tolist())
    assert priors.levels.bincount(minlength=len(model.strides)).tolist() == priors.level_counts
    strides = torch.tensor(model.strides, dtype=torch.float32)[priors.levels]
    assert torch.equal(priors.points[:, 2], strides) and torch.equal(priors.points[:, 3], strides)
    # row-major inside a level: the first prior of each level sits at the origin cell, the last at the last cell
    first = torch.tensor([0] + np.cumsum(priors.level_counts)[:-1].tolist())
    last = torch.tensor(np.cumsum(priors.level_counts).tolist()) - 1
    offset = priors.points[first, :2] / strides[first, None]
    cells = torch.tensor([[w - 1, h - 1] for h, w in priors.level_sizes], dtype=torch.float32)
    torch.testing.assert_close(priors.points[last, :2] / strides[last, None] - offset, cells)
    if priors.boxes is not None:  # anchors: centred on the points
        assert priors.boxes.shape == (n, 4)
        torch.testing.assert_close((priors.boxes[:, :2] + priors.boxes[:, 2:]) / 2, priors.points[:, :2])


def test_priors_agree_with_the_network_at_other_sizes(case):
    """⌈H/s⌉ × ⌈W/s⌉ also at odd sizes, wherever the network accepts them (NanoDet-Plus' GhostPAN upsamples
    ×2, so it needs the multiples of 32 that the batch padding gives; RetinaNet takes any size)."""
    model = case[0]
    checked = 0
    for size in ((64, 224), (75, 113), (33, 97), (1, 1)):
        with torch.no_grad():
            try:
                n = model(torch.zeros(1, 3, *size)).cls_logits.shape[1]
            except RuntimeError:
                assert size[0] % 32 or size[1] % 32
                continue
        assert model.priors(size).num == n, size
        checked += 1
    assert checked >= 1


def test_decode_shapes_and_ranges(case):
    model, _, outputs, priors = case
    boxes, scores = model.decode(outputs, priors)
    assert boxes.shape == (2, priors.num, 4) and scores.shape == (2, priors.num, C)
    assert torch.equal(boxes, model.decode_boxes(outputs, priors))
    assert float(scores.min()) >= 0 and float(scores.max()) <= 1


def test_encode_then_decode_gives_the_boxes_back(case):
    model, _, outputs, priors = case
    gen = torch.Generator().manual_seed(2)
    sides = torch.rand(2, priors.num, 4, generator=gen) * 2.5 + 0.3  # l, t, r, b in strides
    s = priors.points[:, 2:3]
    xy = priors.points[:, :2]
    boxes = torch.cat([xy - sides[..., :2] * s, xy + sides[..., 2:] * s], dim=-1)
    reg = model.encode_boxes(boxes, priors)
    assert reg.shape == outputs.bbox_reg.shape
    decoded = model.decode_boxes(HeadOutput(outputs.cls_logits, reg), priors)
    torch.testing.assert_close(decoded, boxes, atol=1e-3, rtol=1e-4)


def test_assignment_follows_the_one_convention(case):
    model, _, outputs, priors = case
    h, w = SIZE
    gt = torch.tensor([[4.0, 4.0, 50.0, 40.0], [60.0, 10.0, 105.0, 70.0]])
    targets = [Target(gt, torch.tensor([2, 0])), Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
    res = model.assign(outputs, priors, targets)
    assert isinstance(res, Assignment)
    assigned = [res] if res.auxiliary is None else [res, res.auxiliary]  # DeFCN: + the one-to-many result
    for a in assigned:
        assert isinstance(a, Assignment)
        assert all(t.shape == (2, priors.num) for t in (a.gt_inds, a.labels, a.quality))
        assert a.gt_inds.dtype == a.labels.dtype == torch.int64 and a.quality.dtype == torch.float32
        assert torch.all(a.labels[~a.pos_mask] == -1) and torch.all(a.neg_mask[1])
    assert res.auxiliary is None or res.auxiliary.auxiliary is None
    assert int(res.gt_inds.min()) >= -1 and int(res.gt_inds[0].max()) <= 2
    # every GT gets a positive; a positive carries its GT's class, everything else -1
    assert set(res.gt_inds[0][res.pos_mask[0]].tolist()) == {1, 2}
    pos = res.pos_mask[0]
    assert torch.equal(res.labels[0][pos], targets[0].labels[res.gt_inds[0][pos] - 1])
    assert torch.all(res.labels[~res.pos_mask] == -1)
    assert torch.equal(res.gt_index[0][pos], res.gt_inds[0][pos] - 1) and torch.all(res.gt_index[0][~pos] == -1)
    assert float(res.quality.min()) >= 0 and float(res.quality.max()) <= 1
    # an image without GT: all background, quality 0
    assert torch.all(res.neg_mask[1]) and not res.quality[1].any()
    # the image's own size: ignored priors (where the family ignores any) never become positive
    metas = [meta(0, (h - 20, w - 40)), meta(1, (h, w))]
    small = model.assign(outputs, priors, targets, metas)
    assert not torch.any(small.pos_mask & small.ignore_mask)
    assert torch.equal(small.labels[small.pos_mask], targets[0].labels[small.gt_inds[small.pos_mask] - 1])


def test_forward_and_decode_trace_and_export(case):
    model, images, _, _ = case
    graph = DecodedGraph(model, SIZE).eval()
    with torch.no_grad():
        boxes, scores = graph(images)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(graph, images[:1])
        t_boxes, t_scores = traced(images)
    torch.testing.assert_close(t_boxes, boxes, atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(t_scores, scores, atol=1e-6, rtol=1e-5)

    ort = pytest.importorskip("onnxruntime")
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (images[:1],), buf, dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["boxes", "scores"], dynamic_axes={"images": {0: "batch"}})
    session = ort.InferenceSession(buf.getvalue(), providers=["CPUExecutionProvider"])
    o_boxes, o_scores = session.run(None, {"images": images.numpy()})
    np.testing.assert_allclose(o_boxes, boxes.numpy(), atol=1e-3, rtol=1e-4)
    np.testing.assert_allclose(o_scores, scores.numpy(), atol=1e-5)


def test_predict_is_decode_clip_and_the_shared_postprocess(case):
    model, images, outputs, priors = case
    h, w = SIZE
    metas = [meta(0, (h, w)), meta(1, (h - 11, w - 30))]
    cfg = model.postprocess_cfg.replace(score_thr=0.008, iou_thr=0.5, max_det=40)
    # the clip is idempotent here; DeFCN's predict leaves it to to_original (cvpods clips once, in original pixels)
    limits = image_limits(metas, images.shape, images)
    dets = [type(d)(clip_boxes(d.boxes, limits[i]), d.scores, d.labels)
            for i, d in enumerate(model.predict(images, metas, cfg))]
    boxes, scores = model.decode(outputs, priors)
    ref = model.postprocess(clip_boxes(boxes, image_limits(metas, images.shape, boxes)), scores, priors, cfg)
    for d, r, m in zip(dets, ref, metas):
        assert len(d.scores) == len(r.scores) == 40
        a, b = _canonical(d), _canonical(r)
        torch.testing.assert_close(a[0], b[0])
        torch.testing.assert_close(a[1], b[1])
        assert torch.equal(a[2], b[2])
        ih, iw = m.img_shape
        assert float(d.boxes.min()) >= 0 and float(d.boxes[:, 0::2].max()) <= iw and float(d.boxes[:, 1::2].max()) <= ih


def _canonical(d):
    order = np.lexsort(np.concatenate([d.boxes.numpy().T[::-1], d.labels.numpy()[None], -d.scores.numpy()[None]]))
    order = torch.from_numpy(order.copy())
    return d.boxes[order], d.scores[order], d.labels[order]
