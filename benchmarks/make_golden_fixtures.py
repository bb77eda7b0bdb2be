"""Write the golden parity fixtures of ``tests/golden/`` from the OFFICIAL implementations.

The default test run (``tests/test_golden_parity.py``) compares detcli against these files without any
official code. Only numbers and key names are written: the official state-dict key names/shapes (in the
official order), the seed of the weights, a fixed input, the official raw head outputs and, for one preset
per family, the official detections and assignments (and, for NanoDet, the training-only AGM output; for
RTMDet and DeFCN, the official losses). The weights themselves are rebuilt from the seed by
``tests/golden/weights.py::golden_state_dict`` (the one recipe shared by this script and the tests). Seeds of
the "full" presets are searched so that no official decision is near a tie (see ``make`` and ``MIN_MARGINS``).

What was used for the committed fixtures (each fixture's ``.json`` records it under ``"source"``):

- NanoDet-Plus: RangiLyu/nanodet at commit be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0, its own configs
  ``config/nanodet-plus-m{,-1.5x}_{320,416}.yml``, imported without its training dependencies by
  ``benchmarks/official_nanodet.py``; ``nanodet-plus-ghostnet``: ``nanodet-plus-m_320.yml`` with its backbone
  section replaced by the official GhostNet's (``official_nanodet.GHOSTNET_BACKBONE``, no official config uses
  GhostNet) and ``fpn.in_channels`` [40, 112, 960], recorded in the fixture as ``official_config_overrides``; every
  NanoDet fixture records the official module's parameter counts (``official_counts``);
- RetinaNet: mmdet 3.3.0 / mmengine 0.10.7 / mmcv-lite 2.1.0 (PyPI wheels), configs
  ``retinanet_r{18,50}_fpn_1x_coco.py`` from the mmdet wheel, ``mmcv.ops`` NMS replaced by torchvision's
  exactly as ``benchmarks/retinanet_parity.py`` does;
- RTMDet: the same wheels, configs ``rtmdet_{tiny,s,m,l,x}_8xb32-300e_coco.py`` (``backbone.init_cfg`` dropped:
  every tensor is replaced); weights by the recipe with the official head's shared convs as ``aliases`` and
  the BatchNorms calibrated on the fixture's input (``bn_scales``, see ``tests/golden/weights.py``);
- DeFCN: Megvii-BaseDetection/DeFCN at commit bd7e24d7408d63edc878d175d9cf798974095049, playground config
  ``poto.res50.fpn.coco.800size.3x_ms.3dmf.aux`` (its ``config.py``, ``net.py``, ``fcos.py``) on
  Megvii-BaseDetection/cvpods at commit 2deea5dc659371318c8a570c644201d913a83027, imported without building
  cvpods by ``benchmarks/official_defcn.py`` (its docstring lists the stubs: a fake ``cvpods._C``, skipped package
  ``__init__`` files, a few unused imports), scipy for the Hungarian matching; weights by the recipe with DeFCN's
  options (``distance_bias``, ``norm_affine``, ``level_scale``, ``filter_gain``, see ``tests/golden/weights.py``);
- torch 2.15 / torchvision 0.29 on CPU, one thread.

How to regenerate (never install the official packages into the project venv):

    # NanoDet checkout (no work tree needed; any copy of the commit will do)
    mkdir -p /tmp/ref/nanodet
    git --git-dir=/path/to/nanodet/.git archive be9b4a9 | tar -x -C /tmp/ref/nanodet
    # MMDetection 3.x, pure-Python, into a separate folder
    pip install --no-deps --target /tmp/ref/mmsrc mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 \
        addict termcolor yapf platformdirs shapely terminaltables matplotlib contourpy cycler fonttools \
        kiwisolver pyparsing python-dateutil six tqdm
    NANODET_REPO=/tmp/ref/nanodet NANODET_COMMIT=be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0 \
        MMDET_SRC=/tmp/ref/mmsrc python benchmarks/make_golden_fixtures.py  # [--only nanodet|retinanet|rtmdet] [--out DIR]
    # one preset only (the others' files untouched), e.g. the GhostNet one:
    NANODET_REPO=/tmp/ref/nanodet NANODET_COMMIT=be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0 \
        python benchmarks/make_golden_fixtures.py --only nanodet --preset nanodet-plus-ghostnet
    # DeFCN + cvpods checkouts (e.g. git archive of the commits above) and cvpods' pure-Python imports
    mkdir -p /tmp/ref/defcn /tmp/ref/cvpods
    git --git-dir=/path/to/DeFCN/.git archive bd7e24d | tar -x -C /tmp/ref/defcn
    git --git-dir=/path/to/cvpods/.git archive 2deea5d | tar -x -C /tmp/ref/cvpods
    pip install --no-deps --target /tmp/ref/cvpods-deps loguru easydict colorama tabulate six
    DEFCN_REPO=/tmp/ref/defcn CVPODS_REPO=/tmp/ref/cvpods CVPODS_DEPS=/tmp/ref/cvpods-deps \
        DEFCN_COMMIT=bd7e24d7408d63edc878d175d9cf798974095049 CVPODS_COMMIT=2deea5dc659371318c8a570c644201d913a83027 \
        python benchmarks/make_golden_fixtures.py --only defcn  # needs scipy; ~1 min on one core

then run ``python -m pytest tests/test_golden_parity.py``. Regenerating with the same versions gives the
same files up to float rounding of a different CPU; a new official version is a deliberate change of
the reference — say so in the commit.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from golden.weights import DISTANCE_BIAS, calibrate_batchnorms_, checksums, golden_input, golden_state_dict

NUM_CLASSES = 80
NANODET_INPUT = (2, 3, 64, 96)  # (B, 3, H, W): not square, so an H/W swap shows
RETINANET_INPUT = (1, 3, 96, 128)
RTMDET_INPUT = (1, 3, 128, 160)  # full case: two images
# H, W multiples of 128 (no padding, every FPN level an exact downsampling) and P7 of 2 × 5 = 10 points: the
# official aux assignment takes the top AUX_TOPK = 9 points of every level (torch.topk fails on a level with
# fewer points, e.g. P7 of a 256 × 320 input is 2 × 3)
DEFCN_INPUT = (2, 3, 256, 640)

# preset → official source; the seed differs per preset so that the fixtures of presets with one
# architecture (320 vs 416) are not byte-identical; ``full``: also official detections and assignment
PRESETS = {
    "nanodet-plus-m": dict(family="nanodet", width="1.0x", imgsz=320, seed=1, full=True),
    "nanodet-plus-m-416": dict(family="nanodet", width="1.0x", imgsz=416, seed=2, full=False),
    "nanodet-plus-m-1.5x": dict(family="nanodet", width="1.5x", imgsz=320, seed=3, full=False),
    "nanodet-plus-m-1.5x-416": dict(family="nanodet", width="1.5x", imgsz=416, seed=4, full=False),
    # the official config nanodet-plus-m_320.yml on the official GhostNet (official_nanodet.GHOSTNET_BACKBONE)
    "nanodet-plus-ghostnet": dict(family="nanodet", width="1.0x", imgsz=320, seed=13, full=False, backbone="ghostnet"),
    "retinanet-r18-fpn": dict(family="retinanet", depth=18, seed=5, full=True),
    "retinanet-r50-fpn": dict(family="retinanet", depth=50, seed=6, full=False),
    "rtmdet-tiny": dict(family="rtmdet", variant="tiny", seed=7, full=True, distance_bias=3.0),
    "rtmdet-s": dict(family="rtmdet", variant="s", seed=8, full=False),
    "rtmdet-m": dict(family="rtmdet", variant="m", seed=9, full=False),
    "rtmdet-l": dict(family="rtmdet", variant="l", seed=10, full=False),
    "rtmdet-x": dict(family="rtmdet", variant="x", seed=11, full=False),
    # the four DeFCN recipe options of golden/weights.py (a GroupNorm head, ReLU(scale · x) · stride distances,
    # a 3DMF filter): see its docstring
    "defcn-r50-fpn": dict(family="defcn", seed=12, full=True, distance_bias=2.0, norm_affine=True,
                          level_scale=1.0, filter_gain=3.0),
}

# hand-made targets (xyxy in input pixels, labels): overlapping pairs, a tiny box, boxes on the border
NANODET_GTS = (  # input 64 × 96 (H × W)
    [[8.0, 6.0, 50.0, 44.0], [30.0, 14.0, 80.0, 58.0], [29.0, 21.0, 35.0, 27.0], [60.0, 2.0, 94.0, 30.0],
     [2.0, 40.0, 40.0, 63.0]],
    [3, 17, 3, 56, 0],
)
RETINANET_GTS = (  # input 96 × 128 (H × W)
    [[10.0, 12.0, 60.0, 70.0], [40.0, 30.0, 100.0, 90.0], [70.0, 5.0, 78.0, 13.0], [0.0, 50.0, 128.0, 96.0],
     [42.0, 32.0, 98.0, 88.0]],
    [0, 2, 9, 5, 2],
)

RTMDET_GTS = (  # input 128 × 160 (H × W), one set per image of the full case
    ([[10.0, 12.0, 70.0, 90.0], [40.0, 30.0, 110.0, 100.0], [89.0, 5.0, 99.0, 15.0], [0.0, 60.0, 160.0, 128.0],
      [44.0, 34.0, 106.0, 96.0]], [0, 2, 9, 5, 2]),
    ([[20.0, 20.0, 60.0, 120.0], [100.0, 40.0, 150.0, 90.0], [5.0, 100.0, 40.0, 126.0]], [1, 3, 7]),
)

DEFCN_GTS = (  # input 256 × 640 (H × W), one set per image; xyxy input pixels, contiguous class ids
    # image 0: 0/1 and 1/4 overlap (4 lies inside 1, one class, IoU 0.79); 2 is tiny (6 × 6) and holds no point of
    # any level (x in (69, 75) holds only 72, a P4 column; y in (9, 15) only 12, a P3 row): its POTO row is all -1;
    # 3 lies on the left and bottom border; 5 is large; 6 (36 px) and 7 (64 × 60, inside 5) are matched on fine levels
    ([[40.0, 30.0, 200.0, 190.0], [110.0, 70.0, 300.0, 240.0], [69.0, 9.0, 75.0, 15.0], [0.0, 150.0, 260.0, 256.0],
      [120.0, 80.0, 290.0, 230.0], [320.0, 10.0, 630.0, 250.0], [270.0, 196.0, 306.0, 232.0],
      [520.0, 180.0, 584.0, 240.0]], [0, 2, 9, 5, 2, 7, 11, 14]),
    # image 1: 1/2 overlap (one class, IoU 0.70; not of one area: a predicted box holding both would otherwise
    # give them equal IoU, an exact tie of the aux assignment); 3 on the right and bottom border; 4 tiny without a point
    # (x (213, 219): only 216, P4; y (97, 103): only 100, P3); 6 small; 7 (64 × 60) inside 0
    ([[20.0, 20.0, 140.0, 240.0], [400.0, 60.0, 560.0, 180.0], [410.0, 70.0, 578.0, 194.0],
      [500.0, 150.0, 640.0, 256.0], [213.0, 97.0, 219.0, 103.0], [250.0, 30.0, 380.0, 200.0],
      [160.0, 200.0, 196.0, 236.0], [60.0, 90.0, 124.0, 150.0]], [1, 3, 3, 7, 4, 0, 12, 13]),
)


def fixed_input(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn(shape, generator=torch.Generator().manual_seed(1000 + seed))


def spec_of(model: torch.nn.Module) -> list[tuple[str, list[int]]]:
    return [(k, list(v.shape)) for k, v in model.state_dict().items()]


def load_golden(model: torch.nn.Module, spec, seed: int) -> dict[str, torch.Tensor]:
    state = golden_state_dict(spec, seed)
    model.load_state_dict(state, strict=True)
    model.eval()
    return state


def git_commit(repo: Path, env: str = "NANODET_COMMIT") -> str:
    """``$env`` if set, else the checkout's HEAD (a ``git archive`` copy has none: set the variable)."""
    if os.environ.get(env):
        return os.environ[env]
    try:
        top = subprocess.run(["git", "-C", str(repo), "rev-parse", "--show-toplevel", "HEAD"],
                             capture_output=True, text=True, check=False)
        lines = top.stdout.split()
        if top.returncode == 0 and len(lines) == 2 and Path(lines[0]).resolve() == repo.resolve():
            return lines[1]
    except OSError:
        pass
    return f"unknown (set {env})"


def f32(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().float().numpy()


# ----------------------------------------------------------------------------- NanoDet-Plus
def nanodet_overrides(p: dict) -> dict:
    """The sections of the official config a preset replaces (``build_official``'s keywords); {} for none."""
    from official_nanodet import GHOSTNET_BACKBONE, GHOSTNET_FPN_IN_CHANNELS

    if p.get("backbone") == "ghostnet":
        return {"backbone": {**GHOSTNET_BACKBONE, "pretrain": False}, "fpn_in_channels": GHOSTNET_FPN_IN_CHANNELS}
    return {}


def module_counts(module: torch.nn.Module) -> dict[str, int]:
    """{"conv": Conv2d weights + biases (NanoDet's README "Params"), "all": every parameter} of ``module``."""
    convs = [m for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    conv = sum(p.numel() for m in convs for p in m.parameters(recurse=False))
    return {"conv": conv, "all": sum(p.numel() for p in module.parameters())}


def official_counts(model: torch.nn.Module, imgsz: int) -> dict:
    """Parameter counts of the official modules (backbone; inference graph = backbone + fpn + head; the training
    model with the AGM) and the conv MACs of one imgsz² image through the official inference forward."""
    parts = {name: module_counts(getattr(model, name)) for name in ("backbone", "fpn", "head", "aux_fpn", "aux_head")}
    inference = {k: sum(parts[n][k] for n in ("backbone", "fpn", "head")) for k in ("conv", "all")}
    macs = [0]

    def hook(m, inputs, out):
        macs[0] += out.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    try:
        model.eval()
        model(torch.zeros(1, 3, imgsz, imgsz))
    finally:
        for h in handles:
            h.remove()
    return {"backbone": parts["backbone"], "inference": inference, "training": module_counts(model),
            "conv_macs": {str(imgsz): macs[0]}}


@torch.no_grad()
def nanodet_fixture(official, name: str, p: dict, seed: int) -> tuple[dict, dict]:
    from official_nanodet import OFFICIAL_CONFIGS, build_official

    overrides = nanodet_overrides(p)
    model, _ = build_official(official, p["width"], p["imgsz"], **overrides)
    counts = official_counts(model, p["imgsz"])
    spec = spec_of(model)
    state = load_golden(model, spec, seed)
    images = fixed_input(NANODET_INPUT, seed)
    out = model(images)  # official eval forward: (B, N, C + 4(R+1)), levels → y → x
    head = model.head
    cls, reg = out.split([head.num_classes, 4 * (head.reg_max + 1)], dim=-1)
    arrays = {"input": f32(images), "cls": f32(cls), "reg": f32(reg)}
    meta = {
        "official_config": "config/" + OFFICIAL_CONFIGS[(p["width"], p["imgsz"])],
        **({"official_config_overrides": {"model.arch.backbone": overrides["backbone"],
                                          "model.arch.fpn.in_channels": overrides["fpn_in_channels"]}}
           if overrides else {}),
        "official_counts": counts,
        "raw_layout": "NanoDet forward (B, N, C + 4(R+1)) split at C; prior order level, y, x",
        # hard-coded in the official NanoDetPlusHead.get_bboxes
        "test_cfg": {"score_thr": 0.05, "nms": {"type": "nms", "iou_threshold": 0.6}, "max_per_img": 100},
        "reg_max": int(head.reg_max),
        "strides": [int(s) for s in head.strides],
    }
    if p["full"]:
        # the AGM (training-only aux head) as the official forward_train runs it, not detached
        feats = model.backbone(images)
        fpn_feats = model.fpn(feats)
        aux = model.aux_head([torch.cat([f, x], dim=1) for f, x in zip(fpn_feats, model.aux_fpn(feats))])
        aux_cls, aux_reg = aux.split([head.num_classes, 4 * (head.reg_max + 1)], dim=-1)
        arrays.update({"aux_cls": f32(aux_cls), "aux_reg": f32(aux_reg)})
        meta["aux_outputs"] = "official aux_head(concat(fpn(feats), aux_fpn(feats))), same layout as cls/reg"
        arrays.update(nanodet_post(model, images, cls, reg))
        meta["margins"] = nanodet_post_margins(model, images, cls, reg)
        meta["detections"] = ("official head.get_bboxes (score_thr 0.05, NMS 0.6, max 100; boxes clamped to "
                              "the input shape) for every image of the batch")
        arrays.update(nanodet_assign(model, images, cls, reg))
        meta["margins"].update(dsl_margins(model.head.assigner, arrays))
        meta["assignment"] = ("official DynamicSoftLabelAssigner(topk=13, iou_factor=3.0) on image 0, fed with "
                              "the main-head class logits and the main-head boxes decoded the official way "
                              "(Integral * stride from the cell-corner priors, no clamp)")
        meta["assign_conventions"] = {"gt_inds": "0 background, k = GT k-1", "labels": "-1 background",
                                      "max_overlaps": "IoU of the assigned GT; -1e8 background"}
    return {"spec": spec, "state": state}, {"arrays": arrays, "meta": meta}


def nanodet_post(model, images, cls, reg) -> dict[str, np.ndarray]:
    results = model.head.get_bboxes(cls, reg, {"img": images})
    arrays = {}
    for i, (dets, labels) in enumerate(results):
        arrays[f"det{i}_boxes"] = f32(dets[:, :4])
        arrays[f"det{i}_scores"] = f32(dets[:, 4])
        arrays[f"det{i}_labels"] = labels.long().numpy()
    return arrays


def nanodet_post_margins(model, images, cls, reg) -> dict[str, float]:
    """Distances to a tie of the official post-processing decisions (candidates rebuilt as get_bboxes does)."""
    from nanodet.util import distance2bbox

    head = model.head
    h, w = images.shape[-2:]
    priors = official_nanodet_priors(head, h, w)
    boxes = distance2bbox(priors[:, :2], head.distribution_project(reg) * priors[:, 2, None], max_shape=(h, w))
    scores = cls.sigmoid()
    margins = []
    for i in range(len(images)):
        prior, label = torch.nonzero(scores[i] > 0.05, as_tuple=True)
        margins.append(nms_margins(boxes[i][prior], scores[i][prior, label], label, 0.6, 100))
    return merge_margins(margins)


def merge_margins(margins: list[dict]) -> dict:
    """Per-image margins → the smallest gap, the largest candidate counts."""
    return {k: (min if k.endswith("gap") else max)(m[k] for m in margins) for k in margins[0]}


def official_nanodet_priors(head, h: int, w: int) -> torch.Tensor:
    sizes = [(-(-h // s), -(-w // s)) for s in head.strides]
    return torch.cat([head.get_single_level_center_priors(1, size, s, torch.float32, "cpu")
                      for size, s in zip(sizes, head.strides)], dim=1)[0]


def nanodet_assign(model, images, cls, reg) -> dict[str, np.ndarray]:
    from nanodet.util import distance2bbox

    head = model.head
    priors = official_nanodet_priors(head, *images.shape[-2:])
    dis = head.distribution_project(reg[0]) * priors[:, 2, None]
    boxes = distance2bbox(priors[:, :2], dis)
    gt_boxes = torch.tensor(NANODET_GTS[0])
    gt_labels = torch.tensor(NANODET_GTS[1])
    res = head.assigner.assign(cls[0], priors, boxes, gt_boxes, gt_labels)
    return {
        "assign_priors": f32(priors), "assign_pred_logits": f32(cls[0]), "assign_pred_boxes": f32(boxes),
        "assign_gt_boxes": f32(gt_boxes), "assign_gt_labels": gt_labels.numpy(),
        "assign_gt_inds": res.gt_inds.long().numpy(), "assign_labels": res.labels.long().numpy(),
        "assign_max_overlaps": f32(res.max_overlaps),
    }


# ----------------------------------------------------------------------------- RetinaNet (MMDetection)
def mmdet_config(src: Path, depth: int):
    from mmengine.config import Config

    path = src / "mmdet" / ".mim" / "configs" / "retinanet" / f"retinanet_r{depth}_fpn_1x_coco.py"
    return Config.fromfile(str(path)), path.name


@torch.no_grad()
def retinanet_fixture(src: Path, name: str, p: dict, seed: int) -> tuple[dict, dict]:
    from mmdet.registry import MODELS

    cfg, cfg_name = mmdet_config(src, p["depth"])
    cfg.model.backbone.init_cfg = None  # no download: every tensor is replaced below
    assert cfg.model.bbox_head.num_classes == NUM_CLASSES
    with contextlib.redirect_stdout(io.StringIO()):
        model = MODELS.build(cfg.model)
    spec = spec_of(model)
    state = load_golden(model, spec, seed)
    images = fixed_input(RETINANET_INPUT, seed)
    cls_scores, bbox_preds = model._forward(images)
    b, c = images.shape[0], model.bbox_head.cls_out_channels
    cls = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, c) for m in cls_scores], dim=1)
    reg = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, 4) for m in bbox_preds], dim=1)
    arrays = {"input": f32(images), "cls": f32(cls), "reg": f32(reg)}
    meta = {
        "official_config": f"mmdet/.mim/configs/retinanet/{cfg_name}",
        "raw_layout": ("per level (B, A*C, H, W) / (B, A*4, H, W) -> permute(0,2,3,1).reshape(B, -1, C|4), "
                       "levels concatenated: index (level, y, x, anchor)"),
        "feature_sizes": [list(m.shape[-2:]) for m in cls_scores],
        "test_cfg": json.loads(json.dumps(cfg.model.test_cfg.to_dict())),
    }
    if p["full"]:
        arrays.update(retinanet_post(model, images))
        meta["detections"] = "official RetinaNet.predict(rescale=False), img_shape = input shape, test_cfg above"
        sizes = [tuple(m.shape[-2:]) for m in cls_scores]
        meta["margins"] = retinanet_post_margins(model, images, cls_scores, bbox_preds, cfg.model.test_cfg)
        arrays.update(retinanet_assign(model, sizes))
        meta["margins"].update(max_iou_margins(arrays, cfg.model.train_cfg.assigner))
        meta["assignment"] = ("official MaxIoUAssigner of the train_cfg (0.5 / 0.4 / min_pos_iou 0, "
                              "gt_max_assign_all) on all anchors of the input (all valid)")
        meta["assign_conventions"] = {"gt_inds": "-1 ignore, 0 background, k = GT k-1",
                                      "labels": "-1 unless positive", "max_overlaps": "best IoU over all GTs"}
    return {"spec": spec, "state": state}, {"arrays": arrays, "meta": meta}


def retinanet_post(model, images) -> dict[str, np.ndarray]:
    from mmdet.structures import DetDataSample

    b, _, h, w = images.shape
    samples = [DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                           batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
               for _ in range(b)]
    results = model.predict(images, samples, rescale=False)
    arrays = {}
    for i, r in enumerate(results):
        inst = r.pred_instances
        arrays[f"det{i}_boxes"] = f32(inst.bboxes)
        arrays[f"det{i}_scores"] = f32(inst.scores)
        arrays[f"det{i}_labels"] = inst.labels.long().numpy()
    return arrays


def retinanet_post_margins(model, images, cls_scores, bbox_preds, test_cfg, above_cut: bool = False) -> dict[str, float]:
    """Distances to a tie of the official decisions: the per-level nms_pre cut, NMS, the max_per_img cut.

    Candidates are rebuilt as MMDetection's ``_predict_by_feat_single`` does (sigmoid, threshold, sort,
    top nms_pre per level, decode with clipping, drop empty boxes); the same for RTMDet (point priors,
    distance coder); ``above_cut``: see :func:`nms_margins`.
    """
    assert len(images) == 1, "margins are computed for a batch of one"
    h, w = images.shape[-2:]
    head = model.bbox_head
    sizes = [tuple(m.shape[-2:]) for m in cls_scores]
    anchors = head.prior_generator.grid_priors(sizes, device="cpu")
    c, pre_cut = head.cls_out_channels, float("inf")
    boxes, scores, labels = [], [], []
    for cls_map, reg_map, anc in zip(cls_scores, bbox_preds, anchors):
        score = cls_map[0].permute(1, 2, 0).reshape(-1, c).sigmoid()
        delta = reg_map[0].permute(1, 2, 0).reshape(-1, 4)
        idx = torch.nonzero(score > test_cfg["score_thr"])
        val = score[idx[:, 0], idx[:, 1]]
        val, order = val.sort(descending=True)
        if len(val) > test_cfg["nms_pre"]:
            pre_cut = min(pre_cut, float(val[test_cfg["nms_pre"] - 1] - val[test_cfg["nms_pre"]]))
        idx, val = idx[order[: test_cfg["nms_pre"]]], val[: test_cfg["nms_pre"]]
        box = head.bbox_coder.decode(anc[idx[:, 0]], delta[idx[:, 0]], max_shape=(h, w))
        keep = ((box[:, 2:] - box[:, :2]) > test_cfg["min_bbox_size"]).all(dim=1)
        boxes.append(box[keep]), scores.append(val[keep]), labels.append(idx[keep, 1])
    margins = nms_margins(torch.cat(boxes), torch.cat(scores), torch.cat(labels),
                          test_cfg["nms"]["iou_threshold"], test_cfg["max_per_img"], above_cut)
    return {"nms_pre_cut_score_gap": pre_cut, **margins}


def retinanet_assign(model, sizes) -> dict[str, np.ndarray]:
    from mmengine.structures import InstanceData

    anchors = torch.cat(model.bbox_head.prior_generator.grid_priors(sizes, device="cpu"))
    gt_boxes = torch.tensor(RETINANET_GTS[0])
    gt_labels = torch.tensor(RETINANET_GTS[1])
    res = model.bbox_head.assigner.assign(InstanceData(priors=anchors),
                                          InstanceData(bboxes=gt_boxes, labels=gt_labels))
    return {
        "assign_anchors": f32(anchors), "assign_gt_boxes": f32(gt_boxes), "assign_gt_labels": gt_labels.numpy(),
        "assign_gt_inds": res.gt_inds.long().numpy(), "assign_labels": res.labels.long().numpy(),
        "assign_max_overlaps": f32(res.max_overlaps),
    }


# ----------------------------------------------------------------------------- RTMDet (MMDetection)
def shared_aliases(model: torch.nn.Module) -> dict[str, str]:
    """{key: first key of the same tensor} of the official state dict (RTMDet's head convs shared by levels)."""
    first: dict[int, str] = {}
    aliases = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if id(value) in first:
            aliases[key] = first[id(value)]
        else:
            first[id(value)] = key
    return aliases


@torch.no_grad()
def rtmdet_fixture(src: Path, name: str, p: dict, seed: int) -> tuple[dict, dict]:
    from mmengine.config import Config
    from mmdet.registry import MODELS

    cfg_name = f"rtmdet_{p['variant']}_8xb32-300e_coco.py"
    cfg = Config.fromfile(str(src / "mmdet" / ".mim" / "configs" / "rtmdet" / cfg_name))
    cfg.model.backbone.init_cfg = None  # no download: every tensor is replaced below
    assert cfg.model.bbox_head.num_classes == NUM_CLASSES
    with contextlib.redirect_stdout(io.StringIO()):
        model = MODELS.build(cfg.model)
    spec = spec_of(model)
    aliases = shared_aliases(model)
    images = golden_input((2 if p["full"] else 1, *RTMDET_INPUT[1:]), seed)
    bias = p.get("distance_bias", DISTANCE_BIAS)
    model.load_state_dict(golden_state_dict(spec, seed, aliases, distance_bias=bias), strict=True)
    bn_scales = calibrate_batchnorms_(model, images)  # on the official model, layer after layer
    state = golden_state_dict(spec, seed, aliases, bn_scales, bias)
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items()), "the recipe does not rebuild the calibration"
    cls_scores, bbox_preds = model._forward(images)
    b, c = images.shape[0], model.bbox_head.cls_out_channels
    cls = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, c) for m in cls_scores], dim=1)
    reg = torch.cat([m.permute(0, 2, 3, 1).reshape(b, -1, 4) for m in bbox_preds], dim=1)
    arrays = {"input": f32(images), "cls": f32(cls), "reg": f32(reg)}
    meta = {
        "weights_recipe": ("tests/golden/weights.py::golden_state_dict(spec, seed, aliases, bn_scales, "
                           "distance_bias)"),
        "input_recipe": "tests/golden/weights.py::golden_input(input_shape, seed) (not stored)",
        "input_checksum": float(images.double().sum()),
        "official_config": f"mmdet/.mim/configs/rtmdet/{cfg_name}",
        "raw_layout": ("per level (B, C, H, W) / (B, 4, H, W) -> permute(0,2,3,1).reshape(B, -1, C|4), levels "
                       "concatenated: index (level, y, x); reg = the head's distances in pixels (x stride)"),
        "feature_sizes": [list(m.shape[-2:]) for m in cls_scores],
        "test_cfg": json.loads(json.dumps(cfg.model.test_cfg.to_dict())),
        "distance_bias": bias,
        "aliases": aliases,
        "bn_scales": bn_scales,
    }
    if p["full"]:
        arrays.update(retinanet_post(model, images))  # RTMDet.predict(rescale=False): predict_by_feat
        meta["detections"] = "official RTMDet.predict(rescale=False), img_shape = input shape, test_cfg above"
        meta["margins"] = merge_margins([
            retinanet_post_margins(model, images[i:i + 1], [m[i:i + 1] for m in cls_scores],
                                   [m[i:i + 1] for m in bbox_preds], cfg.model.test_cfg, above_cut=True)
            for i in range(b)])
        assign, margins = rtmdet_assign(model, cls, reg, [tuple(m.shape[-2:]) for m in cls_scores])
        arrays.update(assign)
        meta["margins"].update(margins)
        meta["assignment"] = ("official DynamicSoftLabelAssigner of the train_cfg (soft_center_radius 3, topk 13, "
                              "iou_weight 3) on image 0, fed with the head's class logits (cls[0]) and its boxes "
                              "decoded the official way (distance2bbox at the offset-0 points, no clamp)")
        meta["assign_conventions"] = {"gt_inds": "0 background, k = GT k-1", "labels": "-1 background",
                                      "max_overlaps": "IoU of the assigned GT; -1e8 background"}
        meta["loss_gts"] = [[boxes, labels] for boxes, labels in RTMDET_GTS]
        meta["loss"] = rtmdet_loss(model, images, cls_scores, bbox_preds)
    return {"spec": spec, "state": state}, {"arrays": arrays, "meta": meta}


def rtmdet_assign(model, cls, reg, sizes) -> tuple[dict[str, np.ndarray], dict[str, float]]:
    """The official assigner on image 0 and the distance of its decisions to a tie, for every image of the
    batch (the loss assigns them all)."""
    from mmdet.structures.bbox import distance2bbox
    from mmengine.structures import InstanceData

    head = model.bbox_head
    priors = torch.cat(head.prior_generator.grid_priors(sizes, device="cpu", with_stride=True))
    margins = []
    for i, (gts, labels) in enumerate(RTMDET_GTS):
        boxes = distance2bbox(priors, reg[i])
        gt = InstanceData(bboxes=torch.tensor(gts), labels=torch.tensor(labels))
        res = head.assigner.assign(InstanceData(scores=cls[i], bboxes=boxes, priors=priors), gt)
        margins.append(rtmdet_dsl_margins(head.assigner, priors, cls[i], boxes, gt.bboxes, gt.labels))
        if i == 0:
            arrays = {
                "assign_priors": f32(priors), "assign_pred_boxes": f32(boxes), "assign_gt_boxes": f32(gt.bboxes),
                "assign_gt_labels": gt.labels.numpy(), "assign_gt_inds": res.gt_inds.long().numpy(),
                "assign_labels": res.labels.long().numpy(), "assign_max_overlaps": f32(res.max_overlaps),
            }
    return arrays, merge_margins(margins)


def rtmdet_loss(model, images, cls_scores, bbox_preds) -> dict[str, float]:
    """The official ``loss_by_feat`` (QFL + GIoU over the sum of IoU targets) of the outputs on ``RTMDET_GTS``."""
    from mmengine.structures import InstanceData

    h, w = images.shape[-2:]
    gts = [InstanceData(bboxes=torch.tensor(b), labels=torch.tensor(l)) for b, l in RTMDET_GTS]
    metas = [dict(img_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w)) for _ in gts]
    losses = model.bbox_head.loss_by_feat(cls_scores, bbox_preds, gts, metas)
    return {k: float(sum(v)) for k, v in losses.items()}


def rtmdet_dsl_margins(assigner, priors, logits, boxes, gts, labels) -> dict[str, float]:
    """RTMDet DSLA decisions (cost as the official assigner builds it, soft centre prior included) and their
    distance to a tie."""
    import torch.nn.functional as F
    from mmdet.structures.bbox import bbox_overlaps

    centre = priors[:, None, :2]
    inside = torch.cat([centre - gts[:, :2], gts[:, 2:] - centre], dim=-1).min(dim=-1).values > 0
    valid = inside.any(dim=1)
    ious = bbox_overlaps(boxes[valid], gts)
    soft = F.one_hot(labels, logits.shape[1]).float()[None] * ious[..., None]
    x = logits[valid][:, None].expand_as(soft)
    cost = (F.binary_cross_entropy_with_logits(x, soft, reduction="none") * (soft - x.sigmoid()).abs().pow(2)).sum(-1)
    cost = cost - torch.log(ious + 1e-7) * assigner.iou_weight
    gt_centre = (gts[:, :2] + gts[:, 2:]) / 2
    dist = (priors[valid, None, :2] - gt_centre[None]).pow(2).sum(-1).sqrt() / priors[valid, 2, None]
    cost = cost + torch.pow(10, dist - assigner.soft_center_radius)
    return dynamic_k_margins(cost, ious, assigner.topk)


def dynamic_k_margins(cost: torch.Tensor, ious: torch.Tensor, topk: int) -> dict[str, float]:
    """Dynamic k: distance of each GT's top-k IoU sum to its integer cut, gap between the k-th and (k+1)-th cost
    of a GT, and between the best and second GT of a prior matched twice (valid priors × GTs)."""
    topk_sum = ious.topk(min(topk, len(ious)), dim=0).values.sum(0)
    frac = topk_sum - topk_sum.floor()
    k_gap = float(torch.where(topk_sum >= 0.5, torch.minimum(frac, 1 - frac), 1 - topk_sum).min())
    ks = topk_sum.int().clamp(min=1)
    sorted_cost = cost.sort(dim=0).values
    cost_gap = min((float(sorted_cost[k, g] - sorted_cost[k - 1, g]) for g, k in enumerate(ks.tolist())
                    if k < len(cost)), default=float("inf"))
    matched = torch.zeros_like(cost, dtype=torch.bool)
    for g, k in enumerate(ks.tolist()):
        matched[cost[:, g].topk(min(k, len(cost)), largest=False).indices, g] = True
    multi = matched.sum(1) > 1
    if multi.any():
        two = cost[multi].sort(dim=1).values[:, :2]
        cost_gap = min(cost_gap, float((two[:, 1] - two[:, 0]).min()))
    return {"dsl_k_gap": k_gap, "dsl_cost_gap": cost_gap, "dsl_conflicted_priors": int(multi.sum())}


# ----------------------------------------------------------------------------- DeFCN (cvpods)
def defcn_recipe(p: dict) -> dict:
    """The recipe options of a DeFCN preset (recorded in its fixture, read back by ``fixture_state_dict``)."""
    return {k: p[k] for k in ("distance_bias", "norm_affine", "level_scale", "filter_gain")}


def defcn_flat(levels: list[torch.Tensor], k: int) -> torch.Tensor:
    """Official flattening: ``permute_to_N_HWA_K`` per level, levels concatenated (B, N, K)."""
    from cvpods.modeling.meta_arch.retinanet import permute_to_N_HWA_K

    return torch.cat([permute_to_N_HWA_K(x, k) for x in levels], dim=1)


def defcn_targets(official, h: int, w: int) -> list:
    """``DEFCN_GTS`` as the official ``Instances`` (gt_boxes, gt_classes) of an h × w image."""
    targets = []
    for boxes, labels in DEFCN_GTS:
        inst = official.structures.Instances((h, w))
        inst.gt_boxes = official.structures.Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.tensor(labels)
        targets.append(inst)
    return targets


@torch.no_grad()
def defcn_fixture(official, name: str, p: dict, seed: int) -> tuple[dict, dict]:
    from official_defcn import CONFIG_DIR, build_official, param_counts

    model, cfg = build_official(official, NUM_CLASSES)
    spec = spec_of(model)
    recipe = defcn_recipe(p)
    state = golden_state_dict(spec, seed, **recipe)
    model.load_state_dict(state, strict=True)
    model.eval()
    images = golden_input(DEFCN_INPUT, seed)
    b, _, h, w = images.shape

    # raw outputs: backbone (FPN P3-P7) → FCOSHead (towers, cls_score, Scale/ReLU/stride, 3DMF, filter); the
    # ResNet stages' activations recorded on the way (std, and how much of them depends on the input: the two
    # images are independent draws, so std(a0 - a1) / (sqrt(2) std(a)) is ~1 for a fully input-driven map, 0 for
    # a constant one)
    acts = {}
    hooks = [mod.register_forward_hook(lambda m, i, o, n=n: acts.__setitem__(n, o.detach().clone()))
             for n, mod in model.backbone.bottom_up.named_children() if n == "stem" or n.startswith("res")]
    feats = model.backbone(images)
    for hook in hooks:
        hook.remove()
    feats = [feats[f] for f in model.in_features]
    box_cls, box_delta, box_filter = model.head(feats)
    shifts = model.shift_generator(feats)
    cls = defcn_flat(box_cls, model.num_classes).clone()
    reg = defcn_flat(box_delta, 4).clone()
    filt = defcn_flat(box_filter, 1).clone()
    points = torch.cat(shifts[0]).clone()
    sizes = [list(f.shape[-2:]) for f in feats]
    acts.update({f"p{3 + i}": f for i, f in enumerate(feats)})
    acts.update({"cls": cls, "filter": filt, "reg/stride": reg / torch.cat(
        [torch.full((h_ * w_, 1), float(s_)) for (h_, w_), s_ in zip(sizes, model.fpn_strides)])})
    activation_stats = {k: {"std": round(float(a.std()), 3),
                            "input_dependent": round(float((a[0] - a[1]).std() / (math.sqrt(2) * a.std())), 3)}
                        for k, a in acts.items()}
    arrays = {"input": f32(images), "cls": f32(cls), "reg": f32(reg), "filter": f32(filt), "points": f32(points)}

    # official inference: the eval forward (inference → detector_postprocess at the input size); the model's
    # own normaliser is replaced by the identity since the fixture's input is already the network input
    model.normalizer = lambda x: x
    results = model([{"image": img} for img in images])
    # the same before detector_postprocess (on copies: inference_single_image applies sigmoid_ in place, to
    # views of the head outputs for the filter)
    raw_results = model.inference([x.clone() for x in box_cls], [x.clone() for x in box_delta],
                                  [x.clone() for x in box_filter], shifts,
                                  official.structures.ImageList(images, [(h, w)] * b))
    clipped = 0
    for i, (r, raw) in enumerate(zip(results, raw_results)):
        inst = r["instances"]
        arrays[f"det{i}_boxes"] = f32(inst.pred_boxes.tensor)
        arrays[f"det{i}_scores"] = f32(inst.scores)
        arrays[f"det{i}_labels"] = inst.pred_classes.long().numpy()
        assert len(inst) == len(raw), "detector_postprocess dropped an empty box"
        clipped += int((inst.pred_boxes.tensor != raw.pred_boxes.tensor).any(dim=1).sum())
    margins = merge_margins([defcn_post_margins(cls[i], filt[i], cfg) for i in range(b)])

    # official POTO (get_ground_truth, spied: the quality matrix fed to linear_sum_assignment), aux assignment
    # and losses on DEFCN_GTS, from the head outputs above
    targets = defcn_targets(official, h, w)
    calls = []
    lsa = official.fcos.linear_sum_assignment

    def spy(cost, maximize=False):
        res = lsa(cost, maximize=maximize)
        calls.append((np.array(cost, copy=True), res))
        return res

    official.fcos.linear_sum_assignment = spy
    try:
        with official.events.EventStorage(0) as storage:
            gt_classes, gt_deltas = model.get_ground_truth(shifts, targets, box_cls, box_delta, box_filter)
            aux_classes = model.get_aux_ground_truth(shifts, targets, box_cls, box_delta)
            losses = model.losses(gt_classes, gt_deltas, box_cls, box_delta, box_filter)
            losses.update(model.aux_losses(aux_classes, box_cls))
            scalars = {k: float(storage.history(k).latest()) for k in ("num_fg_per_gt", "num_fg_per_gt_aux")}
    finally:
        official.fcos.linear_sum_assignment = lsa
    loss = {k: float(v) for k, v in losses.items()}
    # cross-check: the official training forward (model.train(), same weights, same input) gives the same losses
    model.train()
    with official.events.EventStorage(0):
        fwd = model([{"image": img, "instances": t} for img, t in zip(images, targets)])
    model.eval()
    assert {k: float(v) for k, v in fwd.items()} == loss, (fwd, loss)

    bg = model.num_classes
    arrays["poto_labels"] = torch.where(gt_classes == bg, -1, gt_classes).long().numpy()
    arrays["poto_reg_targets"] = f32(gt_deltas)
    poto_gt_inds = torch.zeros(b, len(points), dtype=torch.long)
    ties = []
    for i, (cost, (rows, cols)) in enumerate(calls):
        arrays[f"poto_quality{i}"] = cost.astype(np.float32)
        poto_gt_inds[i, torch.from_numpy(cols)] = torch.from_numpy(rows) + 1
        gap, tie = poto_margins(cost, rows, cols, lsa)
        margins["poto_cost_gap"] = min(margins.get("poto_cost_gap", float("inf")), gap)
        ties += [{"image": i, **t} for t in tie]
    arrays["poto_gt_inds"] = poto_gt_inds.numpy()
    boundary = defcn_boundary_pairs(model, points, sizes, targets)
    assert (arrays["poto_labels"] >= 0).sum() == sum(len(t) for t in targets), "POTO: one point per GT"
    arrays["aux_labels"] = torch.where(aux_classes == bg, -1, aux_classes).long().numpy()
    aux_inds = []
    for i, t in enumerate(targets):
        labels_i, inds_i, m = defcn_aux(model, shifts[i], t, cls[i], reg[i])
        assert torch.equal(labels_i, torch.from_numpy(arrays["aux_labels"][i])), "aux recomputation differs"
        aux_inds.append(inds_i)
        for k, v in m.items():
            margins[k] = min(margins.get(k, float("inf")), v) if k.endswith("gap") else margins.get(k, 0) + v
    arrays["aux_gt_inds"] = torch.stack(aux_inds).numpy()
    boundary["aux_labels_changed_if_edge_counted_inside"] = sum(
        int((defcn_aux(model, shifts[i], t, cls[i], reg[i], strict=False)[0] != torch.from_numpy(
            arrays["aux_labels"][i])).sum()) for i, t in enumerate(targets))
    num_fg = int((gt_classes != bg).sum())
    num_fg_aux = int((aux_classes != bg).sum())

    test_cfg = {  # the layout the other fixtures use, from the official config values
        "score_thr": float(cfg.MODEL.FCOS.SCORE_THRESH_TEST),
        "nms_pre": int(cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST),
        "nms": {"type": "nms", "iou_threshold": float(cfg.MODEL.FCOS.NMS_THRESH_TEST)},
        "max_per_img": int(cfg.TEST.DETECTIONS_PER_IMAGE),
    }
    meta = {
        "weights_recipe": ("tests/golden/weights.py::golden_state_dict(spec, seed, distance_bias=, norm_affine=, "
                           "level_scale=, filter_gain=) with the values below (fixture_state_dict reads them)"),
        **recipe,
        "input_recipe": "tests/golden/weights.py::golden_input(input_shape, seed) (not stored)",
        "input_checksum": float(images.double().sum()),
        "input_convention": (
            "the network input itself, already normalised (the official preprocess_image computes "
            "(BGR 0-255 image - PIXEL_MEAN [103.53, 116.28, 123.675]) / PIXEL_STD [1, 1, 1], then pads to a "
            "multiple of 32): passed straight to model.backbone; for the official forward runs (detections, "
            "training-loss cross-check) model.normalizer was replaced by the identity. H and W are multiples of "
            "128, so nothing is padded and every level is an exact downsampling"),
        "official_config": f"{CONFIG_DIR}/config.py (model: net.py build_model, fcos.py FCOS / FCOSHead / "
                           "MaxFiltering)",
        "official_params": {k: v for k, v in param_counts(model).items() if "." not in k},
        "params_note": ("params exclude the FrozenBN weight/bias/running_mean/running_var (buffers in cvpods, "
                        "but in the state dict: spec holds them); trainable: FREEZE_AT=2 freezes stem and res2"),
        "frozen_bn": ("cvpods FrozenBatchNorm2d: y = x * w / sqrt(var + 1e-5) + (b - mean * w / sqrt(var + 1e-5)), "
                      "eps 1e-5, four buffers, no num_batches_tracked. The recipe's random statistics keep the "
                      "ResNet sane without calibration (no bn_scales; calibrate_batchnorms_ would not even see "
                      "FrozenBN, which is no _BatchNorm): see activation_stats"),
        "activation_stats": activation_stats,
        "raw_layout": (
            "per level (B, K, H_l, W_l) -> official permute_to_N_HWA_K (view(B, 1, K, H, W).permute(0, 3, 4, 1, 2)"
            ".reshape(B, -1, K)), levels P3..P7 concatenated: row = level offset + y * W_l + x. cls: cls_score "
            "logits (K = 80); reg: the head's regression output ReLU(scale_l * bbox_pred) * stride_l = (l, t, r, b) "
            "distances in input pixels (K = 4); filter: the 3DMF filter logits (K = 1). Score of (point, class) = "
            "sigmoid(cls) * sigmoid(filter)"),
        "points_layout": ("(N, 2) official ShiftGenerator (OFFSET 0.5, NUM_SHIFTS 1) shifts (x, y) = "
                          "((i + 0.5) * stride, (j + 0.5) * stride), same row order as cls/reg/filter; a box is "
                          "(x - l, y - t, x + r, y + b) (Shift2BoxTransform, weights 1)"),
        "feature_sizes": sizes,
        "level_point_offsets": [int(x) for x in np.cumsum([0] + [hh * ww for hh, ww in sizes])],
        "strides": [int(s) for s in model.fpn_strides],
        "test_cfg": test_cfg,
        "official_test_cfg": {
            "MODEL.FCOS.SCORE_THRESH_TEST": float(cfg.MODEL.FCOS.SCORE_THRESH_TEST),
            "MODEL.FCOS.TOPK_CANDIDATES_TEST": int(cfg.MODEL.FCOS.TOPK_CANDIDATES_TEST),
            "MODEL.NMS_TYPE": cfg.MODEL.NMS_TYPE,
            "MODEL.FCOS.NMS_THRESH_TEST": float(cfg.MODEL.FCOS.NMS_THRESH_TEST),
            "TEST.DETECTIONS_PER_IMAGE": int(cfg.TEST.DETECTIONS_PER_IMAGE),
        },
        "detections": (
            "official eval forward (FCOS.inference → inference_single_image per image, then detector_postprocess "
            "at the input size: scale 1, clip to the image, drop empty boxes). Per level: scores "
            "sigmoid(cls) * sigmoid(filter) over (point, class), sorted, top 1000, then > 0.05; levels "
            "concatenated; NMS_TYPE 'normal' with NMS_THRESH_TEST 1.0 = cvpods batched_nms -> torchvision "
            "batched_nms(iou 1.0), which suppresses nothing (IoU > 1 never holds) and returns the candidates "
            "sorted by score; the first 100 kept. So: the 100 best (point, class) scores above 0.05, by "
            "decreasing score. Labels 0-79, boxes xyxy in input pixels"),
        "detections_clipped": clipped,
        "detections_clipped_note": ("detections (of both images) whose box detector_postprocess clipped to "
                                    "[0, W] x [0, H]; the unclipped box is point -/+ reg"),
        "assignment": (
            "official FCOS.get_ground_truth (POTO) and get_aux_ground_truth on the GT sets 'gts' of both images, "
            "fed with the raw outputs above (box_cls, box_delta, box_filter lists of the head). POTO: quality "
            "Q = p^(1-0.8) * IoU(gt, predicted box)^0.8 with p = sigmoid(cls) * sigmoid(filter) at the GT's class; "
            "Q = -1 where the point is not strictly inside (centre ± 1.5 * stride_l) ∩ GT box; "
            "scipy.optimize.linear_sum_assignment(Q, maximize=True) on the G × N matrix: each GT gets exactly one "
            "point. Aux: Q with p = sigmoid(cls) only; per GT the top 9 points of every level are candidates; "
            "threshold = mean + std of those 45 candidate Q (torch.std: unbiased, N - 1); positive if candidate, "
            "Q >= threshold and strictly inside the GT box; a point positive for several GTs takes the one of "
            "largest Q"),
        "assign_conventions": {
            "poto_labels": "(B, N) class id of the matched GT, -1 background (official: 80 = background)",
            "poto_gt_inds": "(B, N) 0 background, k = GT k-1 of that image (from the spied Hungarian result)",
            "poto_reg_targets": ("(B, N, 4) official gt_shifts_deltas: (l, t, r, b) pixel distances from the point "
                                 "to its GT; 0 on background"),
            "poto_quality{i}": ("(G_i, N) the quality matrix the official code passed to linear_sum_assignment "
                                "for image i (rows = GTs in 'gts' order; -1 outside the centre-sampling prior)"),
            "aux_labels": "(B, N) class id, -1 background (official: 80)",
            "aux_gt_inds": ("(B, N) 0 background, k = GT k-1 (recomputed from the official steps and checked "
                            "against the official aux_labels)"),
        },
        "gts": [[boxes, labels] for boxes, labels in DEFCN_GTS],
        "poto_no_candidate_gts": ties,
        "poto_no_candidate_note": (
            "these GTs hold no point strictly inside (centre ± 1.5 stride) ∩ box on any level (pitfall: POTO keeps "
            "them, at Q = -1 everywhere): every point no other GT takes is an optimal match, a tie by construction. "
            "The official pick is scipy's (version in source): the lowest-index free point ('first_free_point'), "
            "unchanged when the other rows are perturbed by 1e-6. A re-implementation must give such a GT exactly "
            "one point; it is the same point when it passes the same matrix to scipy's linear_sum_assignment"),
        "strict_inside_boundary_pairs": boundary,
        "strict_inside_note": (
            "'inside' is strict everywhere (official get_deltas(...).min(dim=-1).values > 0): (GT, point) pairs "
            "exactly on the edge of the centre-sampling box (POTO) or of the GT box (aux) are outside. Counts of "
            "such pairs above; with '>=' instead, poto_quality{i} differs at those pairs and the aux labels change "
            "at 'aux_labels_changed_if_edge_counted_inside' points"),
        "loss": loss,
        "loss_normalisers": {
            "num_fg": num_fg, "num_fg_aux": num_fg_aux, "world_size": 1,
            "rule": ("loss_cls = focal(p = sigmoid(cls) * sigmoid(filter), F.binary_cross_entropy, alpha 0.25, "
                     "gamma 2, summed over all B * N points and 80 classes) / max(1, num_fg); loss_box_reg = "
                     "GIoU loss (iou_loss box_mode 'ltrb') summed over the POTO positives / max(1, num_fg) * 2.0; "
                     "loss_cls_aux = sigmoid_focal_loss on the cls logits (alpha 0.25, gamma 2) summed / max(1, "
                     "num_fg_aux). num_fg = comm.all_reduce(#positives of the whole batch) / world_size: on one "
                     "process the batch total (per-GPU average across GPUs), not per image; POTO's equals the "
                     "number of GTs"),
        },
        "event_storage": scalars,
        "margins": margins,
    }
    return {"spec": spec, "state": state}, {"arrays": arrays, "meta": meta}


def defcn_boundary_pairs(model, points: torch.Tensor, sizes: list, targets: list) -> dict[str, int]:
    """(GT, point) pairs exactly on the edge of POTO's centre-sampling box or of the GT box (aux): the official
    strict ``> 0`` excludes them (exact in float: integer boxes, points at odd multiples of 4)."""
    stride = torch.cat([torch.full((h * w,), float(s)) for (h, w), s in zip(sizes, model.fpn_strides)])
    on_centre_box = on_gt_box = 0
    for t in targets:
        gt = t.gt_boxes.tensor
        ctr = (gt[:, :2] + gt[:, 2:]) / 2
        r = stride[None, :, None] * model.center_sampling_radius
        box = torch.cat([torch.maximum(ctr[:, None] - r, gt[:, None, :2]),
                         torch.minimum(ctr[:, None] + r, gt[:, None, 2:])], dim=-1)
        d = torch.cat([points[None] - box[..., :2], box[..., 2:] - points[None]], dim=-1).min(dim=-1).values
        on_centre_box += int((d == 0).sum())
        d = torch.cat([points[None] - gt[:, None, :2], gt[:, None, 2:] - points[None]], dim=-1).min(dim=-1).values
        on_gt_box += int((d == 0).sum())
    return {"poto_centre_sampling_box": on_centre_box, "aux_gt_box": on_gt_box}


def defcn_post_margins(cls: torch.Tensor, filt: torch.Tensor, cfg) -> dict:
    """One image: the 100-detection cut and the order of the detections (the official NMS with IoU 1.0
    suppresses nothing, and a level's top 1000 always holds the overall top 100)."""
    scores = (cls.sigmoid() * filt.sigmoid()).flatten()
    top = scores[scores > cfg.MODEL.FCOS.SCORE_THRESH_TEST].sort(descending=True).values
    k = int(cfg.TEST.DETECTIONS_PER_IMAGE)
    assert len(top) > k, "the 100-detection cut is not exercised"
    gaps = top[: k + 1][:-1] - top[: k + 1][1:]
    return {"max_det_cut_score_gap": float(gaps[k - 1]), "det_order_score_gap": float(gaps[: k - 1].min()),
            "candidates_above_thr": len(top)}


def poto_margins(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray, lsa) -> tuple[float, list[dict]]:
    """Uniqueness of the Hungarian optimum: for every matched (GT, point) of a GT with candidates, the drop of the
    optimum when that pair is forbidden (0 = another assignment is as good). GTs without a candidate (a row of
    -1) are tied over every free point by construction: reported with the official pick, which stays the same
    when the other rows are perturbed by 1e-6."""
    q = cost.astype(np.float64)
    opt = q[rows, cols].sum()
    gap, ties = float("inf"), []
    for g, j in zip(rows, cols):
        if (q[g] < 0).all():
            rng = np.random.default_rng(int(g))
            picks = set()
            for _ in range(5):
                noisy = np.where(q >= 0, q + 1e-6 * rng.random(q.shape), q)
                r2, c2 = lsa(noisy, maximize=True)
                picks.add(int(c2[list(r2).index(g)]))
            ties.append({"gt": int(g), "point": int(j), "pick_stable_under_1e-6_noise": picks == {int(j)},
                         "first_free_point": int(min(set(range(q.shape[1])) - set(int(c) for c in cols if c != j)))})
            continue
        forbidden = q.copy()
        forbidden[g, j] = -1e6
        r2, c2 = lsa(forbidden, maximize=True)
        gap = min(gap, float(opt - forbidden[r2, c2].sum()))
    return gap, ties


def defcn_aux(model, shifts_i: list[torch.Tensor], target, cls_i: torch.Tensor, reg_i: torch.Tensor,
              strict: bool = True):
    """The official aux assignment's steps for one image (to recover each positive's GT and the decisions'
    distance to a tie): labels (-1 bg), gt_inds (0 bg, k = GT k-1), margins. ``strict=False``: a point on the
    GT box's edge counts as inside (not the official rule; to tell whether the fixture sees the difference)."""
    from cvpods.structures import Boxes, pairwise_iou

    pts = torch.cat(shifts_i)
    gt = target.gt_boxes.tensor
    prob = cls_i.sigmoid()[:, target.gt_classes].t()
    boxes = model.shift2box_transform.apply_deltas(reg_i, pts)
    q = prob ** (1 - model.poto_alpha) * pairwise_iou(target.gt_boxes, Boxes(boxes)) ** model.poto_alpha
    cand, st, topk_gap = [], 0, float("inf")
    cq_levels = []
    for s in shifts_i:
        ed = st + len(s)
        vals, idx = q[:, st:ed].topk(model.poto_aux_topk, dim=1)
        cand.append(st + idx)
        cq_levels.append((st, ed))
        st = ed
    cand = torch.cat(cand, dim=1)
    inside = model.shift2box_transform.get_deltas(pts, gt.unsqueeze(1)).min(dim=-1).values
    inside = inside > 0 if strict else inside >= 0
    cq = q.gather(1, cand)
    thr = cq.mean(dim=1, keepdim=True) + cq.std(dim=1, keepdim=True)
    fg = torch.zeros_like(inside).scatter_(1, cand, True) & (q >= thr)
    qm = q.clone()
    qm[~inside] = -1
    qm[~fg] = -1
    best, idx = qm.max(dim=0)
    labels = torch.where(best != -1, target.gt_classes[idx], torch.full_like(idx, -1))
    gt_inds = torch.where(best != -1, idx + 1, torch.zeros_like(idx))
    # margins: |Q - threshold| of the candidates inside the box; the 9th/10th gap of a level where either
    # could be positive; best vs second GT of a point positive for several
    is_cand = torch.zeros_like(inside).scatter_(1, cand, True)
    relevant = is_cand & inside
    thr_gap = float((q - thr).abs()[relevant].min()) if relevant.any() else float("inf")
    for st, ed in cq_levels:
        if ed - st <= model.poto_aux_topk:
            continue
        v = q[:, st:ed].sort(dim=1, descending=True).values
        k = model.poto_aux_topk
        near = (v[:, k] >= thr[:, 0] - 1e-3) | (v[:, k - 1] >= thr[:, 0] - 1e-3)
        if near.any():
            topk_gap = min(topk_gap, float((v[:, k - 1] - v[:, k])[near].min()))
    multi = (qm >= 0).sum(dim=0) > 1
    conflict_gap = float("inf")
    if multi.any():
        two = qm[:, multi].sort(dim=0, descending=True).values[:2]
        conflict_gap = float((two[0] - two[1]).min())
    return labels, gt_inds, {"aux_thr_cost_gap": thr_gap, "aux_topk_cost_gap": topk_gap,
                             "aux_conflict_cost_gap": conflict_gap, "aux_conflicted_points": int(multi.sum())}


# ----------------------------------------------------------------------------- robustness margins
# A fixture is only written when every discrete decision of the official post-processing and assigner is
# far from a tie compared with the float noise between two implementations (raw outputs differ by ~1e-6):
# otherwise an exact comparison would test the tie-breaking, not the model. Else the next seed is tried.
MIN_MARGINS = {
    "score_gap": 2e-6,  # NMS order of overlapping same-class pairs, max_per_img cut, nms_pre cut
    "iou_gap": 1e-5,  # |IoU - threshold| (NMS, MaxIoU thresholds)
    "cost_gap": 1e-4,  # DSLA: k-th vs (k+1)-th cost of a GT, best vs second GT of a conflicted prior
    "k_gap": 1e-4,  # DSLA: distance of a GT's top-k IoU sum to the integer it is truncated at
}


def nms_margins(boxes, scores, labels, iou_thr: float, max_det: int, above_cut: bool = False) -> dict[str, float]:
    """Class-aware NMS + top ``max_det``: min |IoU - iou_thr| over same-class pairs, min score gap of
    same-class pairs that suppress one another, and the score gap at the ``max_det`` cut.

    ``above_cut``: only pairs whose scores both reach the lowest detection kept (less the minimum score gap)
    count. NMS keeps or drops a box by the boxes scored above it only, so boxes under the cut cannot change the
    detections (RTMDet's 0.001 threshold leaves ~30000 candidates per image, thousands of them overlapping
    within 1e-8 of each other's scores far below the cut)."""
    from torchvision.ops import batched_nms, box_iou

    kept = scores[batched_nms(boxes, scores, labels, iou_thr)].sort(descending=True).values
    floor = float("-inf")
    if above_cut and len(kept) > max_det:
        floor = float(kept[max_det - 1]) - MIN_MARGINS["score_gap"]
    iou_gap = order_gap = float("inf")
    for c in labels.unique():
        m = (labels == c) & (scores >= floor)
        if int(m.sum()) < 2:
            continue
        b, s = boxes[m], scores[m]
        i, j = torch.triu_indices(len(b), len(b), 1)
        iou = box_iou(b, b)[i, j]
        iou_gap = min(iou_gap, float((iou - iou_thr).abs().min()))
        sup = iou > iou_thr
        if sup.any():
            order_gap = min(order_gap, float((s[i] - s[j]).abs()[sup].min()))
    cut = float(kept[max_det - 1] - kept[max_det]) if len(kept) > max_det else float("inf")
    return {"nms_iou_gap": iou_gap, "nms_order_score_gap": order_gap, "max_det_cut_score_gap": cut,
            "candidates": len(scores), "kept_before_cut": len(kept)}


def dsl_margins(assigner, a: dict) -> dict[str, float]:
    """DSLA decisions (cost as the official assigner builds it) and their distance to a tie."""
    import torch.nn.functional as F
    from nanodet.model.loss.iou_loss import bbox_overlaps

    priors, logits, boxes = (torch.from_numpy(a[k])
                             for k in ("assign_priors", "assign_pred_logits", "assign_pred_boxes"))
    gts, labels = torch.from_numpy(a["assign_gt_boxes"]), torch.from_numpy(a["assign_gt_labels"])
    centre = priors[:, None, :2]
    inside = torch.cat([centre - gts[:, :2], gts[:, 2:] - centre], dim=-1).min(dim=-1).values > 0
    valid = inside.any(dim=1)
    ious = bbox_overlaps(boxes[valid], gts)
    soft = F.one_hot(labels, logits.shape[1]).float()[None] * ious[..., None]
    x = logits[valid][:, None].expand_as(soft)
    cost = (F.binary_cross_entropy_with_logits(x, soft, reduction="none") * (soft - x.sigmoid()).abs().pow(2)).sum(-1)
    cost = cost - torch.log(ious + 1e-7) * assigner.iou_factor
    topk_sum = ious.topk(min(assigner.topk, len(ious)), dim=0).values.sum(0)
    frac = topk_sum - topk_sum.floor()
    k_gap = float(torch.where(topk_sum >= 0.5, torch.minimum(frac, 1 - frac), 1 - topk_sum).min())
    ks = topk_sum.int().clamp(min=1)
    sorted_cost = cost.sort(dim=0).values
    cost_gap = min(float(sorted_cost[k, g] - sorted_cost[k - 1, g]) for g, k in enumerate(ks.tolist()) if k < len(cost))
    matched = torch.zeros_like(cost, dtype=torch.bool)
    for g, k in enumerate(ks.tolist()):
        matched[cost[:, g].topk(k, largest=False).indices, g] = True
    multi = matched.sum(1) > 1
    if multi.any():
        two = cost[multi].sort(dim=1).values[:, :2]
        cost_gap = min(cost_gap, float((two[:, 1] - two[:, 0]).min()))
    return {"dsl_k_gap": k_gap, "dsl_cost_gap": cost_gap, "dsl_conflicted_priors": int(multi.sum())}


def max_iou_margins(a: dict, cfg) -> dict[str, float]:
    """MaxIoU: distance of every anchor's best IoU to the thresholds; gap between each GT's best IoU and
    the next lower IoU of that GT (the low-quality match takes every anchor *equal* to the best)."""
    from torchvision.ops import box_iou

    iou = box_iou(torch.from_numpy(a["assign_gt_boxes"]), torch.from_numpy(a["assign_anchors"]))
    best = iou.max(dim=0).values
    thr_gap = min(float((best - cfg["neg_iou_thr"]).abs().min()), float((best - cfg["pos_iou_thr"]).abs().min()))
    gt_best = iou.max(dim=1, keepdim=True).values
    below = torch.where(iou < gt_best, iou, torch.full_like(iou, -1.0)).max(dim=1, keepdim=True).values
    return {"max_iou_thr_iou_gap": thr_gap, "max_iou_gt_best_gap": float((gt_best - below).min()),
            "max_iou_gt_best_ties": int((iou == gt_best).sum())}


def margins_ok(margins: dict) -> list[str]:
    """Names of the margins below their minimum."""
    bad = []
    for key, value in margins.items():
        for kind, minimum in MIN_MARGINS.items():
            if key.endswith(kind) and value < minimum:
                bad.append(f"{key}={value:.2e}")
    return bad


def make(builder, name: str, p: dict, tries: int = 50):
    """Build the fixture with the preset's seed; for a ``full`` preset, the first seed (seed, seed + 100,
    …) whose decisions are all clear of ties, whose NMS suppresses something and that has more NMS survivors
    than max_per_img in at least one image (so the cut is exercised)."""
    for attempt in range(tries):
        seed = p["seed"] + 100 * attempt
        weights, fixture = builder(name, p, seed)
        margins = fixture["meta"].get("margins", {})
        bad = margins_ok(margins)
        if "kept_before_cut" in margins:  # DeFCN's NMS (IoU 1.0) suppresses nothing by design
            if margins["kept_before_cut"] <= fixture["meta"]["test_cfg"]["max_per_img"]:
                bad.append(f"kept_before_cut={margins['kept_before_cut']} (the max_per_img cut is not exercised)")
            if margins["kept_before_cut"] == margins["candidates"]:
                bad.append("NMS suppresses nothing")
        if not bad:
            return seed, weights, fixture
        print(f"  {name}: seed {seed} rejected ({', '.join(bad)})")
    raise SystemExit(f"{name}: no seed in {tries} tries keeps the decisions clear of ties")


# ----------------------------------------------------------------------------- writing
def write(out: Path, name: str, p: dict, seed: int, weights: dict, fixture: dict, source: dict) -> None:
    arrays, meta = fixture["arrays"], fixture["meta"]
    stored = {k: v for k, v in arrays.items() if not (k == "input" and "input_recipe" in meta)}
    doc = {
        "preset": name,
        "family": p["family"],
        "num_classes": NUM_CLASSES,
        "seed": seed,
        "weights_recipe": "tests/golden/weights.py::golden_state_dict(spec, seed)",
        "source": source,
        **meta,
        "input_shape": list(arrays["input"].shape),
        "arrays": {k: [str(v.dtype), list(v.shape)] for k, v in stored.items()},
        "spec": [[k, shape] for k, shape in weights["spec"]],
        "checksums": checksums(weights["state"]),
    }
    (out / f"{name}.json").write_text(dump_json(doc))
    np.savez_compressed(out / f"{name}.npz", **stored)
    summary = f"{name}: {len(weights['spec'])} keys, cls {arrays['cls'].shape}, reg {arrays['reg'].shape}"
    if "poto_gt_inds" in arrays:
        dets = [len(arrays[k]) for k in arrays if k.endswith("_scores")]
        summary += (f", seed {seed}, detections {dets}, POTO positives {int((arrays['poto_gt_inds'] > 0).sum())}, "
                    f"aux positives {int((arrays['aux_gt_inds'] > 0).sum())}, loss {fixture['meta']['loss']}")
    elif "det0_scores" in arrays:
        dets = [len(arrays[k]) for k in arrays if k.endswith("_scores")]
        gi = arrays["assign_gt_inds"]
        summary += f", seed {seed}, detections {dets}, positives {int((gi > 0).sum())}/{gi.size} per GT " + str(
            np.bincount(gi[gi > 0], minlength=int(gi.max()) + 1)[1:].tolist())
    print(summary)


def dump_json(doc: dict) -> str:
    """One line per top-level item, and one per entry of the long ``spec`` / ``checksums`` / ``aliases`` /
    ``bn_scales`` (diffable)."""
    lines = []
    for key, value in doc.items():
        if key == "spec":
            body = ",\n  ".join(json.dumps(v) for v in value)
            lines.append(f'{json.dumps(key)}: [\n  {body}\n ]')
        elif key in ("checksums", "aliases", "bn_scales"):
            body = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v)}" for k, v in value.items())
            lines.append(f'{json.dumps(key)}: {{\n  {body}\n }}')
        else:
            lines.append(f"{json.dumps(key)}: {json.dumps(value)}")
    return "{\n " + ",\n ".join(lines) + "\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "tests" / "golden")
    parser.add_argument("--only", choices=("nanodet", "retinanet", "rtmdet", "defcn"))
    parser.add_argument("--preset", choices=sorted(PRESETS), help="write this preset's fixture only")
    args = parser.parse_args()
    if args.preset:  # its family only; the other fixtures are left as they are
        args.only = args.only or PRESETS[args.preset]["family"]
        for other in [n for n in PRESETS if n != args.preset]:
            del PRESETS[other]
    torch.set_num_threads(1)
    base = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine()}
    if args.only in (None, "nanodet"):
        from official_nanodet import import_official

        official = import_official(os.environ.get("NANODET_REPO"))
        source = {**base, "official": "RangiLyu/nanodet", "commit": git_commit(official.repo)}
        for name, p in PRESETS.items():
            if p["family"] == "nanodet":
                write(args.out, name, p, *make(partial(nanodet_fixture, official), name, p), source)
    if args.only in (None, "retinanet", "rtmdet"):
        from retinanet_parity import import_mmdet

        src = os.environ.get("MMDET_SRC")
        if not src:
            raise SystemExit("set MMDET_SRC to the folder holding mmdet/, mmengine/ and mmcv/ (see the docstring)")
        mmdet = import_mmdet(src)
        import mmcv
        import mmengine

        source = {**base, "official": "open-mmlab/mmdetection (PyPI wheel)", "mmdet": mmdet.__version__,
                  "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
                  "nms": "mmcv.ops stand-in calling torchvision (benchmarks/retinanet_parity.py)"}
        builders = {"retinanet": retinanet_fixture, "rtmdet": rtmdet_fixture}
        for name, p in PRESETS.items():
            if p["family"] in builders and args.only in (None, p["family"]):
                write(args.out, name, p, *make(partial(builders[p["family"]], Path(src)), name, p), source)
    if args.only in (None, "defcn"):
        import scipy
        from official_defcn import CONFIG_DIR, STUBS, import_official

        official = import_official()
        versions = {}
        for dist in ("loguru", "easydict", "colorama", "tabulate", "six"):
            try:
                from importlib.metadata import version
                versions[dist] = version(dist)
            except Exception:  # noqa: BLE001 (a folder on sys.path without its metadata)
                versions[dist] = "unknown"
        source = {**base, "official": "Megvii-BaseDetection/DeFCN on Megvii-BaseDetection/cvpods",
                  "defcn_commit": git_commit(official.defcn_repo, "DEFCN_COMMIT"),
                  "cvpods_commit": git_commit(official.cvpods_repo, "CVPODS_COMMIT"),
                  "config": CONFIG_DIR, "loader": "benchmarks/official_defcn.py", "stubs": STUBS,
                  "scipy": scipy.__version__, "pure_python_deps": versions}
        for name, p in PRESETS.items():
            if p["family"] == "defcn":
                write(args.out, name, p, *make(partial(defcn_fixture, official), name, p), source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
