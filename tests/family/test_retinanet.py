"""RetinaNet model: sizes, freezing, a CPU train step, the loss on a closed-form case, predict, checkpoints."""
import numpy as np
import pytest
import torch
import torchvision
from torchvision.ops import batched_nms

from detcli.config import schema
from detcli.errors import DetcliError
from detcli.models.detectors.retinanet import RetinaNet
from detcli.structures import ImageMeta, Target

torch.set_num_threads(1)


def retinanet(num_classes: int, depth: int = 18, nms_pre: int | None = None,
              backbone_weights: str | None = None) -> RetinaNet:
    """A RetinaNet of the preset schema's defaults (MMDetection's), less what the test gives."""
    return RetinaNet.from_config(schema.RetinaNetConfig(type="retinanet", depth=depth), num_classes,
                                 test=schema.TestConfig(nms_pre=nms_pre), backbone_weights=backbone_weights)


def meta(i: int, h: int, w: int) -> ImageMeta:
    return ImageMeta(i, f"{i}.jpg", (h, w), (h, w), np.eye(3).tolist())


def count(model: torch.nn.Module) -> tuple[int, int]:
    params = list(model.parameters())
    return sum(p.numel() for p in params), sum(p.numel() for p in params if p.requires_grad)


@pytest.fixture(scope="module")
def r18() -> RetinaNet:
    torch.manual_seed(0)
    return retinanet(3, depth=18)


def test_parameter_counts_match_mmdetection():
    assert count(retinanet(80, depth=50)) == (37_968_692, 37_743_348)
    assert count(retinanet(80, depth=18)) == (21_410_100, 21_252_596)


def test_state_dict_keys_are_mmdetection_keys(r18):
    keys = set(r18.state_dict())
    for k in (
        "backbone.conv1.weight",
        "backbone.layer1.0.conv1.weight",
        "backbone.layer4.1.bn2.running_var",
        "neck.lateral_convs.0.conv.weight",
        "neck.fpn_convs.3.conv.weight",
        "neck.fpn_convs.4.conv.bias",
        "bbox_head.cls_convs.0.conv.weight",
        "bbox_head.reg_convs.3.conv.bias",
        "bbox_head.retina_cls.weight",
        "bbox_head.retina_reg.bias",
    ):
        assert k in keys, k
    assert not any(k.startswith("backbone.fc") for k in keys)
    assert r18.neck.fpn_convs[3].conv.in_channels == 512  # P6 from C5 ('on_input')
    assert r18.bbox_head.retina_cls.bias.mean().item() == pytest.approx(-4.59512, abs=1e-5)


def test_frozen_stages_and_norm_eval(r18):
    r18.train()
    bb = r18.backbone
    assert not any(p.requires_grad for m in (bb.conv1, bb.bn1, bb.layer1) for p in m.parameters())
    assert all(p.requires_grad for p in bb.layer2.parameters())  # BN affine of layer2.. trains
    assert not any(m.training for m in bb.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert r18.bbox_head.training and r18.neck.training


def test_train_step_on_cpu_gives_finite_losses_and_gradients(r18):
    r18.train()
    r18.zero_grad()
    images = torch.randn(2, 3, 128, 128)
    images[1, :, 96:, :] = 0  # image 1 is 96x100, padded
    images[1, :, :, 100:] = 0
    targets = [
        Target(torch.tensor([[10.0, 20.0, 60.0, 90.0], [70.0, 70.0, 120.0, 110.0]]), torch.tensor([0, 2])),
        Target(torch.tensor([[5.0, 5.0, 40.0, 40.0]]), torch.tensor([1])),
    ]
    running = r18.backbone.layer2[0].bn1.running_mean.clone()
    losses = r18.loss(images, targets, [meta(0, 128, 128), meta(1, 96, 100)], epoch=0)
    assert set(losses) == {"loss_cls", "loss_bbox"}
    assert all(torch.isfinite(v) and v > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name, p in r18.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), name
        else:
            assert p.grad is None, name
    assert r18.bbox_head.retina_reg.weight.grad.abs().sum() > 0
    assert torch.equal(running, r18.backbone.layer2[0].bn1.running_mean)  # norm_eval: stats frozen


def test_loss_closed_form_with_a_constant_head():
    """Head with zero conv weights: every logit = b, every delta = 0. Then
    loss_cls = (P·FL⁺(b) + (P·(C−1) + Nneg·C)·FL⁻(b)) / Σ max(P_i, 1) and loss_bbox = Σ|encode(anchor, gt)| / same."""
    torch.manual_seed(0)
    model = retinanet(2, depth=18).train()
    b = -1.0
    with torch.no_grad():
        for conv in (model.bbox_head.retina_cls, model.bbox_head.retina_reg):
            conv.weight.zero_()
            conv.bias.zero_()
        model.bbox_head.retina_cls.bias.fill_(b)
    images = torch.randn(2, 3, 64, 64)
    targets = [Target(torch.tensor([[4.0, 4.0, 40.0, 36.0]]), torch.tensor([1])), Target(torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long))]
    metas = [meta(0, 64, 64), meta(1, 64, 64)]
    out = model.loss(images, targets, metas)

    sizes = [(8, 8), (4, 4), (2, 2), (1, 1), (1, 1)]
    anchors = torch.cat(model.anchor_generator.grid_anchors(sizes))
    res = model.assigner.assign(anchors, targets[0].boxes, targets[0].labels)
    n_pos = int((res.gt_inds > 0).sum())
    n_neg = int((res.gt_inds == 0).sum()) + len(anchors)  # image 1 has no GT: all of its anchors are negatives
    assert n_pos >= 1
    p = torch.sigmoid(torch.tensor(b, dtype=torch.float64))
    fl_pos = 0.25 * (1 - p) ** 2 * -torch.log(p)
    fl_neg = 0.75 * p**2 * -torch.log(1 - p)
    avg = n_pos + 1  # image 0: max(P, 1) = P; image 1: max(0, 1) = 1
    expected_cls = (n_pos * fl_pos + (n_pos * 1 + n_neg * 2) * fl_neg) / avg
    assert float(out["loss_cls"].detach()) == pytest.approx(float(expected_cls), rel=1e-4)
    pos = res.gt_inds > 0
    expected_bbox = model.coder.encode(anchors[pos], targets[0].boxes.expand(n_pos, 4)).abs().sum() / avg
    assert float(out["loss_bbox"].detach()) == pytest.approx(float(expected_bbox), rel=1e-4)


def _cfg(model, score_thr: float, iou_thr: float, max_det: int):
    return model.postprocess_cfg.replace(score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)


def test_predict_shapes_and_ranges(r18):
    r18.eval()
    with torch.no_grad():
        r18.bbox_head.retina_cls.bias.fill_(0.0)  # scores near 0.5 so that detections survive
    images = torch.randn(2, 3, 96, 128)
    metas = [meta(0, 96, 128), meta(1, 70, 90)]
    dets = r18.predict(images, metas, _cfg(r18, 0.05, 0.5, 20))
    assert len(dets) == 2
    for d, m in zip(dets, metas):
        assert d.boxes.shape == (20, 4) and d.scores.shape == (20,) and d.labels.shape == (20,)
        assert d.labels.dtype == torch.int64 and 0 <= int(d.labels.min()) and int(d.labels.max()) < 3
        assert bool((d.scores[:-1] >= d.scores[1:]).all()) and float(d.scores.min()) > 0.05
        h, w = m.img_shape
        assert float(d.boxes[:, 0::2].max()) <= w and float(d.boxes[:, 1::2].max()) <= h
        assert float(d.boxes.min()) >= 0 and bool((d.boxes[:, 2:] > d.boxes[:, :2]).all())
    assert all(len(d.scores) == 0 for d in r18.predict(images, metas, _cfg(r18, 0.999, 0.5, 20)))
    assert all(len(d.scores) == 0 for d in r18.predict(images, metas, _cfg(r18, 1.0, 0.5, 20)))
    assert [len(d.scores) for d in r18.predict(images, metas, _cfg(r18, 0.0, 0.5, 7))] == [7, 7]
    cls_scores, bbox_preds = r18.forward_maps(images)
    assert [tuple(c.shape) for c in cls_scores] == [(2, 27, 12, 16), (2, 27, 6, 8), (2, 27, 3, 4), (2, 27, 2, 2), (2, 27, 1, 1)]
    assert [tuple(r.shape[1:2]) for r in bbox_preds] == [(36,)] * 5
    out = r18(images)  # flattened (level, y, x, anchor) as MMDetection
    n = 9 * (12 * 16 + 6 * 8 + 3 * 4 + 2 * 2 + 1)
    assert out.cls_logits.shape == (2, n, 3) and out.bbox_reg.shape == (2, n, 4)
    # level 1 (6 × 8), image 1, cell y=1 x=3, anchor 4
    row = 9 * (12 * 16) + 9 * (8 + 3) + 4
    assert torch.equal(out.cls_logits[1, row], cls_scores[1][1, 4 * 3:5 * 3, 1, 3])


def naive_predict(model, images, metas, score_thr, iou_thr, max_det, nms_pre):
    """Per image, per level, exactly as written in MMDetection's _predict_by_feat_single (no batching)."""
    cls_scores, bbox_preds = model.forward_maps(images)
    anchors = model.anchor_generator.grid_anchors([tuple(c.shape[-2:]) for c in cls_scores])
    out = []
    for i, m in enumerate(metas):
        boxes, scores, labels = [], [], []
        for cls, reg, anc in zip(cls_scores, bbox_preds, anchors):
            s = cls[i].permute(1, 2, 0).reshape(-1).sigmoid()
            d = reg[i].permute(1, 2, 0).reshape(-1, 4)
            idx = torch.nonzero(s > score_thr).flatten()
            vals, order = s[idx].sort(descending=True)
            idx, vals = idx[order][:nms_pre], vals[:nms_pre]
            a = idx // model.num_classes
            boxes.append(model.coder.decode(anc[a], d[a], max_shape=m.img_shape))
            scores.append(vals)
            labels.append(idx % model.num_classes)
        boxes, scores, labels = torch.cat(boxes), torch.cat(scores), torch.cat(labels)
        ok = ((boxes[:, 2:] - boxes[:, :2]) > 0).all(1)
        boxes, scores, labels = boxes[ok], scores[ok], labels[ok]
        keep = batched_nms(boxes, scores, labels, iou_thr)[:max_det]
        out.append((boxes[keep], scores[keep], labels[keep]))
    return out


@pytest.mark.parametrize("dense_topk_factor", [0.0, 1e9])  # force the dense top-k / the sparse path
def test_batched_predict_equals_naive_per_image_reference(dense_topk_factor):
    torch.manual_seed(0)
    model = retinanet(4, depth=18, nms_pre=20).eval()
    model.postprocess_cfg = model.postprocess_cfg.replace(dense_topk_factor=dense_topk_factor)
    with torch.no_grad():
        model.bbox_head.retina_cls.bias.normal_(-2.5, 1.0)
        model.bbox_head.retina_cls.weight.normal_(0.0, 0.1)
        model.bbox_head.retina_reg.weight.normal_(0.0, 0.05)
    images = torch.randn(2, 3, 96, 128)
    metas = [meta(0, 96, 128), meta(1, 70, 90)]
    with torch.no_grad():
        got = model.predict(images, metas, _cfg(model, 0.05, 0.7, 1000))
        ref = naive_predict(model, images, metas, 0.05, 0.7, 1000, nms_pre=20)
    for d, (boxes, scores, labels) in zip(got, ref):
        assert len(d.scores) == len(scores) > 20
        torch.testing.assert_close(d.scores, scores)
        torch.testing.assert_close(d.boxes, boxes)
        assert torch.equal(d.labels, labels)


def test_load_mmdet_state_dict_round_trip_and_mismatch(r18):
    torch.manual_seed(1)
    other = retinanet(3, depth=18)
    other.load_mmdet_state_dict({"state_dict": {"module." + k: v for k, v in r18.state_dict().items()}, "meta": {}})
    assert all(torch.equal(v, r18.state_dict()[k]) for k, v in other.state_dict().items())
    with pytest.raises(DetcliError, match="shape mismatch"):
        retinanet(5, depth=18).load_mmdet_state_dict({"state_dict": r18.state_dict()})


def test_imagenet_weights_local_only(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    model = retinanet(3, depth=18, backbone_weights="imagenet")
    assert model.backbone_init_message == (
        f"ImageNet weights for resnet18 not found at {tmp_path / 'checkpoints' / 'resnet18-f37072fd.pth'}; "
        "backbone initialised randomly"
    )
    (tmp_path / "checkpoints").mkdir()
    torch.manual_seed(3)
    tv = torchvision.models.resnet18(weights=None)
    torch.save(tv.state_dict(), tmp_path / "checkpoints" / "resnet18-f37072fd.pth")
    model = retinanet(3, depth=18, backbone_weights="imagenet")
    assert model.backbone_init_message is None
    assert torch.equal(model.backbone.layer3[1].conv2.weight, tv.layer3[1].conv2.weight)
    assert retinanet(3, depth=18, backbone_weights=str(tmp_path / "nope.pth")).backbone_init_message.startswith(
        "ImageNet weights for resnet18 not found at"
    )


def test_priors_match_the_head_maps_at_odd_sizes(r18):
    """priors() needs no forward pass: ⌈H/s⌉ × ⌈W/s⌉ equals the real FPN sizes, also at odd sizes."""
    r18.eval()
    for size in ((75, 113), (33, 97), (1, 1), (129, 64)):
        with torch.no_grad():
            cls_maps, _ = r18.forward_maps(torch.zeros(1, 3, *size))
        priors = r18.priors(size)
        assert priors.level_sizes == tuple(tuple(m.shape[-2:]) for m in cls_maps), size
        assert torch.equal(priors.boxes, torch.cat(r18.anchor_generator.grid_anchors(priors.level_sizes)))
