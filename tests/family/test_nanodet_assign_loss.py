"""NanoDet-Plus assignment (DSLA) and losses (QFL, DFL, GIoU, full head loss), hand-checked.

The parity test at the end runs the official RangiLyu/nanodet code beside detcli; it needs
``NANODET_REPO=/path/to/nanodet`` and is marked ``parity``.
"""
import math
import os
import types

import pytest
import torch
import torch.nn.functional as F
import torchvision

from detcli.assigners.dsl import (
    DynamicSoftLabelAssigner,
    pairwise_iou,
    soft_label_cls_cost,
)
from detcli.geometry.priors import point_priors
from detcli.losses.gfocal import distribution_focal_loss, quality_focal_loss
from detcli.losses.iou import generalized_iou_aligned, giou_loss
from detcli.losses.nanodet_plus_loss import decode_gfl_boxes, nanodet_plus_loss
from detcli.structures import HeadOutput
from detcli.structures import Target
from tests.support.scalar_math import sigmoid, softplus

LN2 = math.log(2.0)


# --------------------------------------------------------------------------------------------- QFL / DFL / GIoU
def test_quality_focal_loss_closed_form():
    # row 0: positive of class 1 with IoU 0.8; row 1: background (label C = 2)
    logits = torch.tensor([[0.0, 2.0], [-1.0, 1.0]])
    labels = torch.tensor([1, 2])
    scores = torch.tensor([0.8, 0.0])
    # negative entry: BCE(x, 0) * sigmoid(x)^2 = softplus(x) * sigmoid(x)^2
    #   x=0: 0.693147 * 0.25 = 0.173287 ; x=-1: 0.313262 * 0.072329 = 0.022658 ; x=1: 1.313262 * 0.534447 = 0.701869
    # positive entry x=2, y=0.8: (softplus(2) - 2*0.8) * (0.8 - sigmoid(2))^2 = 0.526928 * 0.006528 = 0.003440
    row0 = softplus(0.0) * 0.25 + (softplus(2.0) - 1.6) * (0.8 - sigmoid(2.0)) ** 2
    row1 = softplus(-1.0) * sigmoid(-1.0) ** 2 + softplus(1.0) * sigmoid(1.0) ** 2
    assert row0 == pytest.approx(0.176727, abs=1e-6)
    assert row1 == pytest.approx(0.724527, abs=1e-6)
    got = quality_focal_loss(logits, labels, scores)
    assert torch.allclose(got, torch.tensor([row0, row1]), atol=1e-6)
    # beta = 1 changes only the modulator exponent
    got_b1 = quality_focal_loss(logits, labels, scores, beta=1.0)
    row0_b1 = softplus(0.0) * 0.5 + (softplus(2.0) - 1.6) * abs(0.8 - sigmoid(2.0))
    assert got_b1[0].item() == pytest.approx(row0_b1, abs=1e-6)


def test_distribution_focal_loss_closed_form():
    pred = torch.tensor([[0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 0.0]] * 2)
    # logsumexp = ln(5 + e + e^2 + e^3) = ln(35.192941) = 3.560843
    lse = math.log(5 + math.e + math.e**2 + math.e**3)
    ce2, ce3 = lse - 2.0, lse - 3.0  # 1.560843, 0.560843
    # y = 2.3 -> 0.7 * CE(., 2) + 0.3 * CE(., 3) = 1.260843 ; y = 3.0 -> CE(., 3)
    got = distribution_focal_loss(pred, torch.tensor([2.3, 3.0]))
    assert got[0].item() == pytest.approx(0.7 * ce2 + 0.3 * ce3, abs=1e-5)
    assert got[0].item() == pytest.approx(1.260843, abs=1e-5)
    assert got[1].item() == pytest.approx(ce3, abs=1e-5)


def test_giou_loss_by_hand():
    pred = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0]])
    # pair 0: inter 1, union 7, enclosing 9 -> GIoU = 1/7 - 2/9 = -0.079365, loss 1.079365
    # pair 1: disjoint, union 2, enclosing [0,0,3,1] = 3 -> GIoU = 0 - 1/3, loss 4/3
    giou = generalized_iou_aligned(pred, target)
    assert torch.allclose(giou, torch.tensor([1 / 7 - 2 / 9, -1 / 3]), atol=1e-6)
    # weights (1, 0.5), avg_factor 2 -> (1.079365 + 0.666667) / 2 = 0.873016
    got = giou_loss(pred, target, weight=torch.tensor([1.0, 0.5]), avg_factor=2.0)
    assert got.item() == pytest.approx(0.873016, abs=1e-6)
    assert giou_loss(pred, target).item() == pytest.approx((1 + 2 / 9 - 1 / 7 + 4 / 3) / 2, abs=1e-6)
    # torchvision's form (eps added instead of max-clamped) agrees on ordinary boxes
    tv = torchvision.ops.generalized_box_iou_loss(pred, target, reduction="none")
    assert torch.allclose(1 - giou, tv, atol=1e-6)


# --------------------------------------------------------------------------------------------- DSLA
def _two_gt_case():
    """2 GTs side by side, 6 priors (stride 8) on the line y = 8, classes C = 2.

    GT A = [0,0,20,20] class 0 ; GT B = [10,0,30,20] class 1. Predicted boxes all span y in [0, 20],
    so IoU is a ratio of x-lengths:

        prior  point    pred box       IoU A            IoU B          inside
        p0     (4, 8)   [0, 20]        1                10/30 = 1/3    A
        p1     (8, 8)   [0, 19]        19/20 = 0.95     9/30 = 0.3     A
        p2     (15, 8)  [6, 26]        14/26 = 0.538462 16/24 = 2/3    A, B
        p3     (24, 8)  [10, 30]       10/30 = 1/3      1              B
        p4     (28, 8)  [12, 30]       8/30 = 0.266667  18/20 = 0.9    B
        p5     (40, 8)  [10, 30]       1/3              1              none -> never a candidate

    Dynamic k over the 5 valid priors: A: 1+.95+.538+.333+.267 = 3.088 -> 3 ; B: .333+.3+.667+1+.9 = 3.2 -> 3.

    Logits are 0 except p2 = (+4, -4). With logits 0 the cost only depends on the IoU u:
    f(u) = 0.25 ln2 (other class) + ln2 (u - 0.5)^2 - 3 ln u, decreasing in u:
        f(1) = 0.346574, f(.95) = 0.467529, f(1/3) = 3.488389, f(.3) = 3.812954, f(.9) = 0.600273,
        f(.266667) = 4.176293.
    p2 (+4 for class 0, -4 for class 1):
        cost A = softplus(-4) sigmoid(-4)^2 + (softplus(4) - 4*0.538462) (0.538462 - sigmoid(4))^2 - 3 ln 0.538462
               = 0.000006 + 1.864304 * 0.196741 + 1.857117 = 2.223910
        cost B = softplus(4) sigmoid(4)^2 + (softplus(-4) + 4*2/3) (2/3 - sigmoid(-4))^2 - 3 ln 2/3
               = 3.874912 + 2.684817 * 0.420782 + 1.216395 = 6.221051
    A's 3 cheapest: p0 0.35, p1 0.47, p2 2.22.  B's 3 cheapest: p3 0.35, p4 0.60, p0 3.49 (p2 costs 6.22).
    p0 is taken twice -> min cost -> A (0.35 < 3.49). B keeps only p3, p4 (the lost prior is not replaced).
    """
    priors = torch.tensor([[x, 8.0, 8.0, 8.0] for x in (4.0, 8.0, 15.0, 24.0, 28.0, 40.0)])
    xs = [(0, 20), (0, 19), (6, 26), (10, 30), (12, 30), (10, 30)]
    boxes = torch.tensor([[a, 0.0, b, 20.0] for a, b in xs])
    logits = torch.zeros(6, 2)
    logits[2] = torch.tensor([4.0, -4.0])
    gt_boxes = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 0.0, 30.0, 20.0]])
    gt_labels = torch.tensor([0, 1])
    return logits, priors, boxes, gt_boxes, gt_labels


def test_dsla_hand_case_costs():
    logits, priors, boxes, gt_boxes, gt_labels = _two_gt_case()
    ious = pairwise_iou(boxes, gt_boxes)
    assert torch.allclose(ious[2], torch.tensor([14 / 26, 2 / 3]), atol=1e-6)
    cost = soft_label_cls_cost(logits[None], gt_labels[None], ious[None])[0] - 3 * torch.log(ious + 1e-7)
    assert cost[2, 0].item() == pytest.approx(2.223910, abs=1e-4)
    assert cost[2, 1].item() == pytest.approx(6.221051, abs=1e-4)
    assert cost[0, 0].item() == pytest.approx(0.5 * LN2, abs=1e-5)
    assert cost[0, 1].item() == pytest.approx(3.488389, abs=1e-4)
    assert cost[4, 1].item() == pytest.approx(0.600273, abs=1e-4)


def test_dsla_hand_case_assignment_and_conflict():
    res = DynamicSoftLabelAssigner(topk=13, iou_factor=3.0).assign(*_two_gt_case())
    assert res.gt_inds.tolist() == [1, 1, 1, 2, 2, 0]
    assert res.labels.tolist() == [0, 0, 0, 1, 1, -1]  # -1: background (Assignment convention)
    assert torch.allclose(res.quality, torch.tensor([1.0, 0.95, 14 / 26, 1.0, 0.9, 0.0]), atol=1e-6)
    assert res.gt_inds.dtype == torch.int64 and res.labels.dtype == torch.int64


def test_dsla_dynamic_k_uses_top_13_ious_only():
    # one GT [0,0,100,100]; 20 priors strictly inside, every prediction [0,0,25,100] -> IoU 0.25.
    # k = int(13 * 0.25) = int(3.25) = 3 (summing all 20 would give 5); topk=4 -> int(1.0) = 1.
    xs = torch.arange(20, dtype=torch.float32) * 4 + 10
    priors = torch.stack([xs, torch.full_like(xs, 50), torch.full_like(xs, 8), torch.full_like(xs, 8)], 1)
    boxes = torch.tensor([[0.0, 0.0, 25.0, 100.0]]).expand(20, 4)
    logits = torch.zeros(20, 3)
    gt = torch.tensor([[0.0, 0.0, 100.0, 100.0]])
    res = DynamicSoftLabelAssigner().assign(logits, priors, boxes, gt, torch.tensor([2]))
    assert int((res.gt_inds > 0).sum()) == 3
    assert set(res.labels[res.gt_inds > 0].tolist()) == {2}
    res = DynamicSoftLabelAssigner(topk=4).assign(logits, priors, boxes, gt, torch.tensor([2]))
    assert int((res.gt_inds > 0).sum()) == 1


def test_dsla_no_gt_and_no_valid_prior():
    logits, priors, boxes, gt_boxes, gt_labels = _two_gt_case()
    assigner = DynamicSoftLabelAssigner()
    res = assigner.assign(logits, priors, boxes, gt_boxes[:0], gt_labels[:0])
    assert res.gt_inds.tolist() == [0] * 6 and res.labels.tolist() == [-1] * 6
    assert res.quality.tolist() == [0.0] * 6
    # a GT that contains no prior point (a point on the border is not strictly inside)
    res = assigner.assign(logits, priors, boxes, torch.tensor([[4.0, 8.0, 6.0, 9.0]]), torch.tensor([1]))
    assert res.gt_inds.tolist() == [0] * 6 and res.labels.tolist() == [-1] * 6
    assert res.quality.tolist() == [0.0] * 6


def test_dsla_soft_center_prior_rtmdet_option():
    # GT [0,0,64,64] (centre (32,32)), stride 8; p_far (8,8) predicts IoU 0.6, p_near (32,32) IoU 0.5.
    # k = max(1, int(1.1)) = 1. Without centre cost the higher IoU wins (p_far). With r = 3:
    # d_far = |(24,24)| / 8 = 4.243 -> +10^1.243 = 17.49 ; d_near = 0 -> +0.001, so p_near wins.
    priors = torch.tensor([[8.0, 8.0, 8.0, 8.0], [32.0, 32.0, 8.0, 8.0]])
    boxes = torch.tensor([[0.0, 0.0, 38.4, 64.0], [0.0, 0.0, 32.0, 64.0]])  # IoU 0.6 and 0.5
    logits = torch.zeros(2, 1)
    gt, label = torch.tensor([[0.0, 0.0, 64.0, 64.0]]), torch.tensor([0])
    assert DynamicSoftLabelAssigner().assign(logits, priors, boxes, gt, label).gt_inds.tolist() == [1, 0]
    rtm = DynamicSoftLabelAssigner(soft_center_radius=3.0)
    assert rtm.assign(logits, priors, boxes, gt, label).gt_inds.tolist() == [0, 1]


def test_soft_label_cls_cost_matches_full_formula():
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 7, 5, generator=gen) * 3
    labels = torch.randint(0, 5, (2, 4), generator=gen)
    ious = torch.rand(2, 7, 4, generator=gen)
    soft = F.one_hot(labels, 5)[:, None, :, :] * ious[..., None]  # (B, N, G, C)
    x = logits[:, :, None, :].expand_as(soft)
    full = (F.binary_cross_entropy_with_logits(x, soft, reduction="none") * (soft - x.sigmoid()) ** 2).sum(-1)
    assert torch.allclose(soft_label_cls_cost(logits, labels, ious), full, atol=1e-5)


def test_dsla_batch_equals_per_image():
    gen = torch.Generator().manual_seed(5)
    priors = point_priors([(8, 8), (4, 4)], (8, 16))
    n, c, r = priors.shape[0], 4, 7
    logits = torch.randn(3, n, c, generator=gen) - 2
    boxes = decode_gfl_boxes(torch.randn(3, n, 32, generator=gen), priors, r)
    gts, labels = [], []
    for g in (2, 0, 5):
        xy = torch.rand(g, 2, generator=gen) * 40
        gts.append(torch.cat([xy, xy + torch.rand(g, 2, generator=gen) * 30 + 4], 1))
        labels.append(torch.randint(0, c, (g,), generator=gen))
    # a tiny chunk budget forces one image per chunk; the default handles all three at once
    for budget in (1, 1 << 23):
        assigner = DynamicSoftLabelAssigner(max_chunk_elements=budget)
        batch = assigner.assign_batch(logits, priors, boxes, gts, labels)
        for i in range(3):
            single = assigner.assign(logits[i], priors, boxes[i], gts[i], labels[i])
            assert torch.equal(batch.gt_inds[i], single.gt_inds)
            assert torch.equal(batch.labels[i], single.labels)
            assert torch.equal(batch.quality[i], single.quality)
    assert int((batch.gt_inds[0] > 0).sum()) > 0 and int((batch.gt_inds[1] > 0).sum()) == 0


# --------------------------------------------------------------------------------------------- full loss
def _loss(main, aux, priors, targets, num_classes, reg_max, assigner):
    """Raw (B, N, C + 4(R+1)) head tensors → the loss, with the DSLA of the aux predictions (as NanoDetPlus.loss)."""
    main_out, aux_out = (HeadOutput(*t.split([num_classes, 4 * (reg_max + 1)], -1)) for t in (main, aux))
    boxes = decode_gfl_boxes(aux_out.bbox_reg, priors, reg_max)
    assignment = assigner.assign_batch(
        aux_out.cls_logits.detach(), priors, boxes.detach(), [t.boxes for t in targets], [t.labels for t in targets]
    )
    return nanodet_plus_loss(main_out, aux_out, priors, assignment, targets, reg_max)


def _tiny_head_outputs(num_images: int):
    """4 priors (2x2 map, stride 8): points (0,0), (8,0), (0,8), (8,8); C = 1, reg_max = 7.

    Aux head: all logits 0 -> every side at 3.5 bins = 28 px: box [-20,-20,36,36] (area 3136).
    Main head: class logits 0, distance logits peaked (50) at bin 1 -> 8 px: box [0,0,16,16].
    """
    priors = point_priors([(2, 2)], [8])
    aux = torch.zeros(num_images, 4, 1 + 32)
    main = torch.zeros(num_images, 4, 1 + 32)
    main[:, :, 1:].view(num_images, 4, 4, 8)[..., 1] = 50.0
    return priors, main, aux


def test_nanodet_plus_loss_hand_case():
    """GT [4,4,12,12] contains only the point (8,8), so DSLA gives exactly one positive per image.

    The QFL target is the IoU of the *aux* prediction: 64 / 3136 = 0.020408 (the main box would give
    0.25). Image 0: one GT; image 1: a GT that contains no prior (listed first, so the positive points at
    GT index 1) plus the same GT; image 2: no GT.  2 positives, 10 negatives per head.
        QFL  = (10 * 0.25 ln2 + 2 * ln2 (0.020408 - 0.5)^2) / 2                   (norm = #pos = 2)
        GIoU main: IoU([0,0,16,16], GT) = 0.25 = GIoU; w = sigmoid(0) = 0.5 each, sum 1 -> norm 1
             = 2 * 0.5 * (1 - 0.25) / 1, times weight 2.0                          = 1.5
        GIoU aux: GIoU = IoU = 0.020408 (the enclosing box is the prediction)       -> 2 * 0.5 * 0.979592 * 2
        DFL main: target 4/8 = 0.5 per side; CE(bin 0) = 50, CE(bin 1) = 0 -> 25 per side;
             8 sides * 25 * 0.5 / (4 * 1) * 0.25                                    = 6.25
        DFL aux: uniform logits, CE = ln 8 -> 8 * ln8 * 0.5 / 4 * 0.25
    """
    priors, main, aux = _tiny_head_outputs(3)
    gt = torch.tensor([[4.0, 4.0, 12.0, 12.0]])
    targets = [
        Target(gt, torch.tensor([0])),
        Target(torch.tensor([[100.0, 100.0, 110.0, 110.0], [4.0, 4.0, 12.0, 12.0]]), torch.tensor([0, 0])),
        Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long)),
    ]
    main.requires_grad_(True)
    aux.requires_grad_(True)
    losses = _loss(main, aux, priors, targets, 1, 7, DynamicSoftLabelAssigner())
    iou_aux = 64 / 3136
    qfl = (10 * 0.25 * LN2 + 2 * LN2 * (iou_aux - 0.5) ** 2) / 2
    expected = {
        "loss_qfl": qfl,
        "loss_bbox": 1.5,
        "loss_dfl": 6.25,
        "aux_loss_qfl": qfl,
        "aux_loss_bbox": 2 * 0.5 * (1 - iou_aux) * 2.0,
        "aux_loss_dfl": 8 * math.log(8) * 0.5 / 4 * 0.25,
    }
    assert set(losses) == set(expected)
    for key, value in expected.items():
        assert losses[key].item() == pytest.approx(value, abs=1e-5), key
    sum(losses.values()).backward()
    assert main.grad.abs().sum() > 0 and aux.grad.abs().sum() > 0


def test_nanodet_plus_loss_without_positives():
    # no GT anywhere: QFL = 4 priors * 2 images * 0.25 ln2 / max(0, 1); box losses are 0 but keep a graph
    priors, main, aux = _tiny_head_outputs(2)
    empty = Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    main.requires_grad_(True)
    losses = _loss(main, aux, priors, [empty, empty], 1, 7, DynamicSoftLabelAssigner())
    assert losses["loss_qfl"].item() == pytest.approx(8 * 0.25 * LN2, abs=1e-6)
    for key in ("loss_bbox", "loss_dfl", "aux_loss_bbox", "aux_loss_dfl"):
        assert losses[key].item() == 0.0
    assert losses["loss_bbox"].requires_grad and losses["loss_dfl"].requires_grad  # 0 * sum(reg)
    sum(losses.values()).backward()
    assert main.grad is not None


# --------------------------------------------------------------------------------------------- parity
@pytest.mark.parity
@pytest.mark.skipif(not os.environ.get("NANODET_REPO"), reason="set NANODET_REPO to an official nanodet checkout")
def test_parity_with_official_nanodet():
    from tests.support.nanodet_official import load_official

    off = load_official(os.environ["NANODET_REPO"])
    num_classes, reg_max, strides, size = 80, 7, [8, 16, 32, 64], 320
    ns = types.SimpleNamespace
    cfg = ns(loss_qfl=ns(beta=2.0, loss_weight=1.0), loss_dfl=ns(loss_weight=0.25), loss_bbox=ns(loss_weight=2.0))
    head = off.head.NanoDetPlusHead(num_classes, cfg, 8, feat_channels=8, strides=strides)
    priors = point_priors([(math.ceil(size / s), math.ceil(size / s)) for s in strides], strides)
    num_priors = priors.shape[0]
    gen = torch.Generator().manual_seed(1)

    def head_out(batch):
        cls = torch.randn(batch, num_priors, num_classes, generator=gen) * 1.5 - 4
        reg = torch.randn(batch, num_priors, 4 * (reg_max + 1), generator=gen) * 2
        return torch.cat([cls, reg], -1)

    targets = []
    for g in (0, 3, 10, 40):
        xy = torch.rand(g, 2, generator=gen) * 280
        boxes = torch.cat([xy, (xy + torch.rand(g, 2, generator=gen) * 150 + 4).clamp(max=size)], 1)
        targets.append(Target(boxes, torch.randint(0, num_classes, (g,), generator=gen)))
    main, aux = head_out(4), head_out(4)

    # assigner alone, per image, on the aux predictions
    official_dsl = off.dsl.DynamicSoftLabelAssigner(topk=13)
    ours_dsl = DynamicSoftLabelAssigner()
    aux_boxes = decode_gfl_boxes(aux[..., num_classes:], priors, reg_max)
    max_iou_diff, compared = 0.0, 0
    for i, t in enumerate(targets):
        ref = official_dsl.assign(aux[i, :, :num_classes], priors, aux_boxes[i], t.boxes, t.labels)
        got = ours_dsl.assign(aux[i, :, :num_classes], priors, aux_boxes[i], t.boxes, t.labels)
        assert torch.equal(ref.gt_inds, got.gt_inds)
        pos = ref.gt_inds > 0
        assert torch.equal(ref.labels[pos], got.labels[pos])
        if pos.any():
            max_iou_diff = max(max_iou_diff, (ref.max_overlaps[pos] - got.quality[pos]).abs().max().item())
            compared += 1
    assert compared > 0 and max_iou_diff <= 1e-6  # the overlaps were compared at all

    # full loss and gradients
    meta = dict(
        img=torch.zeros(4, 3, size, size),
        gt_bboxes=[t.boxes.numpy() for t in targets],
        gt_labels=[t.labels.numpy() for t in targets],
        gt_bboxes_ignore=None,
    )
    main_ref, aux_ref = main.clone().requires_grad_(), aux.clone().requires_grad_()
    _, ref_losses = head.loss(main_ref, meta, aux_preds=aux_ref)
    main_got, aux_got = main.clone().requires_grad_(), aux.clone().requires_grad_()
    got_losses = _loss(main_got, aux_got, priors, targets, num_classes, reg_max, ours_dsl)
    for key, value in got_losses.items():
        assert value.item() == pytest.approx(ref_losses[key].item(), rel=1e-5, abs=1e-6), key
    sum(ref_losses.values()).backward()
    sum(got_losses.values()).backward()
    assert torch.allclose(main_ref.grad, main_got.grad, atol=1e-7)
    assert torch.allclose(aux_ref.grad, aux_got.grad, atol=1e-7)
