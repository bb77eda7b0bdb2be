"""The shared post-processing (``detcli.postprocess``) on hand-made cases."""
from __future__ import annotations

import pytest
import torch

from detcli.postprocess import PostprocessConfig, clip_boxes, postprocess
from detcli.structures import Priors

# four priors on one 1×4 level: p1 overlaps p0 (IoU 81/119 = 0.68), p2 is apart, p3 equals p0
BOXES = torch.tensor([[[0.0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10]]])
SCORES = torch.tensor([[[0.9, 0.1], [0.8, 0.7], [0.04, 0.3], [0.2, 0.0]]])


def priors(level_sizes, per_cell=1):
    n = sum(h * w * per_cell for h, w in level_sizes)
    levels = torch.cat([torch.full((h * w * per_cell,), i) for i, (h, w) in enumerate(level_sizes)])
    return Priors(torch.zeros(n, 4), None, levels, tuple(level_sizes), per_cell)


def as_lists(det):
    return det.scores.tolist(), det.labels.tolist(), det.boxes.tolist()


def test_multi_label_class_aware_nms():
    """Pairs above 0.05: class 0 keeps p0 (0.9) and suppresses p1 (0.8) and p3 (0.2); class 1 keeps p1 (0.7)
    and p2 (0.3) and suppresses p0 (0.1). p2's class 0 (0.04) never becomes a candidate."""
    (det,) = postprocess(BOXES, SCORES, priors([(1, 4)]), PostprocessConfig(score_thr=0.05, iou_thr=0.6))
    scores, labels, boxes = as_lists(det)
    assert scores == pytest.approx([0.9, 0.7, 0.3]) and labels == [0, 1, 1]
    assert boxes == [[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]]
    assert det.scores.dtype == torch.float32 and det.labels.dtype == torch.int64


def test_max_det_and_iou_threshold():
    cfg = PostprocessConfig(score_thr=0.05, iou_thr=0.7, max_det=4)  # 0.68 < 0.7: p1 survives in class 0 too
    (det,) = postprocess(BOXES, SCORES, priors([(1, 4)]), cfg)
    assert det.scores.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.3])


def test_no_nms_keeps_the_best_pairs():
    (det,) = postprocess(BOXES, SCORES, priors([(1, 4)]), PostprocessConfig(score_thr=0.05, nms="none", max_det=4))
    scores, labels, _ = as_lists(det)
    assert scores == pytest.approx([0.9, 0.8, 0.7, 0.3]) and labels == [0, 0, 1, 1]


def test_per_level_top_k_after_the_threshold():
    """Levels of 3 and 1 priors; nms_pre=2 keeps the two best pairs *per level and image* (MMDetection)."""
    cfg = PostprocessConfig(score_thr=0.05, nms="none", nms_pre=2)
    (det,) = postprocess(BOXES, SCORES, priors([(1, 3), (1, 1)]), cfg)
    scores, labels, _ = as_lists(det)
    assert scores == pytest.approx([0.9, 0.8, 0.2]) and labels == [0, 0, 0]  # level 0: 0.9, 0.8; level 1: 0.2


def test_anchor_levels_index_priors_as_level_y_x_anchor():
    """One level of 1×2 cells with 2 anchors each: prior n = (y·W + x)·A + a; the best pair sits at prior 3."""
    scores = torch.zeros(1, 4, 2)
    scores[0, 3, 1] = 0.9
    scores[0, 1, 0] = 0.6
    boxes = torch.arange(16.0).reshape(1, 4, 4).cumsum(-1)
    for factor in (0.0, 1e9):  # dense top-k and sparse selection agree
        cfg = PostprocessConfig(score_thr=0.5, nms="none", nms_pre=1, dense_topk_factor=factor)
        (det,) = postprocess(boxes, scores, priors([(1, 2)], per_cell=2), cfg)
        assert det.labels.tolist() == [1] and torch.equal(det.boxes, boxes[0, 3:4])


def test_min_bbox_size_drops_empty_boxes():
    boxes = BOXES.clone()
    boxes[0, 0, 2] = 0.0  # p0 has zero width
    cfg = PostprocessConfig(score_thr=0.05, iou_thr=0.6, min_bbox_size=0.0)
    (det,) = postprocess(boxes, SCORES, priors([(1, 4)]), cfg)
    assert det.scores.tolist() == pytest.approx([0.8, 0.7, 0.3])  # p1 is no longer suppressed by p0


def test_selecting_on_logits_equals_selecting_on_probabilities():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 40, 5, generator=gen) * 2 - 1
    xy = torch.rand(2, 40, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(2, 40, 2, generator=gen) * 30], -1)
    p = priors([(4, 5), (2, 2), (1, 1)], per_cell=1)
    for nms_pre in (None, 7):
        cfg = PostprocessConfig(score_thr=0.3, iou_thr=0.5, max_det=30, nms_pre=nms_pre)
        a = postprocess(boxes, logits.sigmoid(), p, cfg)
        b = postprocess(boxes, logits, p, cfg, scores_are_logits=True)
        for x, y in zip(a, b):
            assert x.labels.tolist() == y.labels.tolist() and len(x.scores) > 5
            torch.testing.assert_close(x.scores, y.scores)
            torch.testing.assert_close(x.boxes, y.boxes)


def test_each_image_is_processed_alone():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 40, 4, generator=gen)
    xy = torch.rand(3, 40, 2, generator=gen) * 50
    boxes = torch.cat([xy, xy + 5 + torch.rand(3, 40, 2, generator=gen) * 30], -1)
    p = priors([(5, 8)])
    cfg = PostprocessConfig(score_thr=0.2, iou_thr=0.5, max_det=25)
    batch = postprocess(boxes, scores, p, cfg)
    for i in range(3):
        (alone,) = postprocess(boxes[i:i + 1], scores[i:i + 1], p, cfg)
        assert as_lists(alone) == as_lists(batch[i])


def test_clip_boxes_to_each_image():
    boxes = torch.tensor([[[-5.0, 2, 120, 90]], [[10, -1, 50, 200]]])
    limits = torch.tensor([[[100.0, 80, 100, 80]], [[64, 48, 64, 48]]])
    assert clip_boxes(boxes, limits).tolist() == [[[0, 2, 100, 80]], [[10, 0, 50, 48]]]


def test_the_preset_test_section_is_converted_once_with_the_family_defaults():
    """``TestConfig`` is data: ``from_test`` gives the runtime settings, its unset fields taking the family's."""
    from detcli.config.schema import TestConfig as Section  # aliased: pytest would try to collect Test*

    unset = PostprocessConfig.from_test(Section(score_thr=0.3, iou_thr=0.5, max_det=7), nms_pre=1000,
                                        min_bbox_size=0.0)
    assert unset == PostprocessConfig(score_thr=0.3, iou_thr=0.5, max_det=7, nms_pre=1000, min_bbox_size=0.0)
    given = PostprocessConfig.from_test(Section(nms="none", nms_pre=50, min_bbox_size=2.0), nms_pre=1000)
    assert (given.nms, given.nms_pre, given.min_bbox_size) == ("none", 50, 2.0)
    # a call's overrides (--conf, --iou, --max-det): None keeps the setting
    assert unset.replace(score_thr=None, iou_thr=0.7, max_det=None) == PostprocessConfig(
        score_thr=0.3, iou_thr=0.7, max_det=7, nms_pre=1000, min_bbox_size=0.0)
