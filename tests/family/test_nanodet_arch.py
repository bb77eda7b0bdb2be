"""NanoDet-Plus architecture: sizes, costs, key names, decoding, AGM wiring, weight loading.

Expected numbers are the official ones (README "Params"/"FLOPs" columns and module totals of the official
model, see shared/reference/nanodet_plus_rtmdet.md A1/A2/Appendix); key names are hand-copied from the
official state dict of RangiLyu/nanodet.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from detcli.config.schema import NanoDetPlusConfig
from detcli.errors import DetcliError
from detcli.structures import HeadOutput, Priors
from detcli.models.complexity import (
    conv_macs,
    conv_params,
    count_parameters,
    gflops,
    total_params,
)
from detcli.models.detectors.nanodet_plus import NanoDetPlus
from detcli.models.layers import ConvNormAct, DepthwiseConvModule, Scale, make_act
from detcli.structures import ImageMeta, Target

torch.set_num_threads(1)


def build(width: str = "1.0x", num_classes: int = 80, backbone_weights: str | None = None, **model) -> NanoDetPlus:
    """The official NanoDet-Plus-m (1.0x) / -m-1.5x; ``model``: more ``NanoDetPlusConfig`` fields."""
    torch.manual_seed(0)
    nc = {"1.0x": 96, "1.5x": 128}[width]
    cfg = NanoDetPlusConfig(type="nanodet_plus", width=width, neck_channels=nc, aux_channels=2 * nc, **model)
    return NanoDetPlus.from_config(cfg, num_classes, backbone_weights=backbone_weights)


def inference_graph(model: NanoDetPlus) -> nn.Module:
    return nn.ModuleList([model.backbone, model.fpn, model.head])


@pytest.fixture(scope="module")
def m10() -> NanoDetPlus:
    return build("1.0x").eval()


# ---------------------------------------------------------------- sizes and costs
def test_parameter_counts_1_0x(m10):
    assert total_params(m10.backbone) == 776_420
    assert total_params(m10.fpn) == 282_048
    assert total_params(m10.head) == 139_456
    assert total_params(m10.aux_fpn) == 282_048
    assert total_params(m10.aux_head) == 2_850_932
    assert count_parameters(inference_graph(m10)) == {"conv": 1_174_768, "total": 1_197_924}
    assert total_params(m10) == 4_330_904


def test_parameter_counts_1_5x():
    m = build("1.5x")
    assert total_params(m.backbone) == 1_755_680
    assert total_params(m.fpn) == 503_552
    assert total_params(m.head) == 218_560
    assert count_parameters(inference_graph(m)) == {"conv": 2_444_368, "total": 2_477_792}
    assert total_params(m) == 7_962_196


def test_flops_as_readme_counts(m10):
    assert round(conv_macs(m10, 320) / 1e9, 4) == 0.4507
    assert round(gflops(m10, 320), 2) == 0.90
    assert round(gflops(m10, 416), 2) == 1.52


def test_complexity_on_a_hand_counted_model():
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8 * 16 * 16, 10)
    )
    # conv: 16·16·8 outputs × 3·3·3 MACs; linear: 10 outputs × 2048 MACs
    assert conv_macs(model, 32) == 16 * 16 * 8 * 27 + 10 * 2048
    assert gflops(model, (32, 32)) == pytest.approx(2 * (55_296 + 20_480) / 1e9)
    assert conv_params(model) == 8 * 27 + 8  # BN and Linear excluded
    assert total_params(model) == 8 * 27 + 8 + 16 + 2048 * 10 + 10


@pytest.mark.parametrize("size, n", [(320, 2125), (416, 3598)])
def test_output_shape(m10, size, n):
    with torch.no_grad():
        out = m10(torch.randn(2, 3, size, size))
    assert n == sum(math.ceil(size / s) ** 2 for s in (8, 16, 32, 64))
    assert out.cls_logits.shape == (2, n, 80) and out.bbox_reg.shape == (2, n, 4 * 8)


# ---------------------------------------------------------------- official key names
OFFICIAL_KEYS = {
    "backbone.conv1.0.weight": (24, 3, 3, 3),
    "backbone.conv1.1.running_var": (24,),
    "backbone.stage2.0.branch1.0.weight": (24, 1, 3, 3),
    "backbone.stage2.0.branch1.2.weight": (58, 24, 1, 1),
    "backbone.stage2.0.branch2.5.weight": (58, 58, 1, 1),
    "backbone.stage3.7.branch2.3.weight": (116, 1, 3, 3),
    "backbone.stage4.3.branch2.6.num_batches_tracked": (),
    "fpn.reduce_layers.0.conv.weight": (96, 116, 1, 1),
    "fpn.reduce_layers.2.bn.running_mean": (96,),
    "fpn.top_down_blocks.0.blocks.0.ghost1.primary_conv.0.weight": (48, 192, 1, 1),
    "fpn.top_down_blocks.1.blocks.0.ghost1.cheap_operation.0.weight": (48, 1, 3, 3),
    "fpn.top_down_blocks.1.blocks.0.ghost1.cheap_operation.1.bias": (48,),
    "fpn.bottom_up_blocks.1.blocks.0.ghost2.primary_conv.1.weight": (48,),
    "fpn.bottom_up_blocks.0.blocks.0.shortcut.0.weight": (192, 1, 5, 5),
    "fpn.bottom_up_blocks.0.blocks.0.shortcut.2.weight": (96, 192, 1, 1),
    "fpn.bottom_up_blocks.0.blocks.0.shortcut.3.running_var": (96,),
    "fpn.downsamples.1.depthwise.weight": (96, 1, 5, 5),
    "fpn.downsamples.0.pwnorm.bias": (96,),
    "fpn.extra_lvl_in_conv.0.pointwise.weight": (96, 96, 1, 1),
    "fpn.extra_lvl_out_conv.0.dwnorm.running_mean": (96,),
    "head.cls_convs.0.0.pwnorm.weight": (96,),
    "head.cls_convs.3.1.depthwise.weight": (96, 1, 5, 5),
    "head.gfl_cls.0.weight": (112, 96, 1, 1),
    "head.gfl_cls.3.bias": (112,),
    "aux_fpn.reduce_layers.1.conv.weight": (96, 232, 1, 1),
    "aux_fpn.extra_lvl_in_conv.0.pointwise.weight": (96, 96, 1, 1),
    "aux_head.cls_convs.0.conv.weight": (192, 192, 3, 3),
    "aux_head.cls_convs.3.gn.weight": (192,),
    "aux_head.reg_convs.2.gn.bias": (192,),
    "aux_head.gfl_cls.weight": (80, 192, 3, 3),
    "aux_head.gfl_reg.bias": (32,),
    "aux_head.scales.3.scale": (),
}


def test_state_dict_keys_match_official(m10):
    sd = m10.state_dict()
    for key, shape in OFFICIAL_KEYS.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    # the official NanoDetPlus has 887 entries: these 886 plus the constant head.distribution_project.project
    assert len(sd) == 886
    assert len(m10.inference_state_dict()) == 644


def test_inference_state_dict_drops_agm(m10):
    inf = m10.inference_state_dict()
    assert not [k for k in inf if k.startswith(("aux_fpn.", "aux_head."))]
    assert {k.split(".")[0] for k in inf} == {"backbone", "fpn", "head"}
    buffers = ("running_mean", "running_var", "num_batches_tracked")
    assert sum(v.numel() for k, v in inf.items() if not k.endswith(buffers)) == 1_197_924


# ---------------------------------------------------------------- layers and init
def test_layers():
    assert make_act("LeakyReLU")(torch.tensor([-1.0, 2.0])).tolist() == pytest.approx([-0.1, 2.0])
    assert isinstance(make_act(None), nn.Identity)
    c = ConvNormAct(4, 32, 3, norm="GN", act="SiLU")
    assert c.conv.bias is None and isinstance(c.gn, nn.GroupNorm) and c.gn.num_groups == 32
    assert ConvNormAct(4, 8, 1, norm=None).conv.bias is not None
    d = DepthwiseConvModule(8, 16, 5, stride=2)
    assert d(torch.randn(1, 8, 9, 9)).shape == (1, 16, 5, 5)
    assert d.depthwise.groups == 8 and d.depthwise.bias is None and d.pointwise.bias is None
    s = Scale(2.5)
    assert s(torch.ones(3)).tolist() == [2.5, 2.5, 2.5]


def test_official_init(m10):
    for conv in m10.head.gfl_cls:
        assert torch.all(conv.bias == -4.595)
    assert torch.all(m10.aux_head.gfl_cls.bias == -4.595) and torch.all(m10.aux_head.gfl_reg.bias == 0)
    fresh = build("1.0x")
    for (k, a), b in zip(fresh.fpn.state_dict().items(), fresh.aux_fpn.state_dict().values()):
        assert torch.equal(a, b), k  # AGM neck starts as an exact copy


# ---------------------------------------------------------------- decoding and predict
def test_priors_offset_zero_and_ceil_sizes(m10):
    priors = m10.priors((416, 416))
    p = priors.points
    assert p.shape == (3598, 4) and priors.boxes is None and priors.per_cell == 1
    assert priors.level_sizes == ((52, 52), (26, 26), (13, 13), (7, 7))
    assert priors.levels.bincount().tolist() == [52 * 52, 26 * 26, 13 * 13, 7 * 7]
    assert p[0].tolist() == [0, 0, 8, 8] and p[1].tolist() == [8, 0, 8, 8] and p[52].tolist() == [0, 8, 8, 8]
    start64 = 52 * 52 + 26 * 26 + 13 * 13
    assert p[start64].tolist() == [0, 0, 64, 64] and p[-1].tolist() == [6 * 64, 6 * 64, 64, 64]


def test_decode_boxes_by_hand(m10):
    points = torch.tensor([[8.0, 0.0, 8.0, 8.0], [64.0, 128.0, 64.0, 64.0]])
    priors = Priors(points, None, torch.tensor([0, 3]), ((1, 2), (1, 1)), 1)
    cls = torch.zeros(1, 2, 80)
    reg = torch.zeros(1, 2, 32)  # uniform over bins 0..7 → 3.5 strides each side
    assert m10.decode_boxes(HeadOutput(cls, reg), priors)[0].tolist() == [[-20, -28, 36, 28], [-160, -96, 288, 352]]
    reg = torch.full((1, 2, 32), -1e4)
    reg[..., [2, 8 + 0, 16 + 7, 24 + 5]] = 0.0  # l=2, t=0, r=7, b=5 bins
    assert m10.decode_boxes(HeadOutput(cls, reg), priors)[0].tolist() == [[-8, 0, 64, 40], [-64, 128, 512, 448]]


def test_predict_boxes_inside_each_image():
    model = build("1.0x").eval()
    with torch.no_grad():
        for conv in model.head.gfl_cls:  # make plenty of confident predictions
            conv.bias[:80] = torch.linspace(-3, 3, 80)
            conv.weight.normal_(0, 0.5)
    images = torch.randn(2, 3, 320, 320)
    metas = [ImageMeta(0, "a.jpg", (100, 140), (200, 280), [[2, 0, 0], [0, 2, 0], [0, 0, 1]]),
             ImageMeta(1, "b.jpg", (320, 320), (320, 320), [[1, 0, 0], [0, 1, 0], [0, 0, 1]])]
    dets = model.predict(images, metas, model.postprocess_cfg.replace(score_thr=0.05, iou_thr=0.6, max_det=100))
    assert len(dets) == 2
    for d, (h, w) in zip(dets, [(200, 280), (320, 320)]):
        assert len(d.scores) == 100
        assert d.boxes.min() >= 0
        assert d.boxes[:, [0, 2]].max() <= w and d.boxes[:, [1, 3]].max() <= h
        assert torch.all(d.scores[:-1] >= d.scores[1:]) and d.scores.min() > 0.05
        assert d.labels.dtype == torch.int64 and 0 <= d.labels.min() and d.labels.max() < 80
    assert dets[0].boxes[:, 2].max() == 280  # clamped to this image's own width, not the batch's


# ---------------------------------------------------------------- training graph
def _backbone_grads(model: NanoDetPlus) -> list[torch.Tensor | None]:
    return [p.grad for p in model.backbone.parameters()]


@pytest.mark.parametrize("detach", [False, True])
def test_agm_detach_cuts_gradient_to_shared_modules(detach):
    model = build("1.0x", num_classes=3)
    feats = model.backbone(torch.randn(1, 3, 128, 128))
    fpn_feats = model.fpn(feats)
    aux = model.agm_forward(feats, fpn_feats, detach=detach)
    assert aux.shape == (1, 256 + 64 + 16 + 4, 3 + 32)
    aux.square().sum().backward()
    reached = [g is not None and bool(g.abs().sum() > 0) for g in _backbone_grads(model)]
    reached_fpn = [p.grad is not None for p in model.fpn.parameters()]
    assert any(reached) != detach and any(reached_fpn) != detach
    assert all(p.grad is not None for p in model.aux_fpn.parameters())


def test_loss_runs_with_and_without_boxes():
    model = build("1.0x", num_classes=3, detach_epoch=1)
    images = torch.randn(2, 3, 128, 128)
    targets = [Target(torch.tensor([[10.0, 20.0, 90.0, 100.0]]), torch.tensor([2])),
               Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.int64))]
    losses = model.loss(images, targets, [], epoch=1)
    assert set(losses) == {"loss_qfl", "loss_bbox", "loss_dfl", "aux_loss_qfl", "aux_loss_bbox", "aux_loss_dfl"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    # epoch >= detach_epoch: the aux losses alone leave the backbone without gradient
    sum(v for k, v in losses.items() if k.startswith("aux_")).backward()
    assert all(g is None or not g.any() for g in _backbone_grads(model))


# ---------------------------------------------------------------- weights
def test_load_official_checkpoint_prefers_ema_and_strips_prefixes():
    src, dst = build("1.0x", num_classes=3), build("1.0x", num_classes=3)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    sd = src.state_dict()
    ckpt = {"state_dict": {**{f"model.{k}": torch.zeros_like(v) for k, v in sd.items()},
                           **{f"avg_model.{k}": v for k, v in sd.items()},
                           "avg_model.head.distribution_project.project": torch.linspace(0, 7, 8)}}
    assert dst.load_official_state_dict(ckpt) is True
    for k, v in dst.state_dict().items():
        assert torch.equal(v, sd[k]), k


def test_load_official_inference_only_checkpoint():
    src, dst = build("1.0x", num_classes=3), build("1.0x", num_classes=3)
    with torch.no_grad():
        for p in src.parameters():
            p.normal_()
    aux_before = {k: v.clone() for k, v in dst.aux_head.state_dict().items()}
    plain = {f"module.{k}": v for k, v in src.inference_state_dict().items()}
    assert dst.load_official_state_dict({"state_dict": plain}) is False
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.inference_state_dict().items())
    assert all(torch.equal(v, aux_before[k]) for k, v in dst.aux_head.state_dict().items())


def test_load_official_rejects_mismatch():
    src, dst = build("1.0x", num_classes=3), build("1.0x", num_classes=5)
    with pytest.raises(DetcliError, match="head.gfl_cls"):
        dst.load_official_state_dict({"state_dict": src.state_dict()})
    partial = {k: v for k, v in src.state_dict().items() if not k.startswith("head.")}
    with pytest.raises(DetcliError, match="missing"):
        build("1.0x", num_classes=3).load_official_state_dict(partial)
    half_agm = {k: v for k, v in src.state_dict().items() if not k.startswith("aux_head.")}
    with pytest.raises(DetcliError, match="missing, e.g. aux_head"):
        build("1.0x", num_classes=3).load_official_state_dict(half_agm)


def test_imagenet_weights_from_local_file(tmp_path, monkeypatch):
    from torchvision.models import shufflenet_v2_x1_0

    tv = shufflenet_v2_x1_0(weights=None)
    torch.save(tv.state_dict(), tmp_path / "x1.pth")
    model = build("1.0x", backbone_weights=str(tmp_path / "x1.pth"))
    assert "loaded ImageNet weights" in model.backbone_init_message
    tv_sd = tv.state_dict()
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, tv_sd[k]), k  # every backbone tensor comes from the file (conv5/fc skipped)

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    model = build("1.0x", backbone_weights="imagenet")
    assert model.backbone_init_message == (
        f"ImageNet weights not found at {tmp_path / 'empty_hub' / 'checkpoints' / 'shufflenetv2_x1-5666bf0f80.pth'}; "
        "backbone initialised randomly"
    )
    with pytest.raises(DetcliError, match="not found"):
        build("1.0x", backbone_weights=str(tmp_path / "missing.pth"))
