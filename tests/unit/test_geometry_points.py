"""Point priors and distance box coding, checked on hand-made numbers."""
import pytest
import torch

from detcli.geometry.distance import bbox2distance, distance2bbox, integral
from detcli.geometry.priors import point_priors


def test_point_priors_order_and_offset_zero():
    # 2x2 map at stride 8 then 1x1 at stride 16; points at the cell's top-left corner (offset 0),
    # rows y-outer / x-inner, level after level.
    expected = torch.tensor(
        [
            [0.0, 0.0, 8.0, 8.0],
            [8.0, 0.0, 8.0, 8.0],
            [0.0, 8.0, 8.0, 8.0],
            [8.0, 8.0, 8.0, 8.0],
            [0.0, 0.0, 16.0, 16.0],
        ]
    )
    got = point_priors([(2, 2), (1, 1)], (8, 16))
    assert got.dtype == torch.float32
    assert torch.equal(got, expected)


def test_point_priors_non_square_and_offset_half():
    # h=1, w=3 at stride 4 with offset 0.5: x = 2, 6, 10 ; y = 2
    got = point_priors([(1, 3)], [4], offset=0.5)
    assert torch.equal(got, torch.tensor([[2.0, 2.0, 4, 4], [6.0, 2.0, 4, 4], [10.0, 2.0, 4, 4]]))
    # 2 rows x 1 column: y varies along the rows
    got = point_priors([(2, 1)], [8])
    assert torch.equal(got[:, :2], torch.tensor([[0.0, 0.0], [0.0, 8.0]]))


def test_point_priors_count_nanodet_320():
    sizes = [(40, 40), (20, 20), (10, 10), (5, 5)]
    assert point_priors(sizes, (8, 16, 32, 64)).shape == (2125, 4)
    with pytest.raises(ValueError):
        point_priors(sizes, (8, 16))


def test_distance2bbox_by_hand_and_clamp():
    points = torch.tensor([[10.0, 20.0]])
    dist = torch.tensor([[3.0, 4.0, 5.0, 6.0]])
    assert torch.equal(distance2bbox(points, dist), torch.tensor([[7.0, 16.0, 15.0, 26.0]]))
    # clamp to (h, w) = (24, 12): x to [0, 12], y to [0, 24]
    far = torch.tensor([[30.0, 40.0, 5.0, 6.0]])
    assert torch.equal(distance2bbox(points, far, max_shape=(24, 12)), torch.tensor([[0.0, 0.0, 12.0, 24.0]]))


def test_bbox2distance_round_trip_and_clamp():
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(2, 5, 2, generator=gen) * 100  # extra leading dimension
    dist = torch.rand(2, 5, 4, generator=gen) * 50
    boxes = distance2bbox(points, dist)
    assert torch.allclose(bbox2distance(points, boxes), dist, atol=1e-5)

    # point (10, 10), box [0, 5, 100, 12]: l=10, t=5, r=90, b=2 -> clamp to [0, 7 - 0.1]
    p = torch.tensor([[10.0, 10.0]])
    b = torch.tensor([[0.0, 5.0, 100.0, 12.0]])
    assert torch.equal(bbox2distance(p, b), torch.tensor([[10.0, 5.0, 90.0, 2.0]]))
    assert torch.allclose(bbox2distance(p, b, max_dis=7.0), torch.tensor([[6.9, 5.0, 6.9, 2.0]]))
    # a point outside the box gives negative distances, clamped to 0
    outside = torch.tensor([[0.0, 0.0, 5.0, 5.0]])
    assert torch.allclose(bbox2distance(p, outside, max_dis=7.0), torch.tensor([[6.9, 6.9, 0.0, 0.0]]))


def test_integral_peaked_and_uniform():
    reg_max = 7
    logits = torch.full((4, 8), -1e4)
    for side, peak in enumerate([0, 3, 5, 7]):
        logits[side, peak] = 0.0
    got = integral(logits.reshape(1, 32), reg_max)
    assert torch.equal(got, torch.tensor([[0.0, 3.0, 5.0, 7.0]]))
    # uniform: mean of 0..7 = 3.5; two equal bins 2 and 3: 2.5
    assert torch.allclose(integral(torch.zeros(3, 32), reg_max), torch.full((3, 4), 3.5))
    two = torch.full((1, 4, 8), -1e4)
    two[..., 2] = two[..., 3] = 0.0
    assert torch.allclose(integral(two.reshape(1, 32), reg_max), torch.full((1, 4), 2.5))
