"""DeFCN's pieces on hand-made cases: POTO, the auxiliary assignment, 3D Max Filtering, losses, weights, counts."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detcli.assigners.poto import POTOAssigner, centre_sampling_boxes, matching_quality
from detcli.config.loader import load_preset
from detcli.losses.defcn_loss import defcn_loss, ltrb_giou_loss, probability_focal_loss
from detcli.models import build_model
from detcli.models.cvpods_keys import cvpods_to_detcli, msra_resnet_state_dict
from detcli.models.heads.max_filtering import MaxFiltering3D
from detcli.structures import Target


def grid_points(h: int, w: int, stride: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    xy = torch.stack([xs.flatten(), ys.flatten()], 1) * stride
    return torch.cat([xy, torch.full_like(xy, float(stride))], 1)


@pytest.fixture(scope="module")
def model():
    preset, _ = load_preset("defcn-r50-fpn")
    return build_model(preset, 80, pretrained=False).eval()


# ----------------------------------------------------------------------------- counts
def test_parameter_counts_equal_the_reference(model):
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert total == 32_834_842  # DeFCN POTO+3DMF(+Aux), FrozenBN affine excluded (buffers, as cvpods)
    assert trainable == 32_612_442  # FREEZE_AT=2: stem + res2 frozen
    assert sum(p.numel() for p in model.head.parameters()) == 5_511_258
    assert sum(p.numel() for p in model.neck.parameters()) == 3_868_672
    assert sum(p.numel() for p in model.backbone.parameters()) == 23_454_912


def test_caffe_style_stride_sits_in_the_first_1x1(model):
    for layer in (model.backbone.layer2, model.backbone.layer3, model.backbone.layer4):
        assert layer[0].conv1.stride == (2, 2) and layer[0].conv2.stride == (1, 1)


def test_fpn_p6_from_p5_and_relu_before_p7(model):
    neck = model.neck
    assert neck.fpn_convs[3].conv.in_channels == 256  # from P5, not C5 (2048)
    feats = [torch.randn(1, c, s, s) for c, s in zip((512, 1024, 2048), (8, 4, 2))]
    outs = neck(feats)
    p7 = neck.fpn_convs[4](torch.relu(outs[3]))
    torch.testing.assert_close(outs[4], p7)
    torch.testing.assert_close(outs[3], neck.fpn_convs[3](outs[2]))


def test_priors_sit_at_half_stride(model):
    priors = model.priors((64, 96))
    assert priors.points[0, :2].tolist() == [4.0, 4.0] and priors.points[1, :2].tolist() == [12.0, 4.0]
    first_p4 = priors.level_counts[0]
    assert priors.points[first_p4].tolist() == [8.0, 8.0, 16.0, 16.0]


# ----------------------------------------------------------------------------- 3D Max Filtering
def test_max_filtering_shapes_at_the_boundary_levels():
    mf = MaxFiltering3D(32, 3, 2).eval()
    sizes = [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    feats = [torch.randn(2, 32, h, w) for h, w in sizes]
    outs = mf(feats)
    assert [tuple(o.shape) for o in outs] == [(2, 32, h, w) for h, w in sizes]
    assert all(bool((o >= 0).all()) for o in outs)  # ReLU last


def test_max_filtering_takes_the_max_over_levels_and_space():
    """Identity conv, no norm: level l = ReLU(3×3 max over levels l-1..l+1 + its input); boundary levels see 2."""
    mf = MaxFiltering3D(32, 3, 2, use_norm=False)
    with torch.no_grad():
        mf.conv.weight.zero_()
        mf.conv.bias.zero_()
        for c in range(32):
            mf.conv.weight[c, c, 1, 1] = 1.0
    feats = [torch.randn(1, 32, 4, 4) for _ in range(3)]  # equal sizes: the resize is the identity
    out = mf(feats)

    def window_max(levels):
        return torch.nn.functional.max_pool2d(torch.stack(levels, 0).amax(0), 3, 1, 1)

    torch.testing.assert_close(out[1], torch.relu(window_max(feats) + feats[1]))
    torch.testing.assert_close(out[0], torch.relu(window_max(feats[:2]) + feats[0]))
    torch.testing.assert_close(out[2], torch.relu(window_max(feats[1:]) + feats[2]))


# ----------------------------------------------------------------------------- POTO
def test_centre_sampling_box_is_clipped_to_the_gt():
    gt = torch.tensor([[0.0, 0.0, 10.0, 100.0]])
    region = centre_sampling_boxes(gt, torch.tensor([8.0]), 1.5)[0, 0]
    assert region.tolist() == [0.0, 38.0, 10.0, 62.0]  # x clipped to the box, y centre 50 ± 12


def test_poto_gives_every_gt_exactly_one_positive():
    points = grid_points(8, 8, 8)  # 64 points on one level, input 64 × 64
    gts = torch.tensor([[4.0, 4.0, 30.0, 30.0], [10.0, 10.0, 34.0, 34.0], [40.0, 40.0, 60.0, 62.0]])
    labels = torch.tensor([1, 1, 3])
    n = points.shape[0]
    probs = torch.full((1, n, 5), 0.1)
    # predicted boxes: each point predicts a 24-px box around itself
    boxes = torch.cat([points[:, :2] - 12, points[:, :2] + 12], 1)[None]
    res = POTOAssigner(0.8, 1.5, 9).assign(probs, probs, boxes, points, [n], [gts], [labels])
    pos = res.gt_inds[0] > 0
    assert int(pos.sum()) == 3 and sorted(res.gt_inds[0][pos].tolist()) == [1, 2, 3]
    assert torch.equal(res.labels[0][pos], labels[res.gt_inds[0][pos] - 1])
    assert not res.ignore_mask.any()  # nothing ignored
    # the positives maximise the total quality: brute force over the candidates agrees
    q = matching_quality(probs[0][:, labels].t(), _iou(gts, boxes[0]), 0.8)
    chosen = [int(torch.nonzero(res.gt_inds[0] == g + 1)) for g in range(3)]
    cand = POTOAssigner().candidates(points, gts)
    best = max(
        (float(q[0, a] + q[1, b] + q[2, c]), (a, b, c))
        for a in torch.nonzero(cand[0]).flatten().tolist()
        for b in torch.nonzero(cand[1]).flatten().tolist()
        for c in torch.nonzero(cand[2]).flatten().tolist() if len({a, b, c}) == 3
    )
    assert abs(best[0] - sum(float(q[g, p]) for g, p in enumerate(chosen))) < 1e-6


def _iou(gts: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    from detcli.geometry.iou import pairwise_iou

    return pairwise_iou(gts, boxes, nan=0.0)


def test_a_gt_without_a_candidate_point_still_gets_one():
    """A 3-px box between the stride-8 points (pitfall 14): no candidate, Q = -1 everywhere, still matched."""
    points = grid_points(4, 4, 8)
    gts = torch.tensor([[9.0, 9.0, 11.0, 11.0], [0.0, 0.0, 32.0, 32.0]])
    assigner = POTOAssigner()
    assert not assigner.candidates(points, gts)[0].any()
    boxes = torch.cat([points[:, :2] - 4, points[:, :2] + 4], 1)[None]
    probs = torch.full((1, 16, 2), 0.3)
    res = assigner.assign(probs, None, boxes, points, [16], [gts], [torch.tensor([0, 1])])
    assert sorted(res.gt_inds[0][res.gt_inds[0] > 0].tolist()) == [1, 2] and res.auxiliary is None


def test_auxiliary_assignment_is_one_to_many_inside_the_box():
    points = grid_points(8, 8, 8)
    gt = torch.tensor([[8.0, 8.0, 56.0, 56.0]])
    boxes = torch.cat([points[:, :2] - 20, points[:, :2] + 20], 1)[None]
    probs = torch.full((1, 64, 2), 0.2)
    res = POTOAssigner(aux_topk=9).assign(probs, probs, boxes, points, [64], [gt], [torch.tensor([1])])
    aux = res.auxiliary
    assert int((res.gt_inds > 0).sum()) == 1 and int((aux.gt_inds > 0).sum()) > 1
    inside = ((points[:, 0] > 8) & (points[:, 0] < 56) & (points[:, 1] > 8) & (points[:, 1] < 56))
    assert bool(inside[aux.gt_inds[0] > 0].all()) and int((aux.gt_inds > 0).sum()) <= 9
    assert torch.all(aux.labels[aux.gt_inds > 0] == 1)


def test_images_without_gts_are_all_background():
    points = grid_points(4, 4, 8)
    probs = torch.rand(1, 16, 3)
    boxes = torch.cat([points[:, :2] - 4, points[:, :2] + 4], 1)[None]
    res = POTOAssigner().assign(probs, probs, boxes, points, [16], [torch.zeros(0, 4)],
                                [torch.zeros(0, dtype=torch.long)])
    assert not (res.gt_inds != 0).any() and not (res.auxiliary.gt_inds != 0).any()


# ----------------------------------------------------------------------------- losses
def test_probability_focal_loss_by_hand():
    p, t = torch.tensor([[0.9, 0.2]]), torch.tensor([[1.0, 0.0]])
    expected = 0.25 * 0.1 ** 2 * -torch.log(torch.tensor(0.9)) + 0.75 * 0.2 ** 2 * -torch.log(torch.tensor(0.8))
    torch.testing.assert_close(probability_focal_loss(p, t), expected)
    # p = 0 and 1 stay finite (BCE's log is clamped at -100)
    assert torch.isfinite(probability_focal_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([[1.0, 0.0]])))


def test_ltrb_giou_loss_by_hand():
    same = torch.tensor([[2.0, 3.0, 4.0, 5.0]])
    assert float(ltrb_giou_loss(same, same)) == pytest.approx(0.0, abs=1e-6)
    # pred (-1,-1,1,1) vs target (0,0,2,2) around the point: IoU 1/7, enclosing 9, union 7 → GIoU 1/7 - 2/9
    pred, target = torch.tensor([[1.0, 1.0, 1.0, 1.0]]), torch.tensor([[0.0, 0.0, 2.0, 2.0]])
    assert float(ltrb_giou_loss(pred, target)) == pytest.approx(1 - (1 / 7 - 2 / 9), rel=1e-6)


def test_loss_in_fp32_under_autocast(model):
    images = torch.randn(1, 3, 128, 128)
    targets = [Target(torch.tensor([[10.0, 20.0, 90.0, 100.0]]), torch.tensor([4]))]
    model.train()
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            losses = model.loss(images, targets, [], 0)
    finally:
        model.eval()
    assert set(losses) == {"loss_cls", "loss_box_reg", "loss_cls_aux"}
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())


def test_loss_normalises_by_the_positives():
    """Doubling the batch with the same image keeps every loss (normalised by the positives)."""
    from detcli.assigners.assignment import Assignment

    cls, flt = torch.randn(1, 4, 3), torch.randn(1, 4, 1)
    dist, target = torch.rand(1, 4, 4) + 1, torch.rand(1, 4, 4) + 1
    a = Assignment(torch.tensor([[1, 0, 0, 0]]), torch.tensor([[2, -1, -1, -1]]), torch.zeros(1, 4),
                   Assignment(torch.tensor([[1, 1, 0, 0]]), torch.tensor([[2, 2, -1, -1]]), torch.zeros(1, 4)))
    one = defcn_loss(cls, flt, dist, target, a)
    two = defcn_loss(cls.repeat(2, 1, 1), flt.repeat(2, 1, 1), dist.repeat(2, 1, 1), target.repeat(2, 1, 1),
                     Assignment(*(t.repeat(2, 1) for t in a[:3]), Assignment(*(t.repeat(2, 1) for t in a.auxiliary[:3]))))
    for k in one:
        torch.testing.assert_close(one[k], two[k])


# ----------------------------------------------------------------------------- weights
def test_cvpods_key_names_map_onto_the_model(model):
    names = {
        "backbone.bottom_up.stem.conv1.weight": "backbone.conv1.weight",
        "backbone.bottom_up.stem.conv1.norm.running_var": "backbone.bn1.running_var",
        "backbone.bottom_up.res2.0.shortcut.weight": "backbone.layer1.0.downsample.0.weight",
        "backbone.bottom_up.res2.0.shortcut.norm.bias": "backbone.layer1.0.downsample.1.bias",
        "backbone.bottom_up.res5.2.conv3.norm.weight": "backbone.layer4.2.bn3.weight",
        "backbone.bottom_up.res3.1.conv2.weight": "backbone.layer2.1.conv2.weight",
        "backbone.fpn_lateral3.weight": "neck.lateral_convs.0.conv.weight",
        "backbone.fpn_output5.bias": "neck.fpn_convs.2.conv.bias",
        "backbone.top_block.p6.weight": "neck.fpn_convs.3.conv.weight",
        "backbone.top_block.p7.bias": "neck.fpn_convs.4.conv.bias",
        "head.max3d.conv.weight": "head.max3d.conv.weight",
        "head.scales.4.scale": "head.scales.4.scale",
    }
    mapped = cvpods_to_detcli({k: torch.zeros(1) for k in names})
    assert set(mapped) == set(names.values())
    assert set(names.values()) <= set(model.state_dict())


def test_msra_blobs_become_torchvision_resnet_keys():
    import numpy as np

    blobs = {"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "res_conv1_bn_s": np.ones(64, np.float32),
             "res_conv1_bn_b": np.zeros(64, np.float32), "res2_0_branch1_w": np.zeros((256, 64, 1, 1), np.float32),
             "res2_0_branch2a_bn_s": np.ones(64, np.float32), "res2_0_branch2a_bn_b": np.zeros(64, np.float32),
             "fc1000_w": np.zeros((1000, 2048), np.float32)}
    state = msra_resnet_state_dict(blobs)
    assert set(state) == {"conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var",
                          "layer1.0.downsample.0.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias",
                          "layer1.0.bn1.running_mean", "layer1.0.bn1.running_var"}
    # running_var + eps = 1: the FrozenBN scale is exactly the file's
    torch.testing.assert_close(state["bn1.running_var"] + 1e-5, torch.ones(64))


def test_missing_msra_file_is_said(tmp_path, monkeypatch):
    from detcli.models.backbones.resnet import ResNet

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    message = ResNet(50, 1, True, "caffe", "frozen_bn").load_imagenet("imagenet")
    assert message is not None and "R-50.pkl" in message and "randomly" in message


def test_nms_free_by_default_and_nms_on_request(model):
    assert model.postprocess_cfg.nms == "none" and model.postprocess_cfg.nms_pre == 1000
    preset, _ = load_preset("defcn-r50-fpn", overrides=["test.nms=class_aware"])
    assert build_model(preset, 80, pretrained=False).postprocess_cfg.nms == "class_aware"


def test_bn_free_heads_only(model):
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


# ----------------------------------------------------------------------------- model.norm (cvpods MODEL.RESNETS.NORM)
def test_random_frozen_bn_backbone_points_to_norm_bn(tmp_path, monkeypatch):
    from detcli.config.schema import DeFCNConfig
    from detcli.models.detectors.defcn import DeFCN

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    def message(norm: str) -> str | None:
        return DeFCN.from_config(DeFCNConfig(type="defcn", norm=norm), 5, backbone_weights="imagenet").backbone_init_message

    assert message("frozen_bn") is not None and "randomly" in message("frozen_bn") and "model.norm=bn" in message("frozen_bn")
    assert message("bn").endswith("initialised randomly")


def test_norm_bn_trains_batch_statistics_outside_the_frozen_stages():
    preset, _ = load_preset("defcn-r50-fpn", overrides=["model.norm=bn"])
    net = build_model(preset, 80, pretrained=False).train()
    bns = {name: m for name, m in net.backbone.named_modules() if isinstance(m, nn.BatchNorm2d)}
    assert len(bns) == 53 and not any(isinstance(m, FrozenBatchNorm2d) for m in net.backbone.modules())
    frozen = [n for n in bns if n == "bn1" or n.startswith("layer1.")]
    assert len(frozen) == 1 + 3 * 3 + 1  # stem + res2 (3 bottlenecks × 3 BN + the downsample BN)
    assert all(not bns[n].training for n in frozen) and all(bns[n].training for n in bns if n not in frozen)
    # trainable = the reference's 32,612,442 + the BN affine of res3–res5 (FrozenBN keeps it in buffers)
    affine = sum(2 * bns[n].num_features for n in bns if n not in frozen)
    trainable = sum(p.numel() for p in net.parameters() if p.requires_grad)
    assert affine == 2 * (4 * (128 + 128 + 512) + 512 + 6 * (256 + 256 + 1024) + 1024 + 3 * (512 + 512 + 2048) + 2048)
    assert trainable == 32_612_442 + affine
    before = bns["layer3.0.bn1"].running_mean.clone()
    images = torch.randn(2, 3, 64, 64)
    targets = [Target(torch.tensor([[8.0, 8.0, 40.0, 48.0]]), torch.tensor([1])) for _ in range(2)]
    metas = [None, None]
    sum(net.loss(images, targets, metas).values()).backward()
    assert not torch.equal(bns["layer3.0.bn1"].running_mean, before)  # batch statistics, not frozen ones
    assert bns["bn1"].weight.grad is None and bns["layer3.0.bn1"].weight.grad is not None


def test_unknown_norm_names_the_field():
    from detcli.errors import PresetError

    with pytest.raises(PresetError, match="model.norm"):
        load_preset("defcn-r50-fpn", overrides=["model.norm=gn"])
