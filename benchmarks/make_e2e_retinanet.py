"""Write RetinaNet's end-to-end and training-step golden fixtures from OFFICIAL MMDetection 3.3.0.

Two fixtures per preset, numbers and key names only (the weights are rebuilt from the raw-output fixture
``tests/golden/<preset>.json``'s spec and seed by ``tests/golden/weights.py::fixture_state_dict``):

- ``tests/golden/e2e/<preset>.json`` (format: ``tests/golden/end_to_end.py``): the golden weights saved as an
  MMEngine checkpoint (``tests/golden/checkpoints.py``), loaded by ``mmdet.apis.init_detector`` with the
  official config ``retinanet_r{18,50}_fpn_1x_coco.py``, and the final detections of
  ``mmdet.apis.inference_detector`` (the official test pipeline: LoadImageFromFile, Resize (1333, 800)
  keep_ratio, PackDetInputs; DetDataPreprocessor: BGR → RGB, mean/std, pad to 32 with 0; ``rescale=True``:
  boxes clipped to the resized image, then divided by the scale factor, min_bbox_size and NMS in original
  pixels) on every photograph of ``tests/golden/e2e/images/``, in original pixels;
- ``tests/golden/train_step/<preset>.json`` (format: ``tests/golden/train_step.py``): the official
  ``model.loss(inputs, data_samples)`` of the model in ``train()`` mode (the config's ResNet has
  ``frozen_stages=1`` and ``norm_eval=True``: stem and layer1 frozen, every BatchNorm in eval mode, as in the
  official recipe) on ``golden_input(TRAIN_INPUT, seed)`` with two images whose ``img_shape`` is smaller than the
  batch (their padded shapes, ceil to 32, decide the valid anchors), the summed losses' backward, and a
  checksum of every gradient.

``mmcv.ops`` (compiled) is replaced by torchvision's NMS exactly as ``benchmarks/retinanet_parity.py`` does.
Run it with the project's interpreter and the unpacked wheels (never installed into the venv)::

    pip install --no-deps --target /tmp/ref/mmsrc mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 \\
        addict termcolor yapf platformdirs shapely terminaltables matplotlib contourpy cycler fonttools \\
        kiwisolver pyparsing python-dateutil six tqdm
    MMDET_SRC=/tmp/ref/mmsrc python benchmarks/make_e2e_retinanet.py [--preset retinanet-r18-fpn] [--out DIR]

then ``python -m pytest tests/test_e2e_retinanet.py``. One thread; regenerating with the same versions gives
the same files up to float rounding of another CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from golden.checkpoints import write_official_checkpoint  # noqa: E402
from golden.end_to_end import E2E, IMAGES  # noqa: E402
from golden_json import dump  # noqa: E402
from golden.train_step import TRAIN_STEP, grad_checksums  # noqa: E402
from golden.weights import fixture_state_dict, golden_input  # noqa: E402

GOLDEN = REPO / "tests" / "golden"
PRESETS = {"retinanet-r18-fpn": 18, "retinanet-r50-fpn": 50}
TRAIN_INPUT = (2, 3, 160, 224)
TRAIN_SEED = 7
# each image's valid size inside the (160, 224) batch: padded to 32 → (160, 192) and (128, 224), so both
# images have invalid anchors at the batch's right or bottom border
TRAIN_IMG_SHAPES = ((150, 190), (100, 224))
# input pixels, inside each image's valid area: large, elongated, on the border, and one small box (12 × 10 px,
# smaller than every anchor: only a low-quality match makes it positive)
TRAIN_TARGETS = (
    ([[10.0, 12.0, 120.0, 140.0], [100.0, 30.0, 188.0, 80.0], [150.0, 100.0, 190.0, 150.0],
      [60.0, 70.0, 72.0, 80.0]], [0, 2, 17, 5]),
    ([[0.0, 0.0, 64.0, 50.0], [120.0, 20.0, 224.0, 100.0], [30.0, 60.0, 110.0, 98.0]], [1, 2, 56]),
)


def mmdet_config(src: Path, depth: int):
    from mmengine.config import Config

    path = src / "mmdet" / ".mim" / "configs" / "retinanet" / f"retinanet_r{depth}_fpn_1x_coco.py"
    return Config.fromfile(str(path)), f"mmdet/.mim/configs/retinanet/{path.name}"


def end_to_end(src: Path, preset: str, raw: dict, source: dict) -> dict:
    """The official detections of every photograph (``init_detector`` + ``inference_detector``)."""
    from mmdet.apis import inference_detector, init_detector
    from mmdet.datasets import CocoDataset

    cfg, cfg_name = mmdet_config(src, PRESETS[preset])
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        checkpoint, _ = write_official_checkpoint(raw, fixture_state_dict(raw), Path(tmp))
        model = init_detector(cfg, str(checkpoint), device="cpu")
    test_cfg = model.cfg.model.test_cfg
    classes = list(CocoDataset.METAINFO["classes"])
    assert [c.replace(" ", "_") for c in classes] == list(model.dataset_meta["classes"]), "another class order"
    images = {}
    for path in sorted(p for p in IMAGES.iterdir() if p.suffix == ".jpg"):
        inst = inference_detector(model, str(path)).pred_instances
        images[path.name] = {"boxes": inst.bboxes.float().tolist(), "scores": inst.scores.float().tolist(),
                             "labels": inst.labels.long().tolist()}
        print(f"  {preset} {path.name}: {len(inst.scores)} detections")
    return {
        "preset": preset, "weights": preset,
        "source": {**source, "official_config": cfg_name, "checkpoint": "golden.checkpoints.write_official_checkpoint"},
        "entry_point": ("mmdet.apis.init_detector(config, checkpoint, device='cpu') + "
                        "mmdet.apis.inference_detector(model, image_path): the config's test pipeline, "
                        "DetDataPreprocessor and RetinaNet.predict(rescale=True), batch 1"),
        "test_cfg": {"score_thr": float(test_cfg.score_thr), "iou_thr": float(test_cfg.nms.iou_threshold),
                     "max_det": int(test_cfg.max_per_img), "nms_pre": int(test_cfg.nms_pre),
                     "min_bbox_size": float(test_cfg.min_bbox_size)},
        # the checkpoint records no classes: init_detector falls back to get_classes("coco"), the same 80 in the
        # same order spelt with underscores; the names are CocoDataset's, as a trained checkpoint records them
        "classes": classes,
        "images": images,
    }


def train_step(src: Path, preset: str, raw: dict, source: dict) -> dict:
    """The official losses and gradient checksums of one training step on the fixed batch."""
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    cfg, cfg_name = mmdet_config(src, PRESETS[preset])
    cfg.model.backbone.init_cfg = None  # no download: every tensor is replaced
    with contextlib.redirect_stdout(io.StringIO()):
        model = MODELS.build(cfg.model)
    model.load_state_dict(fixture_state_dict(raw), strict=True)
    model.train()  # norm_eval: the ResNet's BatchNorms go back to eval mode
    images = golden_input(TRAIN_INPUT, TRAIN_SEED)
    h, w = TRAIN_INPUT[-2:]
    samples = []
    for (ih, iw), (boxes, labels) in zip(TRAIN_IMG_SHAPES, TRAIN_TARGETS):
        pad = (-(-ih // 32) * 32, -(-iw // 32) * 32)  # DetDataPreprocessor's pad_shape: own size up to 32
        s = DetDataSample(metainfo=dict(img_shape=(ih, iw), ori_shape=(ih, iw), pad_shape=pad,
                                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor(labels))
        samples.append(s)
    model.zero_grad()
    losses = {k: sum(v) for k, v in model.loss(images, samples).items()}  # per level → one value
    sum(losses.values()).backward()
    bn_train = [n for n, m in model.named_modules() if isinstance(m, torch.nn.BatchNorm2d) and m.training]
    assert not bn_train, f"norm_eval should keep every BN in eval mode: {bn_train[:3]}"
    return {
        "preset": preset, "weights": preset,
        "source": {**source, "official_config": cfg_name,
                   "loss": "RetinaNet.loss(inputs, data_samples) in train(); losses summed over levels, then "
                           "over names, one backward"},
        "input_shape": list(TRAIN_INPUT), "input_seed": TRAIN_SEED,
        "img_shapes": [list(s) for s in TRAIN_IMG_SHAPES],
        "targets": [{"boxes": b, "labels": lab} for b, lab in TRAIN_TARGETS],
        "epoch": 0,
        "norm_eval": True,
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "loss_names": {k: k for k in losses},
        "grads": grad_checksums(model.named_parameters()),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), action="append",
                        help="only this preset (repeatable); default: retinanet-r18-fpn")
    parser.add_argument("--out", type=Path, default=None, help="folder for e2e/ and train_step/ (default tests/golden)")
    args = parser.parse_args()
    src = os.environ.get("MMDET_SRC")
    if not src:
        raise SystemExit("set MMDET_SRC to the folder holding mmdet/, mmengine/ and mmcv/ (see the docstring)")
    torch.set_num_threads(1)
    from retinanet_parity import import_mmdet

    mmdet = import_mmdet(src)
    import mmcv
    import mmengine

    source = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "official": "open-mmlab/mmdetection (PyPI wheel)", "mmdet": mmdet.__version__,
              "mmengine": mmengine.__version__, "mmcv": mmcv.__version__,
              "nms": "mmcv.ops stand-in calling torchvision (benchmarks/retinanet_parity.py)"}
    e2e_dir = E2E if args.out is None else args.out / "e2e"
    step_dir = TRAIN_STEP if args.out is None else args.out / "train_step"
    for preset in args.preset or ["retinanet-r18-fpn"]:
        raw = json.loads((GOLDEN / f"{preset}.json").read_text())
        for folder, doc in ((e2e_dir, end_to_end(Path(src), preset, raw, source)),
                            (step_dir, train_step(Path(src), preset, raw, source))):
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{preset}.json").write_text(dump(doc))
            print(f"wrote {folder / f'{preset}.json'}")
    return 0



if __name__ == "__main__":
    np.set_printoptions(precision=4)
    raise SystemExit(main())
