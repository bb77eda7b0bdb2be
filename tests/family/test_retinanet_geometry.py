"""RetinaNet anchors, valid flags, DeltaXYWH coding, MaxIoU assignment and losses on hand-made cases."""
import math

import pytest
import torch

from detcli.assigners.max_iou import MaxIoUAssigner
from detcli.geometry.anchors import AnchorGenerator, padded_shape
from detcli.geometry.delta_xywh import DeltaXYWHCoder
from detcli.losses.focal import focal_loss, l1_loss

# The 9 anchors of the P3 location (0, 0): ratio (h/w) 0.5, 1, 2 outer; sizes 32, 32·2^(1/3), 32·2^(2/3) inner.
P3_BASE = torch.tensor(
    [
        [-22.6274, -11.3137, 22.6274, 11.3137],
        [-28.5088, -14.2544, 28.5088, 14.2544],
        [-35.9188, -17.9594, 35.9188, 17.9594],
        [-16.0000, -16.0000, 16.0000, 16.0000],
        [-20.1587, -20.1587, 20.1587, 20.1587],
        [-25.3984, -25.3984, 25.3984, 25.3984],
        [-11.3137, -22.6274, 11.3137, 22.6274],
        [-14.2544, -28.5088, 14.2544, 28.5088],
        [-17.9594, -35.9188, 17.9594, 35.9188],
    ]
)


def test_anchor_sizes_and_order_on_a_2x2_map():
    gen = AnchorGenerator(strides=(8,))
    (anchors,) = gen.grid_anchors([(2, 2)])
    assert anchors.shape == (2 * 2 * 9, 4)
    # location-major: (x=0,y=0), (x=1,y=0), (x=0,y=1), (x=1,y=1); centres at (x·8, y·8), offset 0
    for loc, (sx, sy) in enumerate([(0, 0), (8, 0), (0, 8), (8, 8)]):
        expected = P3_BASE + torch.tensor([sx, sy, sx, sy], dtype=torch.float32)
        torch.testing.assert_close(anchors[loc * 9 : (loc + 1) * 9], expected, atol=1e-4, rtol=0)
    # exact float sizes (no integer truncation as in torchvision): 32·2^(1/3) = 40.3175
    assert anchors[4, 2] - anchors[4, 0] == pytest.approx(32 * 2 ** (1 / 3), abs=1e-4)


def test_anchor_levels_scale_with_stride():
    gen = AnchorGenerator()
    levels = gen.grid_anchors([(2, 2), (1, 1), (1, 1), (1, 1), (1, 1)])
    assert [len(a) for a in levels] == [36, 9, 9, 9, 9]
    # P7 (stride 128): the square scale-0 anchor is 512 wide, centred at 0
    torch.testing.assert_close(levels[4][3], torch.tensor([-256.0, -256.0, 256.0, 256.0]))
    torch.testing.assert_close(levels[1][8], P3_BASE[8] * 2, atol=1e-4, rtol=0)


def test_valid_flags_follow_each_images_own_padded_shape():
    gen = AnchorGenerator()
    # batch padded to 64x96; feature maps of strides 8..128
    sizes = [(8, 12), (4, 6), (2, 3), (1, 2), (1, 1)]
    # image 0 fills the batch; image 1 is 40x50 → its own pad_shape is 64x64 (not 40x50, as MMDetection)
    pads = [padded_shape((64, 96), 32), padded_shape((40, 50), 32)]
    assert pads == [(64, 96), (64, 64)]
    flags = gen.valid_flags(sizes, pads)
    n = 9 * (96 + 24 + 6 + 2 + 1)
    assert flags.shape == (2, n)
    assert bool(flags[0].all())
    # image 1: P3 8x8 of 8x12 cells, P4 4x4 of 4x6, P5 2x2 of 2x3, P6 1x1 of 1x2, P7 1x1
    assert int(flags[1].sum()) == 9 * (64 + 16 + 4 + 1 + 1)
    p3 = flags[1, : 9 * 96].reshape(8, 12, 9)
    assert bool(p3[:, :8].all()) and not bool(p3[:, 8:].any())
    p6 = flags[1, 9 * (96 + 24 + 6) : 9 * (96 + 24 + 6 + 2)].reshape(2, 9)
    assert p6[0].all() and not p6[1].any()


def test_coder_hand_values_round_trip_and_clamp():
    coder = DeltaXYWHCoder()
    anchor = torch.tensor([[0.0, 0.0, 10.0, 20.0]])
    gt = torch.tensor([[5.0, 5.0, 25.0, 25.0]])
    # anchor centre (5, 10), size 10x20; gt centre (15, 15), size 20x20
    torch.testing.assert_close(coder.encode(anchor, gt), torch.tensor([[1.0, 0.25, math.log(2.0), 0.0]]))
    torch.testing.assert_close(coder.decode(anchor, coder.encode(anchor, gt)), gt)

    g = torch.Generator().manual_seed(0)
    a = torch.rand(50, 2, generator=g) * 100
    a = torch.cat([a, a + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    b = torch.rand(50, 2, generator=g) * 100
    b = torch.cat([b, b + 5 + torch.rand(50, 2, generator=g) * 50], 1)
    torch.testing.assert_close(coder.decode(a, coder.encode(a, b)), b, atol=1e-4, rtol=0)

    # dw = +10 is clamped to log(1000/16): width 10·62.5 = 625; dh = −10 → height 10·0.016 = 0.16
    sq = torch.tensor([[0.0, 0.0, 10.0, 10.0]])
    out = coder.decode(sq, torch.tensor([[0.0, 0.0, 10.0, -10.0]]))
    torch.testing.assert_close(out, torch.tensor([[5 - 312.5, 5 - 0.08, 5 + 312.5, 5 + 0.08]]))
    clipped = coder.decode(sq, torch.tensor([[0.0, 0.0, 10.0, -10.0]]), max_shape=(100, 200))
    torch.testing.assert_close(clipped, torch.tensor([[0.0, 4.92, 200.0, 5.08]]))
    # per-image clipping for a batch (B, N, 4) with (B, 2) shapes
    batch = coder.decode(sq, torch.tensor([[[0.0, 0.0, 10.0, -10.0]], [[0.0, 0.0, 10.0, -10.0]]]), torch.tensor([[[100, 200]], [[50, 60]]]))
    torch.testing.assert_close(batch[:, 0, 2], torch.tensor([200.0, 60.0]))


BOX = torch.tensor([[0.0, 0.0, 10.0, 10.0]])


def test_assigner_positive_ignore_band_and_negative():
    anchors = torch.tensor(
        [
            [0.0, 0.0, 10.0, 10.0],  # IoU 1      → positive
            [0.0, 0.0, 10.0, 22.0],  # IoU 100/220 = 0.4545 → ignore band [0.4, 0.5)
            [0.0, 0.0, 10.0, 30.0],  # IoU 1/3    → background
            [50.0, 50.0, 60.0, 60.0],  # IoU 0    → background
        ]
    )
    res = MaxIoUAssigner().assign(anchors, BOX, torch.tensor([7]))
    assert res.gt_inds.tolist() == [1, -1, 0, 0]
    assert res.labels.tolist() == [7, -1, -1, -1]
    torch.testing.assert_close(res.quality, torch.tensor([1.0, 100 / 220, 1 / 3, 0.0]))


def test_assigner_low_quality_match_and_overwrite():
    # a GT whose best IoU is 0.4 (< 0.5) still gets that anchor
    anchors = torch.tensor([[0.0, 0.0, 10.0, 25.0], [0.0, 0.0, 10.0, 40.0]])
    res = MaxIoUAssigner().assign(anchors, BOX, torch.tensor([3]))
    assert res.gt_inds.tolist() == [1, 0]
    assert MaxIoUAssigner(match_low_quality=False).assign(anchors, BOX, torch.tensor([3])).gt_inds.tolist() == [-1, 0]

    # overwrite: anchor 0 matches GT 1 perfectly (step 3), but it is also GT 2's best anchor (IoU 1/3),
    # and GT 2 comes later, so MMDetection's low-quality step hands anchor 0 to GT 2
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 30.0]])
    res = MaxIoUAssigner().assign(anchors, gts, torch.tensor([0, 1]))
    assert res.gt_inds.tolist() == [2, 0]
    assert res.labels.tolist() == [1, -1]


def test_assigner_ties_go_to_every_best_anchor_unless_disabled():
    anchors = torch.tensor([[0.0, 0.0, 10.0, 25.0], [0.0, -15.0, 10.0, 10.0], [0.0, 0.0, 10.0, 40.0]])
    assert MaxIoUAssigner().assign(anchors, BOX, torch.tensor([0])).gt_inds.tolist() == [1, 1, 0]
    only_first = MaxIoUAssigner(gt_max_assign_all=False).assign(anchors, BOX, torch.tensor([0]))
    assert only_first.gt_inds.tolist() == [1, -1, 0]


def test_assigner_zero_iou_gt_claims_nothing():
    # GT 2 overlaps no anchor. Plain MMDetection (min_pos_iou=0) would give every anchor to GT 2
    # (open-mmlab/mmdetection#8289); here it claims nothing and GT 1 keeps its match.
    anchors = torch.tensor([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 9.0, 10.0]])
    gts = torch.tensor([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0]])
    res = MaxIoUAssigner().assign(anchors, gts, torch.tensor([0, 1]))
    assert res.gt_inds.tolist() == [1, 0, 1]
    # a zero-area GT (IoU 0 with everything) is harmless too
    res = MaxIoUAssigner().assign(anchors, torch.tensor([[5.0, 5.0, 5.0, 9.0]]), torch.tensor([0]))
    assert res.gt_inds.tolist() == [0, 0, 0]


def test_assigner_without_gt_is_all_background():
    res = MaxIoUAssigner().assign(BOX.repeat(3, 1), torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.long))
    assert res.gt_inds.tolist() == [0, 0, 0] and res.labels.tolist() == [-1, -1, -1]


def test_focal_loss_closed_form():
    logits = torch.tensor([[0.0, 2.0]])
    targets = torch.tensor([[1.0, 0.0]])
    # positive, p = 0.5:            0.25 · (1 − 0.5)² · −log 0.5
    # negative, p = σ(2) = 0.8808:   0.75 · p² · −log(1 − p)
    p = 1 / (1 + math.exp(-2.0))
    expected = 0.25 * 0.25 * math.log(2.0) + 0.75 * p**2 * -math.log(1 - p)
    assert float(focal_loss(logits, targets, avg_factor=2.0)) == pytest.approx(expected / 2, rel=1e-5)
    assert float(focal_loss(logits, targets, avg_factor=1.0, alpha=0.5, gamma=0.0)) == pytest.approx(
        0.5 * math.log(2.0) + 0.5 * -math.log(1 - p), rel=1e-5
    )


def test_l1_loss_closed_form():
    pred = torch.tensor([[0.0, 1.0, -1.0, 2.0]])
    target = torch.tensor([[0.5, 1.0, 1.0, 0.0]])
    assert float(l1_loss(pred, target, avg_factor=3.0)) == pytest.approx(4.5 / 3, rel=1e-6)
