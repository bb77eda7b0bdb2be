"""RTMDet architecture: sizes, costs, layer facts, key names, decoding, weight files.

Expected numbers are the official ones: the RTMDet README's Params / FLOPs columns (shared/reference
nanodet_plus_rtmdet.md B1: 4,896k / 8,887k / 24,709k / 52,316k / 94,856k parameters, BN included, shared head
convs once; conv MACs at 640 8.04 / 14.76 / 39.07 / 79.90 / 141.19 G, README 8.1 / 14.8 / 39.27 / 80.23 / 141.67
with the few non-conv ops), and the key names of MMDetection's own state dict (stored in tests/golden/rtmdet-*.json
by benchmarks/fixtures/make_golden_fixtures.py). Sizes and costs are counted on the meta device (no memory, no compute).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from detcli.config.loader import load_preset
from detcli.engine.ema import ModelEMA
from detcli.errors import DetcliError
from detcli.inference.loading import load_for_inference
from detcli.models import assigner_name, build_model, strides_of
from detcli.models.backbones.csp_blocks import ChannelAttention, CSPLayer
from detcli.models.backbones.cspnext import CSPNeXt, load_imagenet_weights
from detcli.models.complexity import conv_macs, reported_gflops, total_params
from detcli.models.detectors.rtmdet import RTMDet
from detcli.structures import HeadOutput
from detcli.structures import ImageMeta, Target

torch.set_num_threads(1)

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
VARIANTS = ["tiny", "s", "m", "l", "x"]
# (total, backbone, neck, head) parameters with 80 classes; README "Params (M)"; conv MACs at 640, README "FLOPs"
PARAMS = {
    "tiny": (4_896_168, 2_348_700, 2_188_944, 358_524),
    "s": (8_886_924, 4_378_320, 3_883_200, 625_404),
    "m": (24_709_188, 12_279_432, 11_049_408, 1_380_348),
    "l": (52_315_804, 26_138_912, 23_746_688, 2_430_204),
    "x": (94_855_572, 47_569_560, 43_511_040, 3_774_972),
}
REFERENCE_K = {"tiny": 4896, "s": 8887, "m": 24709, "l": 52316, "x": 94856}  # reference sheet B1, thousands
MACS = {"tiny": 8_036_087_040, "s": 14_760_693_760, "m": 39_066_485_760, "l": 79_898_787_840, "x": 141_189_760_000}
REFERENCE_GMACS = {"tiny": 8.04, "s": 14.76, "m": 39.07, "l": 79.90, "x": 141.19}


def build(variant: str, num_classes: int = 80, device: str = "cpu", overrides: tuple[str, ...] = ()) -> RTMDet:
    preset, _ = load_preset(f"rtmdet-{variant}", [f"model.num_classes={num_classes}", *overrides])
    torch.manual_seed(0)
    with torch.device(device):
        return build_model(preset, pretrained=False).eval()


@pytest.fixture(scope="module")
def tiny() -> RTMDet:
    return build("tiny")


# ---------------------------------------------------------------- sizes and costs
@pytest.mark.parametrize("variant", VARIANTS)
def test_parameter_counts_match_the_readme(variant):
    model = build(variant, device="meta")
    total, backbone, neck, head = PARAMS[variant]
    assert (total_params(model.backbone), total_params(model.neck), total_params(model.bbox_head)) == (
        backbone, neck, head)
    assert total_params(model) == total == backbone + neck + head  # shared head convs counted once
    assert round(total / 1000) == REFERENCE_K[variant]


def test_head_shares_its_tower_convs_and_counts_them_once():
    """RTMDet-l head (reference B2): shared convs 4 × 256·256·9, BN 3 levels × 4 × 512, preds 3 × (20,560 + 1,028)."""
    head = build("l", device="meta").bbox_head
    assert total_params(head) == 4 * 256 * 256 * 9 + 3 * 4 * 512 + 3 * (256 * 80 + 80 + 256 * 4 + 4) == 2_430_204
    for towers in (head.cls_convs, head.reg_convs):
        for level in (1, 2):
            for i in (0, 1):
                assert towers[level][i].conv is towers[0][i].conv  # one conv module
                assert towers[level][i].bn is not towers[0][i].bn  # its own BN
    keys = head.state_dict().keys()  # MMDetection's state dict lists the shared weight under every level
    assert {f"cls_convs.{n}.{i}.conv.weight" for n in range(3) for i in range(2)} <= keys
    assert not any(hasattr(m, "scale") for m in head.modules())  # no Scale in the SepBN head


@pytest.mark.parametrize("variant", VARIANTS)
def test_macs_at_640_as_the_readme_counts(variant):
    model = build(variant, device="meta")
    macs = conv_macs(model, 640)
    assert macs == MACS[variant] and round(macs / 1e9, 2) == REFERENCE_GMACS[variant]
    assert reported_gflops(model, 640) == (macs / 1e9, "MACs, as MMDetection counts")


def test_model_summary_labels_rtmdet_flops_as_macs():
    from detcli.models.summary import model_summary

    class Recorder:
        def key_values(self, title, items):
            self.items = items

    rows = {}
    for name in ("rtmdet-tiny", "nanodet-plus-m"):
        preset, _ = load_preset(name)
        reporter = Recorder()
        model_summary(reporter, preset, build_model(preset, 80, pretrained=False), (64, 64))
        rows[name] = reporter.items
    macs = conv_macs(build("tiny", device="meta"), 64)
    assert rows["rtmdet-tiny"]["GFLOPs"] == f"{macs / 1e9:.2f} G (MACs, as MMDetection counts) at 64×64"
    assert rows["rtmdet-tiny"]["parameters (inference graph)"] == f"{PARAMS['tiny'][0]:,} (as MMDetection counts)"
    assert rows["nanodet-plus-m"]["GFLOPs"].endswith(" G (2×MACs) at 64×64")  # NanoDet's README convention
    assert rows["rtmdet-tiny"]["strides"] == "8, 16, 32"
    assert rows["rtmdet-tiny"]["assigner"].startswith("DynamicSoftLabelAssigner(topk=13, iou_factor=3.0, "
                                                      "soft_center_radius=3.0)")


# ---------------------------------------------------------------- layer facts
def test_batchnorm_and_activation_settings(tiny):
    """SyncBN defaults of the COCO configs (momentum 0.1, eps 1e-5), not the code defaults 0.03 / 1e-3; SiLU."""
    bns = [m for m in tiny.modules() if isinstance(m, nn.BatchNorm2d)]
    assert bns and all(bn.momentum == 0.1 and bn.eps == 1e-5 for bn in bns)
    acts = {type(m) for m in tiny.modules() if isinstance(m, (nn.SiLU, nn.ReLU, nn.LeakyReLU, nn.Hardsigmoid))}
    assert acts == {nn.SiLU, nn.Hardsigmoid}
    assert all(isinstance(m.act, nn.Hardsigmoid) for m in tiny.modules() if isinstance(m, ChannelAttention))


def test_cspnext_layout(tiny):
    b = tiny.backbone
    assert [m.conv.stride for m in b.stem] == [(2, 2), (1, 1), (1, 1)]
    assert [m.conv.out_channels for m in b.stem] == [12, 12, 24]
    assert b.out_channels == (96, 192, 384)
    csp = [getattr(b, f"stage{i}")[-1] for i in range(1, 5)]
    assert all(isinstance(c, CSPLayer) and isinstance(c.attention, ChannelAttention) for c in csp)
    assert [blk.add_identity for c in csp for blk in c.blocks] == [True, True, True, False]  # no residual in stage 4
    assert type(b.stage4[1]).__name__ == "SPPBottleneck" and len(b.stage3) == 2
    block = csp[0].blocks[0]
    assert block.conv1.conv.kernel_size == (3, 3)
    assert block.conv2.depthwise_conv.conv.kernel_size == (5, 5) and block.conv2.depthwise_conv.conv.groups == 24
    assert csp[0].attention.fc.bias is not None and csp[0].attention.fc.kernel_size == (1, 1)
    for c in [*tiny.neck.top_down_blocks, *tiny.neck.bottom_up_blocks]:  # neck: no attention, no residual
        assert c.attention is None and not any(blk.add_identity for blk in c.blocks)
    # block counts: max(round(n · deepen), 1)
    assert [len(getattr(build("x", device="meta").backbone, f"stage{i}")[-1].blocks) for i in range(1, 5)] == [
        4, 8, 8, 4]


def test_official_init(tiny):
    """Backbone and neck convs Kaiming uniform (a=√5, fan_in: bound 1/√fan_in), biases 0 (CSPNeXt init_cfg);
    head convs N(0, 0.01²), cls bias -4.595 (RTMDetSepBNHead.init_weights)."""
    model = build("l")
    conv = model.backbone.stage3[1].final_conv.conv.weight.detach()
    bound = 1 / math.sqrt(conv[0].numel())
    assert float(conv.abs().max()) <= bound and float(conv.std()) == pytest.approx(bound / math.sqrt(3), rel=0.02)
    assert not model.backbone.stage1[1].attention.fc.bias.any()
    neck = model.neck.out_convs[0].conv.weight.detach()
    assert float(neck.std()) == pytest.approx(1 / math.sqrt(3 * neck[0].numel()), rel=0.02)
    head = model.bbox_head
    assert float(head.cls_convs[0][0].conv.weight.detach().std()) == pytest.approx(0.01, rel=0.02)
    assert torch.all(head.rtm_cls[2].bias == -4.595) and not head.rtm_reg[0].bias.any()


@pytest.mark.parametrize("variant, exp", [("s", False), ("m", True)])
def test_distances_are_pixels_exp_for_m_l_x(variant, exp):
    """rtm_reg output r → distance r · stride (tiny/s) or exp(r) · stride (m/l/x), then (x - l, y - t, x + r, y + b)."""
    model = build(variant, num_classes=3)
    with torch.no_grad():
        for conv in model.bbox_head.rtm_reg:
            conv.weight.zero_()
            conv.bias.copy_(torch.tensor([1.0, 2.0, 0.5, math.log(3.0)]))
    out = model(torch.randn(1, 3, 64, 96))
    priors = model.priors((64, 96))
    sides = torch.tensor([1.0, 2.0, 0.5, math.log(3.0)])
    expected = (sides.exp() if exp else sides)[None] * priors.points[:, 2:3]
    torch.testing.assert_close(out.bbox_reg[0], expected)
    x, y = priors.points[:, 0], priors.points[:, 1]
    d = expected
    torch.testing.assert_close(model.decode_boxes(out, priors)[0], torch.stack([x - d[:, 0], y - d[:, 1],
                                                                                 x + d[:, 2], y + d[:, 3]], 1))


def test_priors_offset_zero_and_8400_at_640(tiny):
    priors = tiny.priors((640, 640))
    assert priors.num == 8400 and priors.level_sizes == ((80, 80), (40, 40), (20, 20))
    assert priors.points[:3].tolist() == [[0, 0, 8, 8], [8, 0, 8, 8], [16, 0, 8, 8]]
    assert tiny.priors((96, 100)).level_sizes == ((12, 13), (6, 7), (3, 4))  # ⌈H/s⌉
    out = tiny(torch.zeros(1, 3, 96, 128))
    assert out.cls_logits.shape == (1, tiny.priors((96, 128)).num, 80) and out.bbox_reg.shape[-1] == 4


def test_preset_reaches_every_model_setting():
    model = build("tiny", 3, overrides=("model.assigner.soft_center_radius=2.5", "model.assigner.topk=9",
                                        "model.loss.giou_weight=1.5", "test.score_thr=0.3"))
    assert (model.assigner.soft_center_radius, model.assigner.topk, model.assigner.iou_factor) == (2.5, 9, 3.0)
    assert model.loss_settings == {"qfl_weight": 1.0, "giou_weight": 1.5, "qfl_beta": 2.0}
    cfg = model.postprocess_cfg
    assert (cfg.score_thr, cfg.iou_thr, cfg.max_det, cfg.nms_pre, cfg.min_bbox_size) == (0.3, 0.65, 300, 30000, 0)
    preset, _ = load_preset("rtmdet-m")
    assert strides_of(preset) == [8, 16, 32] and "soft_center_radius=3.0" in assigner_name(preset)
    assert preset.model.exp_on_reg and not load_preset("rtmdet-s")[0].model.exp_on_reg


# ---------------------------------------------------------------- key names and weight files
@pytest.mark.parametrize("variant", VARIANTS)
def test_state_dict_keys_are_mmdetections(variant):
    """Key names, order and shapes of MMDetection's own state dict (80 classes), shared convs under every level."""
    spec = json.loads((GOLDEN / f"rtmdet-{variant}.json").read_text())["spec"]
    own = build(variant, device="meta").state_dict()
    assert [[k, list(v.shape)] for k, v in own.items()] == spec


def mmdet_checkpoint(model: RTMDet, classes: list[str], **extra) -> dict:
    return {"meta": {"mmdet_version": "3.3.0", "dataset_meta": {"classes": classes}},
            "state_dict": {k: v.clone() for k, v in model.state_dict().items()}, **extra}


def test_mmdet_checkpoint_loads_with_its_classes(tmp_path):
    source = build("tiny", 3)
    with torch.no_grad():
        for p in source.parameters():
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.01)
    path = tmp_path / "rtmdet_tiny.pth"
    torch.save(mmdet_checkpoint(source, ["cat", "dog", "bird"]), path)
    loaded = load_for_inference(path, "rtmdet-tiny", [], torch.device("cpu"))
    assert loaded.official and loaded.class_names == ["cat", "dog", "bird"] and loaded.model.num_classes == 3
    own = loaded.model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in source.state_dict().items())
    head = loaded.model.bbox_head
    assert head.cls_convs[2][1].conv is head.cls_convs[0][1].conv  # still shared after loading


def test_mmengine_ema_checkpoint_gives_the_ema_weights(tmp_path):
    """MMEngine's EMAHook saves the averaged weights in ``state_dict`` and the raw ones in ``ema_state_dict``
    (``module.`` keys, ``steps``); mmcv 1.x ``ema_*`` buffers in the state dict are dropped; ``module.`` stripped."""
    ema, raw = build("tiny", 80), build("tiny", 80)
    with torch.no_grad():
        for p in raw.parameters():
            p.add_(1.0)
    ckpt = mmdet_checkpoint(ema, [f"c{i}" for i in range(80)])
    ckpt["ema_state_dict"] = {"steps": torch.tensor(1000), **{f"module.{k}": v for k, v in raw.state_dict().items()}}
    ckpt["state_dict"] = {f"module.{k}": v for k, v in ckpt["state_dict"].items()}
    ckpt["state_dict"]["ema_backbone_stem_0_conv_weight"] = raw.backbone.stem[0].conv.weight.detach().clone()
    path = tmp_path / "epoch_300.pth"
    torch.save(ckpt, path)
    model = load_for_inference(path, "rtmdet-tiny", [], torch.device("cpu")).model
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in ema.state_dict().items())


def test_mmdet_checkpoint_mismatches_are_explained(tmp_path):
    state = build("tiny", 80).state_dict()
    path = tmp_path / "s.pth"
    torch.save({"state_dict": state}, path)
    with pytest.raises(DetcliError, match="another preset or size"):
        load_for_inference(path, "rtmdet-s", [], torch.device("cpu"))
    unshared = {k: v.clone() for k, v in state.items()}
    unshared["bbox_head.reg_convs.1.0.conv.weight"] += 1
    torch.save({"state_dict": unshared}, path)
    with pytest.raises(DetcliError, match="shares its tower convs"):
        load_for_inference(path, "rtmdet-tiny", [], torch.device("cpu"))
    torch.save({"state_dict": build("tiny", 5).state_dict()}, path)
    with pytest.raises(DetcliError, match="weights are for 5 classes"):
        load_for_inference(path, "rtmdet-tiny", ["model.num_classes=80"], torch.device("cpu"))


def test_cspnext_imagenet_weights_from_a_local_file(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    backbone = CSPNeXt(0.167, 0.375)
    message = load_imagenet_weights(backbone, "imagenet")
    assert message == (f"ImageNet weights not found at {tmp_path}/hub/checkpoints/cspnext-tiny_imagenet_600e.pth; "
                       "backbone initialised randomly")
    assert "train from scratch" in load_imagenet_weights(CSPNeXt(1.0, 1.0), "imagenet")
    with pytest.raises(DetcliError, match="backbone weights file not found"):
        load_imagenet_weights(backbone, str(tmp_path / "missing.pth"))
    # an mmpretrain-style file: backbone.* under MMDetection names plus the classifier head
    source = CSPNeXt(0.167, 0.375)
    with torch.no_grad():
        for p in source.parameters():
            p.normal_()
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    state["head.fc.weight"] = torch.zeros(1000, 384)
    file = tmp_path / "hub" / "checkpoints" / "cspnext-tiny_imagenet_600e.pth"
    file.parent.mkdir(parents=True)
    torch.save({"meta": {}, "state_dict": state}, file)
    assert load_imagenet_weights(backbone, "imagenet").startswith("loaded ImageNet weights for CSPNeXt")
    assert all(torch.equal(backbone.state_dict()[k], v) for k, v in source.state_dict().items())
    model = build_model(load_preset("rtmdet-tiny", ["model.num_classes=3"])[0])  # the preset's "imagenet"
    assert model.backbone_init_message.startswith("loaded ImageNet weights")
    with pytest.raises(DetcliError, match="not a CSPNeXt checkpoint of widen_factor 0.5"):
        load_imagenet_weights(CSPNeXt(0.33, 0.5), str(file))


# ---------------------------------------------------------------- training-side pieces
def test_every_parameter_gets_a_gradient_and_losses_are_finite(tiny):
    """``ddp_find_unused_parameters = False`` holds: one step reaches every parameter (the shared convs from
    all three levels)."""
    model = build("tiny", 3).train()
    images = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    targets = [Target(torch.tensor([[4.0, 6.0, 40.0, 50.0], [30.0, 10.0, 90.0, 60.0]]), torch.tensor([0, 2])),
               Target(torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))]
    metas = [ImageMeta(i, f"{i}.jpg", (64, 96), (64, 96), np.eye(3).tolist()) for i in range(2)]
    losses = model.loss(images, targets, metas, epoch=0)
    assert set(losses) == {"loss_cls", "loss_bbox"} and all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_ema_averages_a_shared_conv_once(tiny):
    model = build("tiny", 3)
    ema = ModelEMA(model, decay=0.9998, gamma=2000)
    shared = ema.module.bbox_head.cls_convs[0][0].conv.weight
    assert ema.module.bbox_head.cls_convs[2][0].conv.weight is shared
    before = shared.detach().clone()
    with torch.no_grad():
        model.bbox_head.cls_convs[0][0].conv.weight.add_(1.0)
    d = ema.update(model)
    torch.testing.assert_close(shared, before * (1 - d) + (before + 1.0) * d)


def test_fit_advice_suggests_a_larger_input(tiny):
    priors = tiny.priors((64, 64))
    fit = tiny.prior_fit(priors, torch.tensor([[1.0, 1.0, 5.0, 5.0], [2.0, 2.0, 60.0, 60.0]]))
    assert fit.fits.tolist() == [False, True] and fit.reason.tolist()[0] == 1  # smaller than the stride
    assert math.isinf(fit.measure[0]) and fit.measure[1] == 0  # no range limit: every prior inside reaches
    advice = tiny.fit_advice(torch.tensor([[4.0, 4.0]]), fit.reason[:1])
    assert advice.startswith("a larger input: --imgsz or --set input.size=[w,h] about 2.0x")
    assert tiny.fit_advice(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long)) == "nothing to change"
    assert "no range limit" in tiny.prior_fit_rule and "own predictions" in tiny.assignment_predictions
    # the inspection pass: the head's own output is what assignment looks at
    assert isinstance(tiny.assignment_outputs(torch.zeros(1, 3, 64, 64)), HeadOutput)
