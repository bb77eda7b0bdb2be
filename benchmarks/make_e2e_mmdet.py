"""Write the end-to-end and training-step golden fixtures of MMDetection families from OFFICIAL MMDetection 3.3.0.

Two fixtures per preset, numbers and key names only (the weights are rebuilt from the raw-output fixture
``tests/golden/<preset>.json``'s spec, seed, ``aliases`` and ``bn_scales``, with the e2e fixture's
``weights_overrides`` applied over them, by ``tests/golden/weights.py::fixture_state_dict``):

- ``tests/golden/e2e/<preset>.json`` (format: ``tests/golden/end_to_end.py``): the golden weights saved as an
  MMEngine checkpoint (``tests/golden/checkpoints.py``), loaded by ``mmdet.apis.init_detector`` with the official
  config, and the final detections of ``mmdet.apis.inference_detector`` (the config's test pipeline, its
  ``DetDataPreprocessor`` and ``predict(rescale=True)``, batch 1) on every photograph of
  ``tests/golden/e2e/images/``, in original pixels. For RTMDet the BatchNorms are first recalibrated on the
  photos (``weights_overrides``: ``bn_scales`` of ``calibrate_batchnorms_`` on the official model fed both photos'
  official pre-processed 640 × 640 inputs stacked, see :func:`photo_bn_scales`): the raw fixture's statistics,
  calibrated on its small randn input, saturate the sigmoid on real photos (every score exactly 1.0, or none
  above 0.001), which would test the order of exact ties instead of the network. ``margins`` records per photo
  the count, distinct scores, exactly tied pairs, the gap between the ``max_per_img``-th and the next post-NMS
  score, and the highest score dropped at a level's ``nms_pre`` cut (below the lowest final score: harmless);
- ``tests/golden/train_step/<preset>.json`` (format: ``tests/golden/train_step.py``): the official
  ``model.loss(inputs, data_samples)`` of the model in ``train()`` mode on a fixed batch, the summed losses'
  backward and a checksum of every gradient (official parameter names).

Families (one function pair each, chosen by ``FAMILIES[preset]``):

- RTMDet (``rtmdet_{tiny,s}_8xb32-300e_coco.py``): test pipeline LoadImageFromFile → Resize(640, keep_ratio) →
  Pad(640, 114) → PackDetInputs, so ``img_shape`` is the padded 640 × 640: boxes are clipped there, then divided
  by the realised scale factor (new_w / w, new_h / h) *without* a second clip; min_bbox_size and NMS run in
  original pixels. Training step: SyncBN reverted to BatchNorm as MMEngine's runner does without a process
  group (``mmengine.model.revert_sync_batchnorm``), BatchNorms in training mode (batch statistics).

``mmcv.ops`` (compiled) is replaced by torchvision's NMS exactly as ``benchmarks/retinanet_parity.py`` does.
Run it with the project's interpreter and the unpacked wheels (never installed into the venv)::

    pip install --no-deps --target /tmp/ref/mmsrc mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 \\
        addict termcolor yapf platformdirs shapely terminaltables matplotlib contourpy cycler fonttools \\
        kiwisolver pyparsing python-dateutil six tqdm
    MMDET_SRC=/tmp/ref/mmsrc python benchmarks/make_e2e_mmdet.py --preset rtmdet-tiny --preset rtmdet-s \\
        [--skip-train-step] [--out DIR]

then ``python -m pytest tests/test_e2e_rtmdet.py``. One thread; regenerating with the same versions gives the
same files up to float rounding of another CPU (the train_step files are rewritten identically: only the e2e
fixtures carry the photo calibration).
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
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
for extra in (REPO, REPO / "benchmarks", REPO / "tests"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

from golden.checkpoints import write_official_checkpoint  # noqa: E402
from golden.end_to_end import E2E, IMAGES  # noqa: E402
from golden_json import dump  # noqa: E402
from golden.train_step import TRAIN_STEP, grad_checksums  # noqa: E402
from golden.weights import calibrate_batchnorms_, fixture_state_dict, golden_input  # noqa: E402

GOLDEN = REPO / "tests" / "golden"

# ----------------------------------------------------------------------------- RTMDet
RTMDET_TRAIN_INPUT = (2, 3, 160, 192)
RTMDET_TRAIN_SEED = 21
# input pixels: overlapping pairs of one class, a small box (12 × 10), boxes on the borders, a large one
RTMDET_TRAIN_TARGETS = (
    ([[10.0, 12.0, 90.0, 110.0], [40.0, 30.0, 120.0, 100.0], [130.0, 8.0, 142.0, 18.0],
      [0.0, 100.0, 192.0, 160.0], [44.0, 34.0, 116.0, 96.0]], [0, 2, 9, 5, 2]),
    ([[20.0, 20.0, 70.0, 150.0], [100.0, 40.0, 180.0, 120.0], [150.0, 0.0, 192.0, 40.0]], [1, 3, 7]),
)


def rtmdet_config(src: Path, preset: str):
    """The official config of ``rtmdet-<variant>`` and its path inside the wheel."""
    from mmengine.config import Config

    name = f"rtmdet_{preset.removeprefix('rtmdet-')}_8xb32-300e_coco.py"
    path = src / "mmdet" / ".mim" / "configs" / "rtmdet" / name
    return Config.fromfile(str(path)), f"mmdet/.mim/configs/rtmdet/{name}"


def rtmdet_test_cfg(test_cfg) -> dict:
    return {"score_thr": float(test_cfg.score_thr), "iou_thr": float(test_cfg.nms.iou_threshold),
            "max_det": int(test_cfg.max_per_img), "nms_pre": int(test_cfg.nms_pre),
            "min_bbox_size": float(test_cfg.min_bbox_size)}


def rtmdet_train_step(src: Path, preset: str, raw: dict, source: dict) -> dict:
    """The official losses and gradient checksums of one RTMDet training step on the fixed batch."""
    from mmengine.model import revert_sync_batchnorm
    from mmengine.structures import InstanceData
    from mmdet.registry import MODELS
    from mmdet.structures import DetDataSample

    cfg, cfg_name = rtmdet_config(src, preset)
    cfg.model.backbone.init_cfg = None  # no download: every tensor is replaced
    with contextlib.redirect_stdout(io.StringIO()):
        model = revert_sync_batchnorm(MODELS.build(cfg.model))  # MMEngine's runner does this without DDP
    model.load_state_dict(fixture_state_dict(raw), strict=True)
    model.train()
    images = golden_input(RTMDET_TRAIN_INPUT, RTMDET_TRAIN_SEED)
    h, w = RTMDET_TRAIN_INPUT[-2:]
    samples = []
    for boxes, labels in RTMDET_TRAIN_TARGETS:  # the official pipeline pads every image to the input size
        s = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                        batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        s.gt_instances = InstanceData(bboxes=torch.tensor(boxes), labels=torch.tensor(labels))
        samples.append(s)
    model.zero_grad()
    losses = {k: sum(v) for k, v in model.loss(images, samples).items()}  # per level → one value
    sum(losses.values()).backward()
    bn_eval = [n for n, m in model.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
               and not m.training]
    assert not bn_eval, f"every BatchNorm should use the batch's statistics: {bn_eval[:3]}"
    return {
        "preset": preset, "weights": preset,
        "source": {**source, "official_config": cfg_name,
                   "loss": "RTMDet.loss(inputs, data_samples) in train() (SyncBN reverted to BatchNorm2d, batch "
                           "statistics); losses summed over levels, then over names, one backward"},
        "input_shape": list(RTMDET_TRAIN_INPUT), "input_seed": RTMDET_TRAIN_SEED,
        "img_shapes": [[h, w] for _ in RTMDET_TRAIN_TARGETS],
        "targets": [{"boxes": b, "labels": lab} for b, lab in RTMDET_TRAIN_TARGETS],
        "epoch": 0,
        "losses": {k: float(v.detach()) for k, v in losses.items()},
        "loss_names": {k: k for k in losses},
        "grads": grad_checksums(model.named_parameters()),
    }


# ----------------------------------------------------------------------------- shared by every MMDetection family
def photo_inputs(model, paths: list[Path]) -> torch.Tensor:
    """(N, 3, H, W) the official test pipeline + ``DetDataPreprocessor`` output of ``paths`` (each image alone, as
    ``inference_detector`` feeds it; every image has the same padded shape in the RTMDet pipeline)."""
    from mmcv.transforms import Compose
    from mmdet.utils import get_test_pipeline_cfg

    pipeline = Compose(get_test_pipeline_cfg(model.cfg.copy()))
    inputs = []
    for path in paths:
        data = pipeline(dict(img_path=str(path), img_id=0))
        with torch.no_grad():
            batch = model.data_preprocessor({"inputs": [data["inputs"]], "data_samples": [data["data_samples"]]},
                                            False)
        inputs.append(batch["inputs"])
    shapes = {tuple(x.shape) for x in inputs}
    assert len(shapes) == 1, f"the photos' inputs differ in shape: {shapes}"
    return torch.cat(inputs)


def photo_bn_scales(model, raw: dict, paths: list[Path]) -> dict[str, list[float]]:
    """``bn_scales`` of the golden weights calibrated on the photos: the uncalibrated draws (the raw fixture's spec,
    seed and other parts, without its ``bn_scales``) loaded into the official ``model``, then
    ``calibrate_batchnorms_`` on the official pre-processed inputs of ``paths`` stacked into one batch."""
    uncalibrated = {k: v for k, v in raw.items() if k != "bn_scales"}
    model.load_state_dict(fixture_state_dict(uncalibrated), strict=True)
    bn_scales = calibrate_batchnorms_(model, photo_inputs(model, paths))
    state = fixture_state_dict({**raw, "bn_scales": bn_scales})
    own = model.state_dict()
    assert all(torch.equal(own[k], v) for k, v in state.items()), "the recipe does not rebuild the calibration"
    return bn_scales


def score_margins(scores: torch.Tensor, uncut: torch.Tensor, max_det: int) -> dict:
    """How far the final detections (``scores`` (K,), best first) are from tie-breaking: distinct scores, exactly
    tied pairs, and the gap at the ``max_per_img`` cut (``uncut`` (M,): the same run's post-NMS scores before the
    cut, best first; None without a cut)."""
    _, counts = torch.unique(scores, return_counts=True)
    gap = float(uncut[max_det - 1] - uncut[max_det]) if len(uncut) > max_det else None
    return {"detections": len(scores), "distinct_scores": len(counts),
            "tied_pairs": int((counts * (counts - 1) // 2).sum()), "after_nms": len(uncut), "max_det_gap": gap,
            "min_score": float(scores.min()) if len(scores) else None,
            "max_score": float(scores.max()) if len(scores) else None}


def nms_pre_cut(model, inputs: torch.Tensor) -> float | None:
    """The highest score any level drops at its ``nms_pre`` cut (the per-level top-k of the scores above
    ``score_thr``) for ``inputs`` (1, 3, H, W); None when no level has more candidates. Below the lowest final score,
    the cut cannot change the final detections (NMS only lets a higher score suppress a lower one)."""
    assert model.bbox_head.use_sigmoid_cls, "a softmax head scores differently"
    cfg = model.bbox_head.test_cfg
    with torch.no_grad():
        cls_scores = model._forward(inputs)[0]
    cuts = []
    for level in cls_scores:
        scores = level.sigmoid().flatten()
        scores = scores[scores > cfg.score_thr]
        if len(scores) > cfg.nms_pre:
            cuts.append(float(scores.topk(cfg.nms_pre + 1).values[-1]))
    return max(cuts, default=None)


def end_to_end(src: Path, preset: str, raw: dict, source: dict, config: Callable, test_cfg: Callable,
               pipeline: str, calibrate: bool = False) -> dict:
    """The official detections of every photograph (``init_detector`` + ``inference_detector``).

    Args:
        config: ``(src, preset) → (Config, path in the wheel)`` of the family.
        test_cfg: the official ``model.test_cfg`` → the fixture's ``test_cfg`` dict.
        pipeline: the entry point's test pipeline in words.
        calibrate: recalibrate the BatchNorms on the photos (:func:`photo_bn_scales`) and record them as the
            fixture's ``weights_overrides``.
    """
    from mmdet.apis import inference_detector, init_detector
    from mmdet.datasets import CocoDataset

    cfg, cfg_name = config(src, preset)
    paths = sorted(p for p in IMAGES.iterdir() if p.suffix == ".jpg")
    overrides = {}
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        if calibrate:
            checkpoint, _ = write_official_checkpoint(raw, fixture_state_dict(raw), Path(tmp))
            overrides["bn_scales"] = photo_bn_scales(init_detector(cfg, str(checkpoint), device="cpu"), raw, paths)
        weights = {**raw, **overrides}
        checkpoint, _ = write_official_checkpoint(weights, fixture_state_dict(weights), Path(tmp))
        model = init_detector(cfg, str(checkpoint), device="cpu")
    classes = list(CocoDataset.METAINFO["classes"])
    assert [c.replace(" ", "_") for c in classes] == list(model.dataset_meta["classes"]), "another class order"
    head_cfg = model.bbox_head.test_cfg
    max_det = int(head_cfg.max_per_img)
    images, margins = {}, {}
    for path in paths:
        inst = inference_detector(model, str(path)).pred_instances
        images[path.name] = {"boxes": inst.bboxes.float().tolist(), "scores": inst.scores.float().tolist(),
                             "labels": inst.labels.long().tolist()}
        head_cfg.max_per_img = 10 ** 9  # the same run without the cut, for its margin
        try:
            uncut = inference_detector(model, str(path)).pred_instances
        finally:
            head_cfg.max_per_img = max_det
        assert torch.equal(uncut.scores[:max_det], inst.scores) and torch.equal(uncut.bboxes[:max_det], inst.bboxes)
        margins[path.name] = {**score_margins(inst.scores, uncut.scores, max_det),
                              "nms_pre_cut_max": nms_pre_cut(model, photo_inputs(model, [path]))}
        print(f"  {preset} {path.name}: {margins[path.name]}")
    doc = {
        "preset": preset, "weights": preset,
        "source": {**source, "official_config": cfg_name, "checkpoint": "golden.checkpoints.write_official_checkpoint"},
        "entry_point": ("mmdet.apis.init_detector(config, checkpoint, device='cpu') + "
                        f"mmdet.apis.inference_detector(model, image_path), batch 1: {pipeline}"),
        "test_cfg": test_cfg(model.cfg.model.test_cfg),
        # the checkpoint records no classes: init_detector falls back to get_classes("coco"), the same 80 in the
        # same order spelt with underscores; the names are CocoDataset's, as a trained checkpoint records them
        "classes": classes,
    }
    if overrides:
        doc["weights_overrides_recipe"] = (
            "bn_scales: tests/golden/weights.py::calibrate_batchnorms_ on the official model (the raw fixture's "
            "uncalibrated draws) fed both photographs' official test-pipeline + DetDataPreprocessor inputs "
            f"stacked ({', '.join(p.name for p in paths)}), one forward pass")
        doc["weights_overrides"] = overrides
    doc["margins"] = margins
    doc["images"] = images
    return doc


RTMDET_PIPELINE = ("LoadImageFromFile (cv2), Resize(640, 640, keep_ratio), Pad(640, 640, 114) so img_shape = "
                   "640 × 640, DetDataPreprocessor (BGR mean/std), RTMDet.predict(rescale=True): boxes clipped to "
                   "img_shape, multiplied by 1 / scale_factor (no second clip), min_bbox_size and NMS in original "
                   "pixels")

# preset → (end-to-end builder, training-step builder); a RetinaNet pair goes beside RTMDet's
FAMILIES: dict[str, tuple[Callable, Callable]] = {
    p: (lambda src, preset, raw, source: end_to_end(src, preset, raw, source, rtmdet_config, rtmdet_test_cfg,
                                                    RTMDET_PIPELINE, calibrate=True), rtmdet_train_step)
    for p in ("rtmdet-tiny", "rtmdet-s")
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(FAMILIES), action="append", required=True,
                        help="write this preset's two fixtures (repeatable)")
    parser.add_argument("--out", type=Path, default=None, help="folder for e2e/ and train_step/ (default tests/golden)")
    parser.add_argument("--skip-train-step", action="store_true", help="end-to-end fixtures only")
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
    for preset in args.preset:
        raw = json.loads((GOLDEN / f"{preset}.json").read_text())
        e2e, step = FAMILIES[preset]
        jobs = [(e2e_dir, e2e)] + ([] if args.skip_train_step else [(step_dir, step)])
        for folder, build in jobs:
            doc = build(Path(src), preset, raw, source)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{preset}.json").write_text(dump(doc))
            print(f"wrote {folder / f'{preset}.json'}")
    return 0



if __name__ == "__main__":
    raise SystemExit(main())
