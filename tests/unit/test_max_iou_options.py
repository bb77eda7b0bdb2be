"""MaxIoUAssigner's options beyond the RetinaNet defaults: ``neg_iou_thr`` as a (lo, hi) range, ignore boxes
(``ignore_iof_thr``, ``ignore_wrt_candidates``), and their preset fields.

The assigner cases re-state MMDetection 3.3.0's own unit tests of ``MaxIoUAssigner``
(tests/test_models/test_task_modules/test_assigners/test_max_iou_assigner.py: a number and a pair for
``neg_iou_thr``, ignore boxes, no GT, no prior, no prior with ignore boxes, neither) on boxes of our own; the
expected values are worked out by hand in the comments (and agree with the official assigner run on them).
"""
from __future__ import annotations

import pytest
import torch

from detcli.assigners.max_iou import MaxIoUAssigner, box_iof, neg_iou_range
from detcli.config.loader import load_preset
from detcli.config.schema import RetinaNetConfig
from detcli.errors import PresetError
from detcli.models import build_model
from detcli.models.detectors.retinanet import RetinaNet
from detcli.structures import ImageMeta, Target
from tests.support.cli_subprocess import run_cli_forked


def _tiny_retinanet(**assigner) -> RetinaNet:
    """A small RetinaNet-18 whose assigner takes ``assigner`` (ignore_iof_thr > 0 too, which presets refuse)."""
    model = RetinaNet.from_config(RetinaNetConfig(type="retinanet", depth=18, fpn_channels=8, stacked_convs=0), 3)
    model.assigner = MaxIoUAssigner(**assigner)
    return model

# two GTs and four anchors (xyxy); IoUs worked out by hand:
#   anchor 0 [0,0,20,20]:   GT 0 [0,0,20,18] 360/400 = 0.9 → positive for GT 0
#   anchor 1 [20,20,40,40]: touches both GTs along an edge only → IoU 0 → background
#   anchor 2 [10,10,30,30]: GT 0 80/680 = 0.118, GT 1 [0,20,20,38] 100/660 = 0.152 → background, but it is GT 1's
#                           best anchor → the low-quality match makes it GT 1's
#   anchor 3 [60,60,70,75]: far from both → background
ANCHORS = torch.tensor([[0.0, 0, 20, 20], [20, 20, 40, 40], [10, 10, 30, 30], [60, 60, 70, 75]])
GTS = torch.tensor([[0.0, 0, 20, 18], [0, 20, 20, 38]])
LABELS = torch.tensor([4, 7])
NO_BOXES = torch.zeros((0, 4))
NO_LABELS = torch.zeros((0,), dtype=torch.long)


@pytest.mark.parametrize("neg_iou_thr", [0.5, (0.0, 0.5)])
def test_neg_iou_thr_number_is_the_range_from_zero(neg_iou_thr):
    res = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=neg_iou_thr).assign(ANCHORS, GTS, LABELS)
    assert res.gt_inds.tolist() == [1, 0, 2, 0]
    assert res.labels.tolist() == [4, -1, 7, -1]
    torch.testing.assert_close(res.quality, torch.tensor([0.9, 0.0, 100 / 660, 0.0]))


def test_neg_iou_range_leaves_anchors_below_lo_ignored():
    # anchors 1 and 3 have best IoU 0 < lo = 0.1: neither background nor positive, ignored
    res = MaxIoUAssigner(pos_iou_thr=0.5, neg_iou_thr=(0.1, 0.5)).assign(ANCHORS, GTS, LABELS)
    assert res.gt_inds.tolist() == [1, -1, 2, -1]
    assert res.labels.tolist() == [4, -1, 7, -1]


# anchor 3 [60,64,80,84] against ignore box 0 [60,60,80,80]: intersection 20·16 = 320, over either area 400 → 0.8;
# anchor 4 [62,12,66,16] lies inside ignore box 1 [50,0,100,50]: 16/16 = 1 over its own area, 16/2500 over the box's
WITH_IGNORE = torch.cat([ANCHORS[:3], torch.tensor([[60.0, 64, 80, 84], [62, 12, 66, 16]])])
IGNORE_BOXES = torch.tensor([[60.0, 60, 80, 80], [50, 0, 100, 50]])


@pytest.mark.parametrize("wrt_candidates, expected", [(False, [1, 0, 2, -1, 0]), (True, [1, 0, 2, -1, -1])])
def test_ignore_boxes_make_their_anchors_ignored(wrt_candidates, expected):
    assigner = MaxIoUAssigner(0.5, 0.5, ignore_iof_thr=0.5, ignore_wrt_candidates=wrt_candidates)
    res = assigner.assign(WITH_IGNORE, GTS, LABELS, IGNORE_BOXES)
    assert res.gt_inds.tolist() == expected
    assert res.labels.tolist() == [4, -1, 7, -1, -1]


def test_ignore_boxes_do_nothing_while_ignore_iof_thr_is_off():
    for thr in (-1.0, 0.0):  # MMDetection: only a threshold > 0 turns ignore boxes on
        res = MaxIoUAssigner(0.5, 0.5, ignore_iof_thr=thr).assign(WITH_IGNORE, GTS, LABELS, IGNORE_BOXES)
        assert res.gt_inds.tolist() == [1, 0, 2, 0, 0]


def test_an_ignore_box_moves_the_low_quality_match_to_the_next_best_anchor():
    # GT [0,0,20,20]: IoU 1, 400/600 = 0.667 and 400/1000 = 0.4 with the three anchors. Without ignore boxes the
    # first two are positive and the third sits in the ignore band [0.4, 0.5). An ignore box on the GT covers
    # anchors 0 and 1 by IoF 1 and 0.667 (> 0.5) but anchor 2 by 0.4 only: the GT's best remaining IoU is then
    # 0.4, and the low-quality match gives it anchor 2.
    anchors = torch.tensor([[0.0, 0, 20, 20], [0, 0, 20, 30], [0, 0, 20, 50]])
    gt = torch.tensor([[0.0, 0, 20, 20]])
    assert MaxIoUAssigner(0.5, 0.4).assign(anchors, gt, torch.tensor([2])).gt_inds.tolist() == [1, 1, -1]
    res = MaxIoUAssigner(0.5, 0.4, ignore_iof_thr=0.5).assign(anchors, gt, torch.tensor([2]), gt.clone())
    assert res.gt_inds.tolist() == [-1, -1, 1]
    assert res.labels.tolist() == [-1, -1, 2]
    # quality stays the anchor's IoU with the GT (MMDetection's max_overlaps reads -1 for ignored anchors)
    torch.testing.assert_close(res.quality, torch.tensor([1.0, 2 / 3, 0.4]))


def test_without_gt_every_anchor_is_background_ignore_boxes_notwithstanding():
    res = MaxIoUAssigner(0.5, 0.5, ignore_iof_thr=0.5).assign(WITH_IGNORE, NO_BOXES, NO_LABELS, IGNORE_BOXES)
    assert res.gt_inds.tolist() == [0] * 5 and res.labels.tolist() == [-1] * 5
    assert res.quality.tolist() == [0.0] * 5


@pytest.mark.parametrize("gts, labels, ignore", [
    (GTS, LABELS, None),  # no prior
    (GTS, LABELS, IGNORE_BOXES),  # no prior, ignore boxes on
    (NO_BOXES, NO_LABELS, None),  # neither priors nor GTs
])
def test_no_anchor_gives_empty_results(gts, labels, ignore):
    res = MaxIoUAssigner(0.5, 0.5, ignore_iof_thr=0.5).assign(NO_BOXES, gts, labels, ignore)
    assert res.gt_inds.shape == res.labels.shape == res.quality.shape == (0,)


def test_box_iof_divides_by_the_first_box():
    a = torch.tensor([[0.0, 0, 10, 10], [5, 5, 5, 9]])  # the second has zero area
    b = torch.tensor([[5.0, 0, 25, 10]])
    torch.testing.assert_close(box_iof(a, b), torch.tensor([[0.5], [0.0]]))
    torch.testing.assert_close(box_iof(b, a), torch.tensor([[0.25, 0.0]]))


def test_neg_iou_range_checks_its_argument():
    assert neg_iou_range(0.4) == (0.0, 0.4) and neg_iou_range([0.1, 0.4]) == (0.1, 0.4)
    for bad in ((0.4, 0.4), (0.5, 0.1), (-0.1, 0.3), (0.1, 0.2, 0.3)):
        with pytest.raises(ValueError, match="neg_iou_thr"):
            MaxIoUAssigner(0.5, bad)


# --------------------------------------------------------------------------- preset fields and RetinaNet
SMALL = ["model.backbone_weights=null", "model.fpn_channels=8", "model.stacked_convs=0"]


def test_preset_fields_reach_the_assigner():
    preset, _ = load_preset("retinanet-r18-fpn", SMALL + [
        "model.assigner.neg_iou_thr=[0.1, 0.4]", "model.assigner.match_low_quality=false",
        "model.assigner.gt_max_assign_all=false", "model.assigner.min_pos_iou=0.2"])
    assert preset.model.assigner.neg_iou_thr == (0.1, 0.4)
    a = build_model(preset, num_classes=2, pretrained=False).assigner
    assert (a.neg_lo, a.neg_hi, a.min_pos_iou) == (0.1, 0.4, 0.2)
    assert not a.match_low_quality and not a.gt_max_assign_all
    assert (a.ignore_iof_thr, a.ignore_wrt_candidates) == (-1.0, True)  # MMDetection's RetinaNet


@pytest.mark.parametrize("value, message", [
    ("[0.4, 0.1]", "lo must be below hi"),
    ("[0.3, 0.3]", "lo must be below hi"),
    ("[0.1, 0.2, 0.3]", "a pair"),
    ("[-0.1, 0.3]", r"in \[0, 1\]"),
    ("[0.1, 0.6]", r"neg_iou_thr \(0.6\) must not exceed pos_iou_thr \(0.5\)"),
    ("yes", r"in \[0, 1\]"),
])
def test_bad_neg_iou_thr_is_a_preset_error_naming_the_field(value, message):
    with pytest.raises(PresetError, match=message) as e:
        load_preset("retinanet-r18-fpn", [f"model.assigner.neg_iou_thr={value}"])
    assert "model.assigner" in str(e.value) and "neg_iou_thr" in str(e.value)


def test_cli_refuses_a_bad_range_and_unavailable_ignore_boxes(tmp_path):
    out = run_cli_forked("presets", "retinanet-r18-fpn", "--set", "model.assigner.neg_iou_thr=[0.4, 0.1]",
                         cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text
    assert "model.assigner.neg_iou_thr (from --set)" in text and "lo must be below hi" in text
    out = run_cli_forked("presets", "retinanet-r18-fpn", "--set", "model.assigner.ignore_iof_thr=0.5", cwd=tmp_path)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "Traceback" not in text
    assert "model.assigner.ignore_iof_thr (from --set)" in text and "no data loader gives ignore boxes" in text


@pytest.mark.parametrize("options", [
    dict(neg_iou_thr=(0.1, 0.4)),  # anchors far from every GT are ignored, not background
    dict(neg_iou_thr=0.0),  # an empty background band: nothing is background
    dict(ignore_iof_thr=0.5),  # ignore boxes, some far from every GT
    dict(ignore_iof_thr=0.5, ignore_wrt_candidates=False, neg_iou_thr=(0.05, 0.4)),
])
def test_retinanet_assign_equals_the_assigner_on_every_valid_anchor(options):
    """``RetinaNet.assign`` runs the assigner only on the anchors that may overlap a box; the others must come out
    as the assigner would give them, and ``Target.ignore_boxes`` must reach it."""
    model = _tiny_retinanet(**options)
    h, w = 128, 160
    priors = model.priors((h, w))
    gts = torch.tensor([[10.0, 12, 50, 60], [70, 20, 90, 100]])
    labels = torch.tensor([0, 2])
    ignore = torch.tensor([[100.0, 80, 150, 120], [60, 10, 100, 40]])
    target = Target(gts, labels, ignore)
    meta = ImageMeta(0, "a.jpg", (h, w), (h, w), torch.eye(3).tolist())
    got = model.assign(None, priors, [target], [meta])
    want = model.assigner.assign(priors.boxes, gts, labels, ignore)
    assert torch.equal(got.gt_inds[0], want.gt_inds)
    assert torch.equal(got.labels[0], want.labels)
    torch.testing.assert_close(got.quality[0], want.quality)
    assert (want.gt_inds == -1).any() and (want.gt_inds > 0).any()  # the case is not trivial
    if "ignore_iof_thr" in options:  # the ignore boxes changed something
        plain = _tiny_retinanet(**{**options, "ignore_iof_thr": -1.0})
        assert not torch.equal(plain.assign(None, priors, [target], [meta]).gt_inds[0], got.gt_inds[0])
