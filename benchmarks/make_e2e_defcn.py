"""Write DeFCN's end-to-end and training-step golden fixtures from the OFFICIAL code (DeFCN on cvpods).

Two fixtures, numbers and key names only (the weights are rebuilt from the raw-output fixture
``tests/golden/defcn-r50-fpn.json``'s spec and seed by ``tests/golden/weights.py::fixture_state_dict``):

- ``tests/golden/e2e/defcn-r50-fpn.json`` (format: ``tests/golden/end_to_end.py``): what cvpods'
  ``inference_on_dataset`` computes for each photograph of ``tests/golden/e2e/images/``, batch 1: the image read
  by ``cvpods.data.detection_utils.read_image(path, INPUT.FORMAT="BGR")`` (PIL, EXIF orientation), the playground
  config's ``INPUT.AUG.TEST_PIPELINES`` (``ResizeShortestEdge(800, max_size=1333)``: PIL bilinear on the uint8
  image) applied as cvpods' ``COCODataset.__getitem__`` applies them, the (3, h, w) uint8 tensor handed to the
  official model in eval mode as ``[{"image": tensor, "height": H, "width": W}]`` (``preprocess_image``:
  ``(x - PIXEL_MEAN) / PIXEL_STD``, pad to 32 with 0; ``inference``: per level top 1000 then > 0.05, the best 100,
  no NMS; ``detector_postprocess``: rescale to H × W, clip, drop empty boxes), in original pixels;
- ``tests/golden/train_step/defcn-r50-fpn.json`` (format: ``tests/golden/train_step.py``): the official model in
  ``train()`` mode on two images of different sizes (``TRAIN_IMG_SHAPES``, the second padded by
  ``ImageList.from_tensors``) with hand-made GT ``Instances``: its three losses (POTO focal, 2 × GIoU, auxiliary
  focal), their sum's backward, and a checksum of every gradient. The network input is
  ``golden_input(TRAIN_INPUT, TRAIN_SEED)`` (already normalised: ``model.normalizer`` is the identity for this
  step), zero outside each image's own size, as the padded batch holds it. cvpods' ResNet is FrozenBN throughout
  (statistics and affine are buffers: no gradient) with ``FREEZE_AT=2`` (stem and res2 ``requires_grad=False``):
  gradients exist for res3–res5 convs, the FPN and the head only.

The official modules are imported by ``benchmarks/official_defcn.py`` (its docstring lists the stand-ins); the
data side adds the real ``cvpods/data/transforms`` and ``cvpods/data/detection_utils.py`` of the checkout, with
``megfile.smart_open`` = ``open`` (its only use: opening the image file) and, on Pillow ≥ 10, ``Image.LINEAR`` =
``Image.BILINEAR`` (the alias Pillow removed; only a default argument of an unused transform names it). Nothing
of it runs in the tests::

    DEFCN_REPO=/tmp/ref/defcn CVPODS_REPO=/tmp/ref/cvpods CVPODS_DEPS=/tmp/ref/cvpods-deps \\
        DEFCN_COMMIT=bd7e24d7408d63edc878d175d9cf798974095049 CVPODS_COMMIT=2deea5dc659371318c8a570c644201d913a83027 \\
        python benchmarks/make_e2e_defcn.py [--out DIR] [--check-sizes]

``--check-sizes`` also compares detcli's ``shortest_edge_size`` (and mmcv's ``keep_ratio_size``) with the
official ``ResizeShortestEdge(800, 1333)`` on every (h, w) in 1..2000 (4 million calls, about a minute).
One thread; regenerating with the same versions gives the same files up to float rounding of another CPU.
"""
from __future__ import annotations

import argparse
import importlib
import json
import platform
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from golden.end_to_end import E2E, IMAGES  # noqa: E402
from golden_json import dump  # noqa: E402
from golden.train_step import TRAIN_STEP, grad_checksums  # noqa: E402
from golden.weights import fixture_state_dict, golden_input  # noqa: E402

GOLDEN = REPO / "tests" / "golden"
PRESET = "defcn-r50-fpn"
TRAIN_INPUT = (2, 3, 384, 512)
TRAIN_SEED = 21
# the second image is padded by 64 px on the right and the bottom. The official auxiliary assignment takes the
# top 9 points of every level, so P7 (stride 128) needs at least 9 points: 3 × 4 here (smaller batches such as
# 224 × 288 make the official code fail in topk)
TRAIN_IMG_SHAPES = ((384, 512), (320, 448))
# input pixels inside each image: overlapping boxes of one class, a box on the border, a small one (24 px),
# a large one; the second image's boxes stay inside its 320 × 448 (the padding holds none)
TRAIN_TARGETS = (
    ([[30.0, 24.0, 260.0, 290.0], [160.0, 100.0, 400.0, 340.0], [350.0, 20.0, 374.0, 44.0],
      [0.0, 200.0, 210.0, 384.0], [260.0, 170.0, 512.0, 384.0]], [0, 0, 9, 5, 17]),
    ([[16.0, 16.0, 210.0, 170.0], [230.0, 70.0, 448.0, 320.0], [100.0, 190.0, 140.0, 236.0]], [2, 3, 56]),
)


def import_official_data(official: types.SimpleNamespace) -> types.SimpleNamespace:
    """The checkout's ``cvpods/data/transforms`` and ``detection_utils`` on top of
    :func:`official_defcn.import_official` (stand-in packages as there: the ``cvpods.data`` ``__init__`` imports
    every dataset and is skipped)."""
    from official_defcn import _package

    from PIL import Image

    root = official.cvpods_repo / "cvpods"
    sys.modules["megfile"].smart_open = open  # read_image opens the file through megfile
    if not hasattr(Image, "LINEAR"):  # Pillow ≥ 10 dropped the alias a default argument of transform.py names
        Image.LINEAR = Image.BILINEAR
    utils = sys.modules["cvpods.utils"]
    utils.Registry = importlib.import_module("cvpods.utils.registry").Registry
    structures = sys.modules["cvpods.structures"]
    masks = importlib.import_module("cvpods.structures.masks")
    for n in ("BitMasks", "PolygonMasks", "polygons_to_bitmask"):
        setattr(structures, n, getattr(masks, n))
    structures.Keypoints = importlib.import_module("cvpods.structures.keypoints").Keypoints
    _package("cvpods.data", root / "data")
    importlib.import_module("cvpods.data.registry")
    transforms = _package("cvpods.data.transforms", root / "data" / "transforms")
    transform = importlib.import_module("cvpods.data.transforms.transform")
    for name in transform.__all__ if hasattr(transform, "__all__") else dir(transform):
        if not name.startswith("_"):
            setattr(transforms, name, getattr(transform, name))
    transform_gen = importlib.import_module("cvpods.data.transforms.transform_gen")
    for name in dir(transform_gen):
        if not name.startswith("_"):
            setattr(transforms, name, getattr(transform_gen, name))
    detection_utils = importlib.import_module("cvpods.data.detection_utils")
    _package("cvpods.data.datasets", root / "data" / "datasets")
    builtin_meta = importlib.import_module("cvpods.data.datasets.builtin_meta")
    return types.SimpleNamespace(T=transforms, read_image=detection_utils.read_image, builtin_meta=builtin_meta)


def official_model(official, raw: dict):
    from official_defcn import build_official

    model, cfg = build_official(official)
    model.load_state_dict(fixture_state_dict(raw), strict=True)
    return model.eval(), cfg


@torch.no_grad()
def end_to_end(official, data, raw: dict, source: dict) -> dict:
    """The official detections of every photograph (the test pipeline and eval forward of cvpods, batch 1)."""
    model, cfg = official_model(official, raw)
    pipeline = [getattr(data.T, name)(**args) for name, args in cfg.INPUT.AUG.TEST_PIPELINES]
    classes = [c["name"] for c in data.builtin_meta.COCO_CATEGORIES if c.get("isthing", 1) == 1]
    assert len(classes) == 80
    images, notes = {}, {}
    for path in sorted(p for p in IMAGES.iterdir() if p.suffix == ".jpg"):
        image = data.read_image(str(path), format=cfg.INPUT.FORMAT)
        height, width = image.shape[:2]
        for tfm in pipeline:  # COCODataset._apply_transforms, no annotations
            image, _ = tfm(image, None)
        tensor = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        inst = model([{"image": tensor, "height": height, "width": width}])[0]["instances"]
        boxes = inst.pred_boxes.tensor
        images[path.name] = {"boxes": boxes.float().tolist(), "scores": inst.scores.float().tolist(),
                             "labels": inst.pred_classes.long().tolist()}
        scores = inst.scores.double()
        # the same forward keeping one more: how far the 101st score is below the last one kept
        model.max_detections_per_image = int(cfg.TEST.DETECTIONS_PER_IMAGE) + 1
        more = model([{"image": tensor, "height": height, "width": width}])[0]["instances"].scores.double()
        model.max_detections_per_image = int(cfg.TEST.DETECTIONS_PER_IMAGE)
        notes[path.name] = {
            "cut_margin": float(more[len(scores) - 1] - more[len(scores)]) if len(more) > len(scores) else None,
            "original_hw": [height, width], "resized_hw": list(image.shape[:2]), "detections": len(inst),
            "dropped_empty": int(cfg.TEST.DETECTIONS_PER_IMAGE) - len(inst),
            "score_gap": float((scores[:-1] - scores[1:]).min()) if len(scores) > 1 else None,
            "min_side_px": float((boxes[:, 2:] - boxes[:, :2]).min()) if len(boxes) else None,
        }
        print(f"  {path.name}: {height}x{width} -> {image.shape[0]}x{image.shape[1]}, {len(inst)} detections")
    fcos = cfg.MODEL.FCOS
    return {
        "preset": PRESET, "weights": PRESET,
        "source": {**source, "checkpoint": "golden.checkpoints.write_official_checkpoint (cvpods {'model': …})"},
        "entry_point": ("cvpods inference_on_dataset, batch 1: detection_utils.read_image(path, 'BGR'), "
                        "config INPUT.AUG.TEST_PIPELINES (ResizeShortestEdge 800 / 1333, PIL bilinear), "
                        "(3, h, w) uint8 tensor, model.eval()([{'image', 'height', 'width'}]) → "
                        "inference + detector_postprocess"),
        "test_cfg": {"score_thr": float(fcos.SCORE_THRESH_TEST), "iou_thr": None,
                     "max_det": int(cfg.TEST.DETECTIONS_PER_IMAGE), "nms_pre": int(fcos.TOPK_CANDIDATES_TEST),
                     "nms": "none (NMS_THRESH_TEST 1.0 suppresses nothing)"},
        "classes": classes,
        "images": images,
        "notes": notes,
    }


def train_step(official, raw: dict, source: dict) -> dict:
    """The official losses and gradient checksums of one training step on the fixed batch."""
    model, _ = official_model(official, raw)
    model.train()
    model.normalizer = lambda x: x  # the batch is already the network input
    images = golden_input(TRAIN_INPUT, TRAIN_SEED)
    batched = []
    for i, ((h, w), (boxes, labels)) in enumerate(zip(TRAIN_IMG_SHAPES, TRAIN_TARGETS)):
        images[i, :, h:, :] = 0
        images[i, :, :, w:] = 0
        inst = official.structures.Instances((h, w))
        inst.gt_boxes = official.structures.Boxes(torch.tensor(boxes))
        inst.gt_classes = torch.tensor(labels)
        batched.append({"image": images[i, :, :h, :w].clone(), "instances": inst})
    model.zero_grad()
    with official.events.EventStorage(0):
        losses = model(batched)
    sum(losses.values()).backward()
    names = {"loss_cls": "loss_cls", "loss_box_reg": "loss_box_reg", "loss_cls_aux": "loss_cls_aux"}
    assert set(losses) == set(names), sorted(losses)
    return {
        "preset": PRESET, "weights": PRESET,
        "source": {**source, "loss": ("FCOS.forward(batched_inputs) in train(): get_ground_truth (POTO) + losses, "
                                      "get_aux_ground_truth + aux_losses; the three losses summed, one backward")},
        "input_shape": list(TRAIN_INPUT), "input_seed": TRAIN_SEED,
        "img_shapes": [list(s) for s in TRAIN_IMG_SHAPES],
        "input_note": ("golden_input(input_shape, input_seed) with each image zeroed outside its img_shape: the "
                       "official model got images[i, :, :h, :w] (normaliser = identity) and padded them with 0"),
        "targets": [{"boxes": b, "labels": lab} for b, lab in TRAIN_TARGETS],
        "epoch": 0,
        "frozen": ("FrozenBN everywhere (buffers: no gradient); FREEZE_AT=2: stem and res2 requires_grad=False"),
        "losses": {k: float(losses[v].detach()) for k, v in names.items()},
        "loss_names": names,
        "grads": grad_checksums(model.named_parameters()),
    }


def check_sizes(data) -> None:
    """detcli's size rules against the official ``ResizeShortestEdge(800, 1333)`` on every (h, w) in 1..2000."""
    from detcli.data.transforms.resize import keep_ratio_size, shortest_edge_size

    gen = data.T.ResizeShortestEdge(800, 1333)
    dummy = types.SimpleNamespace(shape=None)
    ours_off = mmcv_off = 0
    for h in range(1, 2001):
        for w in range(1, 2001):
            dummy.shape = (h, w, 3)
            t = gen.get_transform(dummy)
            ref = (t.new_w, t.new_h)
            ours_off += shortest_edge_size(w, h, 800, 1333) != ref
            mmcv_off += keep_ratio_size(w, h, (1333, 800)) != ref
    print(f"sizes 1..2000 x 1..2000: shortest_edge_size differs on {ours_off}, keep_ratio_size on {mmcv_off}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder for e2e/ and train_step/ (default tests/golden)")
    parser.add_argument("--check-sizes", action="store_true", help="also check the size rule on 4 million sizes")
    args = parser.parse_args()
    torch.set_num_threads(1)
    from make_golden_fixtures import git_commit
    from official_defcn import import_official

    import PIL
    import scipy

    official = import_official()
    data = import_official_data(official)
    source = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "pillow": PIL.__version__, "scipy": scipy.__version__,
              "official": "Megvii-BaseDetection/DeFCN on Megvii-BaseDetection/cvpods",
              "defcn_commit": git_commit(official.defcn_repo, "DEFCN_COMMIT"),
              "cvpods_commit": git_commit(official.cvpods_repo, "CVPODS_COMMIT"),
              "config": "playground/detection/coco/poto.res50.fpn.coco.800size.3x_ms.3dmf.aux",
              "loader": "benchmarks/official_defcn.py + make_e2e_defcn.import_official_data"}
    if args.check_sizes:
        check_sizes(data)
    raw = json.loads((GOLDEN / f"{PRESET}.json").read_text())
    e2e_dir = E2E if args.out is None else args.out / "e2e"
    step_dir = TRAIN_STEP if args.out is None else args.out / "train_step"
    for folder, doc in ((e2e_dir, end_to_end(official, data, raw, source)),
                        (step_dir, train_step(official, raw, source))):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{PRESET}.json").write_text(dump(doc))
        print(f"wrote {folder / f'{PRESET}.json'}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
