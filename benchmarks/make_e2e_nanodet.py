"""Write NanoDet-Plus's end-to-end and training-step golden fixtures from the OFFICIAL code.

Two files, numbers and key names only (formats: ``tests/golden/end_to_end.py`` and ``tests/golden/train_step.py``):

- ``tests/golden/e2e/nanodet-plus-m.json``: the official demo ``Predictor`` (``demo/demo.py`` of the checkout,
  loaded from its file and used unchanged) built on ``config/nanodet-plus-m_320.yml`` and on the golden
  nanodet-plus-m weights written as an official Lightning checkpoint (``tests/golden/checkpoints.py``), run on every
  photograph of ``tests/golden/e2e/images/``: ``cv2.imread`` → the val ``Pipeline`` (``ShapeTransform``: a stretch
  resize to 320 × 320, the config's ``keep_ratio: False``, ``cv2.warpPerspective`` bilinear; normalisation) →
  ``stack_batch_img(divisible=32)`` → ``model.inference`` → ``head.post_process`` (score > 0.05, class-aware NMS
  0.6, 100 per image, hard-coded in ``NanoDetPlusHead.get_bboxes``; boxes through the inverse warp matrix, clipped
  to the original image). One image per call, as the demo runs. Each image also records the official
  ``warp_matrix`` and the SHA-256 of the (3, 320, 320) float32 network input (``input_sha256``).
- ``tests/golden/train_step/nanodet-plus-m.json``: one official ``NanoDetPlus.forward_train`` (epoch 0, before
  ``detach_epoch``: the AGM's features are not detached and its predictions assign both heads) in training mode
  on ``golden_input(TRAIN_INPUT, TRAIN_SEED)`` with the hand-made boxes of ``TRAIN_GTS``; the summed loss is
  back-propagated and every parameter's gradient checksum (``grad_checksums``) is stored.

The official demo imports a few training-only modules; this script registers stand-ins for them before loading
the demo file (nothing official is copied or installed): ``pytorch_lightning`` (``nanodet/util/check_point.py``
reads only its ``__version__``, in a function the demo does not call), ``torch._six`` (removed from torch 2;
``nanodet/data/collate.py`` imports ``string_classes`` from it) and ``nanodet.util.Logger`` (a ``log`` that prints).
``load_model_weight`` is the official one (``nanodet/util/check_point.py``).

How to run (see ``benchmarks/make_golden_fixtures.py`` for getting the checkout; one thread, CPU)::

    NANODET_REPO=/tmp/ref/nanodet NANODET_COMMIT=be9b4a9001d7f9b6fc89c2df31ae8d428e35b4f0 \\
        python benchmarks/make_e2e_nanodet.py  # [--out-e2e DIR] [--out-train DIR]

then ``python -m pytest tests/test_e2e_nanodet.py``.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib.util
import io
import json
import os
import platform
import sys
import tempfile
import types
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

PRESET = "nanodet-plus-m"  # detcli preset and golden weights (tests/golden/nanodet-plus-m.json)
TRAIN_INPUT = (2, 3, 224, 320)  # (B, 3, H, W): multiples of 32 as NanoDet's batches; not square, P6 not exact
TRAIN_SEED = 20
# hand-made targets (xyxy input pixels, labels) per image: an overlapping pair of one class, a tiny box, boxes on
# the border, large ones
TRAIN_GTS = (
    ([[12.0, 10.0, 120.0, 150.0], [60.0, 40.0, 180.0, 200.0], [150.0, 20.0, 162.0, 31.0], [0.0, 120.0, 90.0, 224.0],
      [190.0, 8.0, 318.0, 210.0]], [3, 3, 17, 0, 56]),
    ([[30.0, 30.0, 96.0, 100.0], [200.0, 60.0, 320.0, 224.0], [5.0, 150.0, 40.0, 190.0], [100.0, 5.0, 260.0, 120.0]],
     [1, 7, 12, 0]),
)


def import_demo(repo: Path) -> types.ModuleType:
    """The official ``demo/demo.py`` as a module, after :func:`official_nanodet.import_official` and the stand-ins
    of the module docstring."""
    from official_nanodet import import_official

    official = import_official(repo)
    sys.modules.setdefault("pytorch_lightning", types.SimpleNamespace(__version__="unused (stand-in)"))
    if "torch._six" not in sys.modules:
        six = types.ModuleType("torch._six")
        six.string_classes = (str, bytes)
        sys.modules["torch._six"] = six
    util = sys.modules["nanodet.util"]
    from nanodet.util import check_point

    util.load_model_weight = check_point.load_model_weight
    util.Logger = type("Logger", (), {"log": lambda self, msg: print(msg)})
    spec = importlib.util.spec_from_file_location("nanodet_demo", official.repo / "demo" / "demo.py")
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    demo.official = official
    return demo


def official_model_cfg(demo: types.ModuleType):
    """The official config ``nanodet-plus-m_320.yml`` (ImageNet download off) and a model built from it."""
    from official_nanodet import build_official

    return build_official(demo.official, "1.0x", 320)


def e2e_fixture(demo: types.ModuleType, weights: dict, source: dict) -> dict:
    """Run the official Predictor on every photograph; the fixture of ``tests/golden/end_to_end.py``."""
    _, cfg = official_model_cfg(demo)
    with tempfile.TemporaryDirectory() as tmp:
        ckpt, _ = write_official_checkpoint(weights, fixture_state_dict(weights), Path(tmp))
        with contextlib.redirect_stdout(io.StringIO()):
            predictor = demo.Predictor(cfg, str(ckpt), demo.Logger(), device="cpu")
    images = {}
    for path in sorted(IMAGES.glob("*.jpg")):
        with contextlib.redirect_stdout(io.StringIO()):  # model.inference prints its timings
            meta, results = predictor.inference(str(path))
        boxes, scores, labels = [], [], []
        for label, dets in results[0].items():
            for x1, y1, x2, y2, score in dets:
                boxes.append([x1, y1, x2, y2])
                scores.append(score)
                labels.append(int(label))
        net_input = np.ascontiguousarray(meta["img"][0].numpy(), dtype=np.float32)  # (3, 320, 320) as the network got it
        images[path.name] = {"boxes": boxes, "scores": scores, "labels": labels,
                             "warp_matrix": np.asarray(meta["warp_matrix"][0]).tolist(),
                             "input_shape": list(meta["img"].shape),
                             "input_sha256": hashlib.sha256(net_input.tobytes()).hexdigest()}
        print(f"{path.name}: {len(scores)} detections, input {list(meta['img'].shape)}")
    return {
        "preset": PRESET, "weights": PRESET,
        "source": {**source, "config": "config/nanodet-plus-m_320.yml", "entry_point": "demo/demo.py::Predictor"},
        "entry_point": ("official demo Predictor(cfg, checkpoint, device='cpu').inference(path): cv2.imread, val "
                        "Pipeline (ShapeTransform keep_ratio False: stretch to 320 x 320 by cv2.warpPerspective, "
                        "bilinear; normalise), stack_batch_img(divisible=32), model.inference -> head.post_process "
                        "(inverse warp of the 4 corners, clip to the original image); one image per call"),
        "test_cfg": {"score_thr": 0.05, "iou_thr": 0.6, "max_det": 100},
        "classes": [str(c) for c in cfg.class_names],
        "images": images,
    }


def train_step_fixture(demo: types.ModuleType, weights: dict, source: dict) -> dict:
    """One official ``forward_train`` + backward; the fixture of ``tests/golden/train_step.py``."""
    model, _ = official_model_cfg(demo)
    model.load_state_dict(fixture_state_dict(weights), strict=True)
    model.train()
    model.set_epoch(0)
    images = golden_input(TRAIN_INPUT, TRAIN_SEED)
    gt_meta = {"img": images,
               "gt_bboxes": [np.asarray(b, dtype=np.float32) for b, _ in TRAIN_GTS],
               "gt_labels": [np.asarray(lab, dtype=np.int64) for _, lab in TRAIN_GTS],
               "gt_bboxes_ignore": None}
    _, loss, states = model.forward_train(gt_meta)
    loss.backward()
    losses = {k: float(v.detach()) for k, v in states.items()}
    print("losses:", losses)
    return {
        "preset": PRESET, "weights": PRESET,
        "source": {**source, "config": "config/nanodet-plus-m_320.yml",
                   "entry_point": "NanoDetPlus.forward_train(gt_meta) (epoch 0), loss.backward()"},
        "input_shape": list(TRAIN_INPUT), "input_seed": TRAIN_SEED,
        "img_shapes": [list(TRAIN_INPUT[2:])] * TRAIN_INPUT[0],
        "targets": [{"boxes": b, "labels": lab} for b, lab in TRAIN_GTS],
        "epoch": 0,
        "losses": losses,
        "loss_names": {k: k for k in losses},  # detcli uses the official names
        "grads": grad_checksums(model.named_parameters()),
    }



def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=os.environ.get("NANODET_REPO"), help="NanoDet checkout ($NANODET_REPO)")
    parser.add_argument("--out-e2e", type=Path, default=E2E)
    parser.add_argument("--out-train", type=Path, default=TRAIN_STEP)
    args = parser.parse_args()
    torch.set_num_threads(1)
    demo = import_demo(args.repo)
    from make_golden_fixtures import git_commit

    source = {"torch": torch.__version__, "python": platform.python_version(), "machine": platform.machine(),
              "official": "RangiLyu/nanodet", "commit": git_commit(demo.official.repo),
              "generator": "benchmarks/make_e2e_nanodet.py"}
    weights = json.loads((REPO / "tests" / "golden" / f"{PRESET}.json").read_text())
    e2e = e2e_fixture(demo, weights, source)
    train = train_step_fixture(demo, weights, source)
    args.out_e2e.mkdir(parents=True, exist_ok=True)
    args.out_train.mkdir(parents=True, exist_ok=True)
    (args.out_e2e / f"{PRESET}.json").write_text(dump(e2e))
    (args.out_train / f"{PRESET}.json").write_text(dump(train))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
