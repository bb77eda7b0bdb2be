"""The inference-only model of ``predict`` / ``eval`` (``detcli.models.fuse``): BatchNorms folded, same results.

Hand-made cases first (which BatchNorms fold, which must not), then every shipped preset (globbed from
``presets/``, so one added later is covered; one that differs from another only in its input size builds the
same network here and runs with ``-m slow``) with random weights and random BN statistics (the golden
fixtures' recipe, calibrated on the input) at a small non-square input: raw outputs within 1e-4, the same
detections, no BatchNorm
left, the decoded graph traces.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from detcli.config.loader import load_preset
from detcli.errors import DetcliError
from detcli.export.graph import DecodedGraph
from detcli.inference.paths import NO_FUSE_ENV, inference_model
from detcli.models import build_model
from detcli.models.fuse import InferenceDetector, conv_bn_pairs, fold_batchnorms_, fuse_for_inference
from detcli.structures import ImageMeta
from tests.golden.weights import golden_state_dict, trained_like_
from tests.support.preset_cases import preset_params

torch.set_num_threads(1)

C = 3
SIZE = (96, 160)  # non-square, a multiple of 32 as the batch padding makes it
RAW_TOL = 1e-4  # relative above 1 (RTMDet's raw distances are pixels, in the hundreds)
MAX_DET = 100  # NanoDet-Plus' and RetinaNet's max_det; RTMDet's 300 is more than 3 classes at this size give
DET_TOL = 1e-4  # scores; boxes relative to their size (a regression error scales with the box)


def batchnorms(model: nn.Module) -> list[nn.Module]:
    """BatchNorms, frozen ones (DeFCN's backbone) included."""
    from torchvision.ops import FrozenBatchNorm2d

    return [m for m in model.modules() if isinstance(m, (nn.modules.batchnorm._BatchNorm, FrozenBatchNorm2d))]


def randomize_(model: nn.Module, seed: int = 0, images: torch.Tensor | None = None) -> nn.Module:
    """Random weights and BN statistics by the golden fixtures' recipe (``golden/weights.py``: O(1)
    activations, no BN an identity, class scores spread as a trained detector's), eval mode; with ``images``,
    the BN statistics calibrated on them (``trained_like_``: the deep SiLU networks of RTMDet otherwise lose the
    image's trace)."""
    if images is not None:
        return trained_like_(model, images, seed)
    spec = [(k, v.shape) for k, v in model.state_dict().items()]
    model.load_state_dict(golden_state_dict(spec, seed))
    return model.eval()


def assert_same_detections(fused, original) -> None:
    """Same detections per image: each original one has its own fused one of the same label, score within
    DET_TOL and box within DET_TOL · its size. (The order may differ where two scores are within float noise.)"""
    for f, o in zip(fused, original):
        assert len(f.scores) == len(o.scores)
        size = (o.boxes[:, 2:] - o.boxes[:, :2]).amax(dim=1).clamp(min=1)
        d_box = (o.boxes[:, None] - f.boxes[None]).abs().amax(dim=2) / size[:, None]  # (original, fused)
        d_score = (o.scores[:, None] - f.scores[None]).abs()
        close = (d_box <= DET_TOL) & (d_score <= DET_TOL) & (o.labels[:, None] == f.labels[None])
        for i in range(len(o.scores)):
            j = int(close[i].float().argmax())
            assert close[i, j], f"detection {i} (label {int(o.labels[i])}, score {float(o.scores[i]):.4f}) is lost"
            close[:, j] = False


# ----------------------------------------------------------------------------- hand-made cases
class Block(nn.Module):
    """conv (bias) → BN; depthwise conv (no bias) → BN; grouped conv (no bias) → BN; conv → GN (not foldable)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
        self.dw_bn = nn.BatchNorm2d(8)
        self.grouped = nn.Conv2d(8, 6, 1, groups=2, bias=False)
        self.grouped_bn = nn.BatchNorm2d(6)
        self.gn_conv = nn.Conv2d(6, 4, 3, padding=1)
        self.gn = nn.GroupNorm(2, 4)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = self.dw_bn(self.dw(x))
        return self.gn(self.gn_conv(self.grouped_bn(self.grouped(x))))


def test_folding_depthwise_grouped_and_biasless_convs():
    images = torch.randn(4, 3, 12, 10, generator=torch.Generator().manual_seed(0))
    model = randomize_(Block())
    with torch.no_grad():
        expected = model(images)
        assert fold_batchnorms_(model, images[:1]) == 3
        assert batchnorms(model) == [] and isinstance(model.gn, nn.GroupNorm)
        assert model.dw.bias is not None and model.grouped.bias is not None  # biases made for the BN shift
        torch.testing.assert_close(model(images), expected, atol=1e-5, rtol=1e-5)


class Unfoldable(nn.Module):
    """BatchNorms that must stay: the conv output is also used elsewhere, changed in place before the BN,
    the conv runs twice, the BN runs twice, or the BN uses batch statistics."""

    def __init__(self) -> None:
        super().__init__()
        self.reused, self.reused_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.inplace, self.inplace_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.shared, self.shared_bn1, self.shared_bn2 = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4)
        self.twice, self.twice_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4)
        self.batch_stats, self.batch_stats_bn = nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, track_running_stats=False)

    def forward(self, x):
        y = self.reused(x)
        x = self.reused_bn(y) + y  # residual from the pre-BN conv output
        x = self.inplace_bn(self.inplace(x).relu_())
        x = self.shared_bn1(self.shared(x)) + self.shared_bn2(self.shared(x))
        x = self.twice_bn(self.twice(x)) + self.twice_bn(self.twice(x) * 2)
        return self.batch_stats_bn(self.batch_stats(x))


def test_batchnorms_that_do_not_fold_stay():
    images = torch.randn(2, 4, 6, 6, generator=torch.Generator().manual_seed(0))
    model = randomize_(Unfoldable())
    with torch.no_grad():
        expected = model(images)
        assert conv_bn_pairs(model, images) == []
        assert fold_batchnorms_(model, images) == 0
        torch.testing.assert_close(model(images), expected)


# ----------------------------------------------------------------------------- every preset
@pytest.fixture(scope="module", params=preset_params())
def case(request):
    preset, _ = load_preset(request.param, [f"model.num_classes={C}"])
    torch.manual_seed(0)
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    model = randomize_(build_model(preset, None, pretrained=False), images=images)
    model.train()  # fusing works on an eval-mode copy and leaves the model's mode alone
    before = ({k: v.clone() for k, v in model.state_dict().items()},
              {n: p.requires_grad for n, p in model.named_parameters()})
    fused = fuse_for_inference(model)
    still_training = model.training
    model.eval()
    return model, fused, images, (*before, still_training)


def test_the_original_model_is_left_alone(case):
    model, fused, _, (state, grads, still_training) = case
    after = model.state_dict()
    assert after.keys() == state.keys() and all(torch.equal(after[k], v) for k, v in state.items())
    assert {n: p.requires_grad for n, p in model.named_parameters()} == grads and still_training
    assert batchnorms(model) and isinstance(fused, InferenceDetector) and fused.model is not model


def test_every_batchnorm_is_folded(case):
    model, fused, _, _ = case
    inference_bns = [m for n, m in model.named_modules() if m in batchnorms(model)
                     and any(k.startswith(f"{n}.") for k in model.inference_state_dict())]
    assert inference_bns, "every shipped preset has BatchNorms in its inference graph"
    assert batchnorms(fused) == []
    assert not any(p.requires_grad for p in fused.parameters())


def test_raw_outputs_equal(case):
    model, fused, images, _ = case
    with torch.inference_mode():
        expected, got = model(images), fused(images)
    for name in ("cls_logits", "bbox_reg"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.shape == b.shape and a.dtype == b.dtype == torch.float32
        # (uncalibrated, RTMDet-tiny gives 1e-5: its deep SiLU network loses the image; calibrated, RetinaNet 0.03)
        assert float((b[0] - b[1]).abs().mean()) > 0.01, f"{name}: the random model should depend on the image"
        err = float(((a - b).abs() / b.abs().clamp(min=1)).max())
        assert err <= RAW_TOL, f"{name}: max |Δ| / max(1, |value|) {err:.2e}"


def test_detections_identical(case):
    model, fused, images, _ = case
    h, w = SIZE
    metas = [ImageMeta(i, f"{i}.jpg", SIZE, shape, np.eye(3).tolist())
             for i, shape in enumerate([(h, w), (h - 11, w - 30)])]
    # the preset's, 0.01 (under the 0.05 of NanoDet-Plus and RetinaNet: NMS at work), and 0.005 (nanodet-plus-ghostnet's
    # random scores are lower: 84 detections at 0.01, so the max_det cut is checked at 0.005)
    for score_thr in (None, 0.01, 0.005):
        with torch.inference_mode():
            cfg = model.postprocess_cfg.replace(score_thr=score_thr, max_det=MAX_DET)
            expected = model.predict(images, metas, cfg)
        assert_same_detections(fused.predict(images, metas, cfg), expected)
    assert len(expected[0].scores) == MAX_DET  # at 0.005: a full set, NMS at work


def test_decoded_graph_of_the_fused_model_traces(case):
    """The graph the TorchScript / ONNX benchmarks run: ``DecodedGraph`` of the fused model."""
    _, fused, images, _ = case
    graph = DecodedGraph(fused, SIZE).eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit.trace's deprecation
        traced = torch.jit.trace(graph, (images,))
        for got, expected in zip(traced(images), graph(images)):
            torch.testing.assert_close(got, expected)


# ----------------------------------------------------------------------------- use
def test_inference_only():
    preset, _ = load_preset("nanodet-plus-m", [f"model.num_classes={C}"])
    fused = fuse_for_inference(build_model(preset, None, pretrained=False))
    assert not fused.training
    fused.eval()  # fine
    with pytest.raises(DetcliError, match="cannot train"):
        fused.train()
    with pytest.raises(DetcliError, match="cannot train"):
        fused.loss(torch.zeros(1, 3, 64, 64), [], [], 0)
    assert fused.model.aux_fpn is None and fused.model.aux_head is None  # training-only AGM dropped


def test_fusing_inside_inference_mode_still_folds():
    preset, _ = load_preset("nanodet-plus-m", [f"model.num_classes={C}"])
    model = build_model(preset, None, pretrained=False).eval()
    with torch.inference_mode():
        fused = fuse_for_inference(model)
    assert batchnorms(fused) == []


def test_no_fuse_escape_hatch(monkeypatch):
    preset, _ = load_preset("nanodet-plus-m", [f"model.num_classes={C}"])
    model = build_model(preset, None, pretrained=False).eval()
    assert isinstance(inference_model(model), InferenceDetector)
    monkeypatch.setenv(NO_FUSE_ENV, "1")
    assert inference_model(model) is model
