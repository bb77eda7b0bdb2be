"""Numerical parity of detcli's RetinaNet with MMDetection 3.x, run side by side.

MMDetection is imported from an unpacked wheel (``MMDET_SRC``: a folder holding ``mmdet/``, ``mmengine/`` and
mmcv(-lite)'s pure-Python ``mmcv/``), never from this repository. mmcv's compiled ops are not needed by
RetinaNet except NMS: ``mmcv.ops`` is replaced by a stand-in whose ``batched_nms``/``nms`` call torchvision
and whose other names raise if *used*. Run it with an interpreter that has mmengine's dependencies
(addict, yapf, termcolor, shapely, matplotlib, tqdm), e.g. a throwaway venv:

    MMDET_SRC=/tmp/mmsrc /tmp/mmvenv/bin/python -m benchmarks.parity.retinanet_parity [--depth 50] [--size 256 320]

Checks: state-dict keys/shapes (strict load both ways), trainable-parameter sets after ``train()``, anchors
and valid flags (exact), raw head outputs, losses and gradients (same weights, same GT), post-processed
detections, the MaxIoU assigner (incl. the deliberate zero-IoU-GT difference), the box coder, and the
resize/flip/normalise transform. Prints one line per check and ``PARITY OK`` when everything agrees.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

from benchmarks.common.official_mmdet import import_mmdet


# ----------------------------------------------------------------------------- builders
def build_mmdet_retinanet(src: str, depth: int, num_classes: int):
    from mmengine.config import Config
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(Path(src) / "mmdet/.mim/configs/_base_/models/retinanet_r50_fpn.py")).model
    cfg.backbone.depth = depth
    cfg.backbone.init_cfg = None  # no download; weights are copied from detcli below
    if depth == 18:
        cfg.neck.in_channels = [64, 128, 256, 512]
    cfg.bbox_head.num_classes = num_classes
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def randomise_(model: torch.nn.Module, gen: torch.Generator) -> None:
    """Make every BN non-trivial (zero-init residual BNs would hide half the network) and spread the
    class prior so that many (anchor, class) pairs pass the 0.05 score threshold."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5, generator=gen)
                m.bias.uniform_(-0.2, 0.2, generator=gen)
                m.running_mean.uniform_(-0.2, 0.2, generator=gen)
                m.running_var.uniform_(0.5, 2.0, generator=gen)
        head = model.bbox_head
        head.retina_cls.bias.normal_(-1.5, 1.0, generator=gen)
        head.retina_reg.weight.normal_(0.0, 0.05, generator=gen)


def random_gts(gen: torch.Generator, h: int, w: int, n: int, num_classes: int):
    xy = torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.8, h * 0.8])
    wh = 8 + torch.rand(n, 2, generator=gen) * torch.tensor([w * 0.5, h * 0.5])
    boxes = torch.cat([xy, (xy + wh).minimum(torch.tensor([w, h]).float())], dim=1)
    labels = torch.randint(0, num_classes, (n,), generator=gen)
    return boxes, labels


# ----------------------------------------------------------------------------- report
class Report:
    def __init__(self) -> None:
        self.ok = True

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.ok &= bool(passed)
        print(f"[{'ok' if passed else 'FAIL'}] {name}: {detail}")


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


# ----------------------------------------------------------------------------- checks
def check_model(rep: Report, src: str, depth: int, size: tuple[int, int], num_classes: int, seed: int) -> None:
    from mmengine.structures import InstanceData
    from mmdet.structures import DetDataSample

    from detcli.config.schema import RetinaNetConfig
    from detcli.models.detectors.retinanet import RetinaNet
    from detcli.structures import ImageMeta, Target

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    ours = RetinaNet.from_config(RetinaNetConfig(type="retinanet", depth=depth), num_classes)
    randomise_(ours, gen)
    mm = build_mmdet_retinanet(src, depth, num_classes)
    mm_sd, our_sd = mm.state_dict(), ours.state_dict()
    same_keys = set(mm_sd) == set(our_sd) and all(mm_sd[k].shape == our_sd[k].shape for k in our_sd)
    rep.check("state_dict keys/shapes", same_keys, f"{len(our_sd)} tensors, mmdet {len(mm_sd)}")
    mm.load_state_dict(our_sd, strict=True)
    ours2 = RetinaNet.from_config(RetinaNetConfig(type="retinanet", depth=depth), num_classes)
    ours2.load_mmdet_state_dict({"state_dict": mm.state_dict(), "meta": {}})
    rep.check("load_mmdet_state_dict (strict)", all(torch.equal(ours2.state_dict()[k], our_sd[k]) for k in our_sd), "round trip")

    mm.train(), ours.train()
    ours_trainable = {n for n, p in ours.named_parameters() if p.requires_grad}
    mm_trainable = {n for n, p in mm.named_parameters() if p.requires_grad}
    bn_train = [n for n, m in ours.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
    mm_bn_train = [n for n, m in mm.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
    rep.check("trainable params after train()", ours_trainable == mm_trainable and bn_train == mm_bn_train == [],
              f"{sum(ours.state_dict()[n].numel() for n in ours_trainable):,} trainable values, BN in train mode: {len(bn_train)}/{len(mm_bn_train)}")

    h, w = size
    images = torch.randn(2, 3, h, w, generator=gen)
    img_shapes = [(h, w), (h - 37, w - 70)]  # second image smaller than the padded batch
    pad_shapes = [(-(-a // 32) * 32, -(-b // 32) * 32) for a, b in img_shapes]
    images[1, :, img_shapes[1][0]:, :] = 0
    images[1, :, :, img_shapes[1][1]:] = 0

    # raw outputs (train mode: BN stays in eval on both sides)
    cls_o, reg_o = ours.forward_maps(images)
    cls_m, reg_m = mm._forward(images)
    d_cls = max(max_abs(a, b) for a, b in zip(cls_o, cls_m))
    d_reg = max(max_abs(a, b) for a, b in zip(reg_o, reg_m))
    rep.check("raw head outputs", d_cls <= 1e-4 and d_reg <= 1e-4, f"max |Δcls| {d_cls:.2e}, max |Δreg| {d_reg:.2e} over 5 levels")

    sizes = [tuple(c.shape[-2:]) for c in cls_o]
    a_o = ours.anchor_generator.grid_anchors(sizes)
    a_m = mm.bbox_head.prior_generator.grid_priors(sizes, device="cpu")
    rep.check("anchors", all(torch.equal(x, y) for x, y in zip(a_o, a_m)), f"bit-exact on {sizes}")
    v_o = ours.anchor_generator.valid_flags(sizes, pad_shapes)
    v_m = torch.stack([torch.cat(mm.bbox_head.prior_generator.valid_flags(sizes, p, device="cpu")) for p in pad_shapes])
    rep.check("valid flags", torch.equal(v_o, v_m), f"{int(v_o[1].sum())}/{v_o.shape[1]} valid for the smaller image")

    # losses and gradients
    targets, samples, metas = [], [], []
    for i, (ih, iw) in enumerate(img_shapes):
        boxes, labels = random_gts(gen, ih, iw, 6, num_classes)
        boxes[0] = torch.tensor([3.0, 4.0, 14.0, 13.0])  # small box: only a low-quality match
        targets.append(Target(boxes, labels))
        metas.append(ImageMeta(i, f"{i}.jpg", (ih, iw), (ih, iw), np.eye(3).tolist()))
        s = DetDataSample(metainfo=dict(img_shape=(ih, iw), pad_shape=pad_shapes[i], batch_input_shape=(h, w),
                                        ori_shape=(ih, iw), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=boxes.clone(), labels=labels.clone())
        samples.append(s)
    ours.zero_grad(), mm.zero_grad()
    lo = ours.loss(images, targets, metas, 0)
    lm = {k: sum(v) for k, v in mm.loss(images, samples).items()}
    (lo["loss_cls"] + lo["loss_bbox"]).backward()
    (lm["loss_cls"] + lm["loss_bbox"]).backward()
    rel = {k: abs(float(lo[k]) - float(lm[k])) / max(abs(float(lm[k])), 1e-12) for k in ("loss_cls", "loss_bbox")}
    rep.check("losses", max(rel.values()) <= 1e-5,
              f"cls {float(lo['loss_cls']):.6f} vs {float(lm['loss_cls']):.6f}, bbox {float(lo['loss_bbox']):.6f} vs {float(lm['loss_bbox']):.6f}")
    gm = dict(mm.named_parameters())
    worst = 0.0
    for n, p in ours.named_parameters():
        if p.grad is None:
            continue
        g = gm[n].grad
        worst = max(worst, max_abs(p.grad, g) / max(float(g.abs().max()), 1e-12))
    rep.check("gradients", worst <= 1e-3, f"max |Δgrad| / max|grad| over all params {worst:.2e}")

    # post-processing (eval mode); the second pass lowers the class prior by 4 so that few pairs pass the
    # score threshold (detcli then takes its sparse path instead of the dense top-k)
    ours.eval(), mm.eval()
    for shift in (0.0, -4.0):
        with torch.no_grad():
            for model in (ours, mm):
                model.bbox_head.retina_cls.bias.add_(shift)
            det_o = ours.predict(images, metas, ours.postprocess_cfg.replace(score_thr=0.05, iou_thr=0.5,
                                                                             max_det=100))
            det_m = mm.predict(images, samples, rescale=False)
        for i, (a, b) in enumerate(zip(det_o, det_m)):
            # equal scores (e.g. identical features over padding) may come out in either order: sort canonically
            a = _canonical(a.boxes, a.scores, a.labels)
            b = _canonical(b.pred_instances.bboxes, b.pred_instances.scores, b.pred_instances.labels)
            same_n = len(a.scores) == len(b.scores)
            detail = f"prior shift {shift}, image {i}: {len(a.scores)} vs {len(b.scores)} detections"
            passed = same_n
            if same_n and len(a.scores):
                passed = torch.equal(a.labels, b.labels) and max_abs(a.boxes, b.boxes) <= 1e-3 and max_abs(a.scores, b.scores) <= 1e-5
                detail += f", max |Δbox| {max_abs(a.boxes, b.boxes):.2e}, max |Δscore| {max_abs(a.scores, b.scores):.2e}"
            rep.check("predict", passed, detail)
            if not passed and same_n:
                bad = ((a.boxes - b.boxes).abs().amax(dim=1) > 1e-3).nonzero().flatten()[:5].tolist()
                for j in bad:
                    print(f"    #{j}: detcli {a.scores[j]:.6f} {int(a.labels[j])} {a.boxes[j].tolist()} | "
                          f"mmdet {b.scores[j]:.6f} {int(b.labels[j])} {b.boxes[j].tolist()}")


def _canonical(boxes, scores, labels):
    from detcli.structures import Detections

    keys = np.concatenate([boxes.numpy().T[::-1], labels.numpy()[None], -scores.numpy()[None]])
    order = torch.from_numpy(np.lexsort(keys).copy())
    return Detections(boxes[order], scores[order], labels[order])


def check_assigner_and_coder(rep: Report, seed: int) -> None:
    from mmengine.structures import InstanceData
    from mmdet.models.task_modules import DeltaXYWHBBoxCoder, MaxIoUAssigner as MMMaxIoU

    from detcli.assigners.max_iou import MaxIoUAssigner
    from detcli.geometry.delta_xywh import DeltaXYWHCoder

    gen = torch.Generator().manual_seed(seed)
    ours = MaxIoUAssigner(0.5, 0.4, 0.0, True, True)
    mm = MMMaxIoU(pos_iou_thr=0.5, neg_iou_thr=0.4, min_pos_iou=0, ignore_iof_thr=-1)
    trials, agree = 200, 0
    for _ in range(trials):
        anchors, _ = random_gts(gen, 200, 200, 300, 3)
        anchors = torch.cat([anchors, anchors[:20]])  # exact duplicates create ties
        gts, labels = random_gts(gen, 200, 200, int(torch.randint(1, 12, (1,), generator=gen)), 3)
        gts = torch.cat([gts, anchors[:2] + 0.0])  # GTs equal to an anchor (IoU 1, duplicated anchor)
        labels = torch.cat([labels, torch.tensor([0, 1])])
        r_o = ours.assign(anchors, gts, labels)
        r_m = mm.assign(InstanceData(priors=anchors), InstanceData(bboxes=gts, labels=labels))
        agree += int(torch.equal(r_o.gt_inds, r_m.gt_inds) and torch.equal(r_o.labels, r_m.labels))
    rep.check("MaxIoUAssigner (random cases)", agree == trials, f"{agree}/{trials} identical (gt_inds and labels)")

    anchors = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [0, 0, 9, 10]])
    gts = torch.tensor([[0.0, 0, 10, 10], [100, 100, 110, 110]])  # GT 2 overlaps no anchor
    labels = torch.tensor([0, 1])
    r_o = ours.assign(anchors, gts, labels)
    r_m = mm.assign(InstanceData(priors=anchors), InstanceData(bboxes=gts, labels=labels))
    rep.check("zero-IoU GT (deliberate difference)", r_o.gt_inds.tolist() == [1, 0, 1] and r_m.gt_inds.tolist() == [2, 2, 2],
              f"detcli {r_o.gt_inds.tolist()} vs mmdet {r_m.gt_inds.tolist()} (mmdetection#8289)")

    c_o, c_m = DeltaXYWHCoder(), DeltaXYWHBBoxCoder(target_means=[0.0] * 4, target_stds=[1.0] * 4)
    a, _ = random_gts(gen, 300, 400, 1000, 3)
    g, _ = random_gts(gen, 300, 400, 1000, 3)
    d_enc = max_abs(c_o.encode(a, g), c_m.encode(a, g))
    deltas = torch.randn(1000, 4, generator=gen) * 3  # also exercises the ±4.135 clamp
    d_dec = max_abs(c_o.decode(a, deltas, (300, 400)), c_m.decode(a, deltas, max_shape=(300, 400)))
    rep.check("DeltaXYWH coder", d_enc <= 1e-6 and d_dec <= 1e-4, f"max |Δencode| {d_enc:.2e}, max |Δdecode| {d_dec:.2e}")


def check_transform(rep: Report, seed: int) -> None:
    from mmdet.datasets.transforms import RandomFlip, Resize
    from mmdet.structures.bbox import HorizontalBoxes

    from detcli.data.transforms.resize import KeepRatioResizeTransform

    rng = np.random.default_rng(seed)
    mean = np.array([123.675, 116.28, 103.53], dtype=np.float32)
    std = np.array([58.395, 57.12, 57.375], dtype=np.float32)
    for (h, w), flip in (((480, 640), False), ((427, 333), True), ((1000, 300), False)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        boxes = np.array([[10, 20, 200, 300], [0, 0, w, h], [w * 0.5, h * 0.4, w * 0.9, h * 0.95]], dtype=np.float32)
        labels = np.array([1, 2, 3])
        res = {"img": img.copy(), "img_shape": (h, w), "ori_shape": (h, w), "gt_bboxes": HorizontalBoxes(torch.from_numpy(boxes.copy())),
               "gt_bboxes_labels": labels}
        res = Resize(scale=(1333, 800), keep_ratio=True)(res)
        if flip:
            res = RandomFlip(prob=1.0)(res)
        mm_img = (res["img"][..., ::-1].astype(np.float32) - mean) / std
        ours = KeepRatioResizeTransform(flip=1.0 if flip else 0.0, train=True)(img, boxes, labels, np.random.default_rng(0))
        d_img = float(np.abs(ours["img"].numpy().transpose(1, 2, 0) - mm_img).max())
        d_box = float(np.abs(ours["boxes"].numpy() - res["gt_bboxes"].tensor.numpy()).max())
        same_shape = tuple(ours["img_shape"]) == tuple(res["img_shape"])
        rep.check(f"transform {h}x{w} flip={flip}", same_shape and d_img <= 1e-5 and d_box <= 1e-3,
                  f"shape {ours['img_shape']} vs {res['img_shape']}, max |Δimg| {d_img:.1e}, max |Δbox| {d_box:.1e}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=50, choices=(18, 50))
    parser.add_argument("--size", type=int, nargs=2, default=(256, 320), metavar=("H", "W"))
    parser.add_argument("--num-classes", type=int, default=80)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    src = os.environ.get("MMDET_SRC") or os.environ.get("MMDET_REPO")
    if not src:
        print("set MMDET_SRC to the folder that holds the unpacked mmdet/ (and mmengine/, mmcv/) packages")
        return 2
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    mmdet = import_mmdet(src)
    print(f"mmdet {mmdet.__version__} from {Path(mmdet.__file__).parent}; depth {args.depth}, input {args.size[0]}x{args.size[1]}")
    rep = Report()
    check_model(rep, src, args.depth, tuple(args.size), args.num_classes, args.seed)
    check_assigner_and_coder(rep, args.seed)
    check_transform(rep, args.seed)
    print("PARITY OK" if rep.ok else "PARITY FAILED")
    return 0 if rep.ok else 1


if __name__ == "__main__":
    sys.exit(main())
