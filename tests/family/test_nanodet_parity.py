"""Parity with the official NanoDet-Plus (opt-in: set NANODET_REPO to a RangiLyu/nanodet checkout).

Run: ``NANODET_REPO=/path/to/nanodet python -m pytest tests/family/test_nanodet_parity.py -q``.
The full table (with losses and gradients for all four models) is ``python -m benchmarks.parity.nanodet_parity``.
"""
from __future__ import annotations

import os

import pytest
import torch

pytestmark = [
    pytest.mark.parity,
    pytest.mark.skipif(not os.environ.get("NANODET_REPO"), reason="set NANODET_REPO to an official nanodet checkout"),
]


@pytest.fixture(scope="module")
def official():
    from benchmarks.common.official_nanodet import import_official

    torch.set_num_threads(1)
    return import_official(os.environ["NANODET_REPO"])


@pytest.mark.parametrize("width, imgsz", [("1.0x", 320), ("1.0x", 416), ("1.5x", 320), ("1.5x", 416)])
def test_inference_output_matches_official(official, width, imgsz):
    from benchmarks.parity.nanodet_parity import OUTPUT_TOL, build_pair

    ref, ours = build_pair(official, width, imgsz)
    images = torch.randn(2, 3, imgsz, imgsz, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out_ref, out_ours = ref(images), torch.cat(ours(images)[:2], dim=-1)  # (B, N, C + 4(R+1))
    assert out_ours.shape == out_ref.shape
    assert out_ref.abs().max() > 1.0  # non-trivial weights
    assert (out_ref - out_ours).abs().max() <= OUTPUT_TOL


@pytest.mark.parametrize("epoch", [0, 10])
def test_training_losses_and_gradients_match_official(official, epoch):
    from benchmarks.parity.nanodet_parity import build_pair, compare_losses, random_targets

    ref, ours = build_pair(official, "1.0x", 320)
    images = torch.randn(2, 3, 320, 320, generator=torch.Generator().manual_seed(2))
    loss_diff, grad_diff, loss, grad_scale = compare_losses(ref, ours, images, random_targets(2, 320, 3), epoch)
    assert loss_diff <= 1e-4 * max(1.0, loss)
    assert grad_diff <= 1e-5 * grad_scale
