"""RTMDet-tiny on CPU, detcli beside MMDetection 3.3.0's own eager RTMDet-tiny in one run: batch-1 predict latency
and one training step.

MMDetection is imported from an unpacked wheel (``--mmdet-src`` / ``$MMDET_SRC``: a folder holding ``mmdet/``,
``mmengine/`` and mmcv-lite's pure-Python ``mmcv/``, see ``benchmarks/fixtures/make_golden_fixtures.py``), never from this
repository; ``mmcv.ops`` is the torchvision stand-in of ``benchmarks/parity/retinanet_parity.py`` (its ``batched_nms`` is
torchvision's, not mmcv's compiled op). The model is the official ``rtmdet_tiny_8xb32-300e_coco.py`` config.

Weights: the golden-fixture recipe (``tests/golden/weights.py``, shared head convs as aliases, RTMDet-tiny's
distance bias 3) built on MMDetection's model, its BatchNorms calibrated on the 640×640 benchmark image, and the
class bias of every level shifted by one constant so that about ``--candidates`` (prior, class) pairs of that
image pass the 0.001 test score threshold (the raw recipe lets ~all 672 000 pass: NMS over 3 × 30 000 boxes, not
what a trained model gives); then loaded into detcli under MMDetection's key names. The same weights serve both
sizes (the 320 image, another random one, has about a quarter of the candidates).

Predict paths (rows), from one preprocessed (1, 3, H, W) tensor, test settings of the official ``test_cfg``
(score > 0.001, best 30 000 per level, NMS 0.65, 300 per image):

- MMDetection eager: raw = ``model._forward``; detections = ``model.predict(inputs, data_samples,
  rescale=False)`` (its ``predict_by_feat``);
- detcli eager: raw = ``model(images)``; detections = ``model.predict``;
- detcli optimised eager: :func:`detcli.inference.paths.inference_model` (BatchNorms folded, channels_last), what
  ``detcli predict`` / ``eval`` run;
- onnxruntime raw: ``detcli export --no-nms`` (:func:`detcli.app.export.export_command`, opset 17, on a detcli-1
  checkpoint written here) run through detcli's runtime (``OnnxDetector``: onnxruntime + detcli's decode and
  postprocess); raw = the session alone;
- onnxruntime end-to-end: ``detcli export`` (NMS inside the graph), the same runtime; no raw column. Its NMS runs
  over every static per-level top-30 000 candidate (seconds a call), so it is timed apart with ``--e2e-runs``.

onnxruntime sessions get ``intra_op_num_threads`` = threads (detcli's runtime leaves onnxruntime's default, all
cores, so the session is swapped here). Checks against detcli eager: max |Δ| of the raw head outputs (class
logits and pixel distances) and, per detection matched by label and box, max |Δbox| (px) and |Δscore|; "same
dets": equal counts and every detection within 1e-4 (box: relative to its size).

Training step: batch 4 at 320×320, random GTs (8 per image), both models in train mode from the same weights,
forward + loss + backward + ``AdamW(lr 0.004, weight_decay 0.05)`` step: detcli ``model.loss(images, targets,
metas)``, MMDetection ``model.loss(inputs, data_samples)`` (losses summed as mmengine's ``parse_losses``). Per
image = step / 4. The first step's losses and gradients of the two are compared (same weights and batch: they
should agree to float rounding); the last step's losses are printed too, they need not agree: on these random
weights a 1e-7 nudge of detcli's own weights moves its loss after 10 AdamW steps as far.

Timing: warmup, then the paths alternate (A B C … A B C …) and medians are reported, so a change of machine load
hits all alike; ``--threads`` torch threads (default 1).

Usage::

    OMP_NUM_THREADS=1 python -m benchmarks.speed.rtmdet_speed --mmdet-src /tmp/ref/mmsrc   # or MMDET_SRC=…
    OMP_NUM_THREADS=1 python -m benchmarks.speed.rtmdet_speed --sizes 640 --runs 10 --train-runs 5
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch


from benchmarks.fixtures.make_golden_fixtures import shared_aliases, spec_of
from benchmarks.speed.inference_latency import cpu_name, same_detections, time_all
from benchmarks.speed.retinanet_speed import random_targets
from tests.golden.weights import calibrate_batchnorms_, golden_state_dict

from detcli.config.loader import load_preset
from detcli.inference.paths import inference_model
from detcli.models import build_model
from detcli.models.base import Detector
from detcli.structures import Detections, ImageMeta, Target

PRESET = "rtmdet-tiny"
OFFICIAL_CONFIG = "rtmdet_tiny_8xb32-300e_coco.py"
NUM_CLASSES = 80
SEED = 7  # the golden rtmdet-tiny fixture's
DISTANCE_BIAS = 3.0  # as the golden rtmdet-tiny fixture: boxes of a few strides that overlap their neighbours'
TRAIN_BATCH, TRAIN_SIZE, GTS_PER_IMAGE = 4, 320, 8
LR, WEIGHT_DECAY = 0.004, 0.05  # the official RTMDet AdamW
SLOW = "onnxruntime end-to-end (NMS in graph)"


# ----------------------------------------------------------------------------- MMDetection
def import_mmdet(src: str | None):
    """MMDetection from ``src`` (mmcv.ops stubbed), or exit with a message that says what to give."""
    if not src:
        raise SystemExit("rtmdet_speed.py needs MMDetection 3.3.0's source: give --mmdet-src DIR or set MMDET_SRC "
                         "to a folder holding mmdet/, mmengine/ and mmcv/ (pip install --no-deps --target DIR "
                         "mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0 …, see benchmarks/fixtures/make_golden_fixtures.py)")
    missing = [d for d in ("mmdet", "mmengine", "mmcv") if not (Path(src) / d).is_dir()]
    config = Path(src) / "mmdet" / ".mim" / "configs" / "rtmdet" / OFFICIAL_CONFIG
    if missing or not config.is_file():
        what = f"no {', '.join(m + '/' for m in missing)}" if missing else f"no {config}"
        raise SystemExit(f"--mmdet-src / MMDET_SRC {src}: {what}; it must hold mmdet/ (with its .mim configs), "
                         "mmengine/ and mmcv/ of MMDetection 3.3.0 (see benchmarks/fixtures/make_golden_fixtures.py)")
    from benchmarks.common.official_mmdet import import_mmdet as import_with_stubbed_ops

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return import_with_stubbed_ops(str(src))


def build_mmdet_rtmdet(src: str):
    from mmengine.config import Config
    from mmdet.registry import MODELS

    cfg = Config.fromfile(str(Path(src) / "mmdet" / ".mim" / "configs" / "rtmdet" / OFFICIAL_CONFIG))
    cfg.model.backbone.init_cfg = None  # no download: every tensor is replaced
    assert cfg.model.bbox_head.num_classes == NUM_CLASSES
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = MODELS.build(cfg.model)
    return model, cfg.model.test_cfg


def mm_samples(images: torch.Tensor, targets: list[Target] | None = None) -> list:
    from mmdet.structures import DetDataSample
    from mmengine.structures import InstanceData

    h, w = images.shape[-2:]
    out = []
    for i in range(len(images)):
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w),
                                             batch_input_shape=(h, w), scale_factor=(1.0, 1.0)))
        if targets is not None:
            sample.gt_instances = InstanceData(bboxes=targets[i].boxes, labels=targets[i].labels)
        out.append(sample)
    return out


def mm_raw(ref, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """MMDetection's per-level maps flattened as detcli's HeadOutput: (B, N, C), (B, N, 4), index (level, y, x)."""
    cls_maps, reg_maps = ref._forward(images)
    flat = lambda maps: torch.cat([m.permute(0, 2, 3, 1).flatten(1, 2) for m in maps], dim=1)  # noqa: E731
    return flat(cls_maps), flat(reg_maps)


def mm_total_loss(losses: dict) -> torch.Tensor:
    """mmengine ``parse_losses``: every entry named ``*loss*``, a list summed."""
    total = 0
    for key, value in losses.items():
        if "loss" in key:
            total = total + (sum(v.mean() for v in value) if isinstance(value, (list, tuple)) else value.mean())
    return total


def loss_parts(losses: dict) -> dict[str, float]:
    return {k: float(sum(v) if isinstance(v, (list, tuple)) else v) for k, v in losses.items() if "loss" in k}


# ----------------------------------------------------------------------------- weights
@torch.no_grad()
def shift_class_bias_(ref, images: torch.Tensor, candidates: int, score_thr: float) -> float:
    """Shift every level's class bias by one constant so that ≈ ``candidates`` pairs score > ``score_thr``."""
    logits = mm_raw(ref, images)[0].flatten()
    kth = logits.topk(min(candidates, logits.numel())).values[-1]
    shift = float(np.log(score_thr / (1 - score_thr))) - float(kth) + 1e-4
    for conv in ref.bbox_head.rtm_cls:
        conv.bias += shift
    return shift


def setup(src: str, images: torch.Tensor, candidates: int):
    """(detcli model, MMDetection model, official test_cfg), same weights, eval mode."""
    ref, test_cfg = build_mmdet_rtmdet(src)
    spec = spec_of(ref)
    ref.load_state_dict(golden_state_dict(spec, SEED, shared_aliases(ref), distance_bias=DISTANCE_BIAS), strict=True)
    calibrate_batchnorms_(ref, images)
    shift_class_bias_(ref.eval(), images, candidates, float(test_cfg.score_thr))
    preset, _ = load_preset(PRESET, [f"model.num_classes={NUM_CLASSES}"])
    ours = build_model(preset, NUM_CLASSES, pretrained=False)
    ours.load_official_state_dict({"state_dict": ref.state_dict()})
    cfg = ours.postprocess_cfg
    official = (float(test_cfg.score_thr), float(test_cfg.nms.iou_threshold), int(test_cfg.max_per_img),
                int(test_cfg.nms_pre), float(test_cfg.min_bbox_size))
    assert official == (cfg.score_thr, cfg.iou_thr, cfg.max_det, cfg.nms_pre, cfg.min_bbox_size), (official, cfg)
    return ours.eval(), ref.eval(), preset


# ----------------------------------------------------------------------------- onnxruntime through detcli
def onnx_models(ours: Detector, preset, size: int, folder: Path, threads: int) -> dict[str, tuple]:
    """{"raw"/"end2end": (OnnxDetector, parity line)}: ``detcli export`` of a detcli-1 checkpoint of ``ours``, run by
    detcli's runtime with a ``threads``-thread onnxruntime session."""
    import onnxruntime as ort

    from detcli.app.export import ExportRequest, export_command
    from detcli.checkpoints.io import FORMAT, save_checkpoint
    from detcli.inference.loading import load_exported

    ckpt = folder / "rtmdet-tiny.pt"
    if not ckpt.exists():
        save_checkpoint(ckpt, {"format": FORMAT, "model": ours.state_dict(), "preset": preset.model_dump(mode="json"),
                               "class_names": [f"class{i}" for i in range(NUM_CLASSES)],
                               "cat_ids": list(range(1, NUM_CLASSES + 1)), "dataset": None})
    out = {}
    for mode, nms in (("raw", False), ("end2end", True)):
        path = folder / f"rtmdet-tiny-{size}-{mode}.onnx"
        log = io.StringIO()
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_command(ExportRequest(weights=ckpt, format="onnx", imgsz=size, nms=nms, output=path))
        parity = next((ln.strip() for ln in log.getvalue().splitlines() if "result" in ln), "?")
        model = load_exported(path, None, torch.device("cpu")).model
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        model.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        out[mode] = (model, " ".join(parity.split()))
    return out


# ----------------------------------------------------------------------------- predict
def paths(ours: Detector, ref, images: torch.Tensor, onnx: dict) -> dict[str, tuple[Callable | None, Callable]]:
    """{name: (raw_fn or None, detections_fn)}."""
    cfg = ours.postprocess_cfg
    samples = mm_samples(images)
    fused = inference_model(ours)

    def mm_detections() -> list[Detections]:
        res = ref.predict(images, samples, rescale=False)
        return [Detections(r.pred_instances.bboxes, r.pred_instances.scores, r.pred_instances.labels) for r in res]

    def onnx_raw(model):
        feed = {"images": images.numpy()}
        return lambda: [torch.from_numpy(t) for t in model.session.run(None, feed)]

    def onnx_detections(model):
        return lambda: model.predict(images, [], cfg)

    raw_model, end2end_model = onnx["raw"][0], onnx["end2end"][0]
    return {
        "MMDetection eager": (lambda: mm_raw(ref, images), mm_detections),
        "detcli eager": (lambda: ours(images), lambda: ours.predict(images, [])),
        "detcli optimised (inference_model)": (lambda: fused(images), lambda: fused.predict(images, [])),
        "onnxruntime raw + detcli postprocess": (onnx_raw(raw_model), onnx_detections(raw_model)),
        SLOW: (None, onnx_detections(end2end_model)),
    }


def detection_difference(a: Detections, b: Detections) -> tuple[float, float, list[float]]:
    """Max |Δbox| (px) and |Δscore| over the detections of ``b`` matched to ``a``'s (same label, nearest box),
    and the scores of the detections of either that found no partner (none when the two sets pair up)."""
    box_diff = score_diff = 0.0
    unmatched: list[float] = []
    used = torch.zeros(len(a.scores), dtype=torch.bool)
    for box, score, label in zip(b.boxes, b.scores, b.labels):
        dist = (a.boxes - box).abs().amax(dim=1)
        dist[(a.labels.long() != label.long()) | used] = float("inf")
        if len(dist) == 0 or not torch.isfinite(dist.min()):
            unmatched.append(float(score))
            continue
        j = int(dist.argmin())
        used[j] = True
        box_diff = max(box_diff, float(dist[j]))
        score_diff = max(score_diff, float((a.scores[j] - score).abs()))
    return box_diff, score_diff, unmatched + a.scores[~used].tolist()


def cut_gap(scores: list[float], reference: Detections) -> float:
    """How far the unmatched scores are from the lowest score detcli eager kept (a tie at the ``max_det`` cut)."""
    last = float(reference.scores.min()) if len(reference.scores) else 0.0
    return max(abs(s - last) for s in scores)


def raw_difference(out, reference) -> float:
    return max(float((torch.as_tensor(x) - y).abs().max()) for x, y in zip(out, reference[:2]))


def predict_block(ours, ref, size: int, images: torch.Tensor, onnx: dict, args) -> None:
    fns = paths(ours, ref, images, onnx)
    with torch.inference_mode():
        ref_raw = ours(images)
        ref_dets = ours.predict(images, [])
        checks = {}
        for name, (raw, det) in fns.items():
            dets = det()
            box, score, unmatched = detection_difference(dets[0], ref_dets[0])
            checks[name] = (raw_difference(raw(), ref_raw) if raw is not None else None, box, score,
                            len(dets[0].scores), unmatched, same_detections(dets, ref_dets))
        n_cand = int((ref_raw.cls_logits.sigmoid() > ours.postprocess_cfg.score_thr).sum())
    timed = {(k, col): fn for k, pair in fns.items() for col, fn in enumerate(pair) if fn is not None and k != SLOW}
    ms = time_all(timed, args.runs, args.warmup)
    ms.update(time_all({(SLOW, 1): fns[SLOW][1]}, args.e2e_runs, 1))  # seconds a call: timed apart, fewer runs
    raw_ms = {k: ms.get((k, 0)) for k in fns}
    det_ms = {k: ms[k, 1] for k in fns}
    print(f"\n{PRESET} predict, batch 1 @ {size}×{size}: {n_cand} (prior, class) pairs > "
          f"{ours.postprocess_cfg.score_thr:g}, {len(ref_dets[0].scores)} detections (detcli eager)")
    head = (f"{'path':38s} {'raw ms':>8s} {'×mmdet':>7s}   {'detect ms':>9s} {'×mmdet':>7s} {'×detcli':>7s}   "
            f"{'max|Δraw|':>9s} {'dets':>5s} {'max|Δbox|':>9s} {'max|Δscore|':>11s}  same dets")
    print(head + "\n" + "-" * len(head))
    base = "MMDetection eager"
    for k in fns:
        raw_cell = (f"{raw_ms[k]:8.2f} {raw_ms[k] / raw_ms[base]:7.2f}" if raw_ms[k] is not None
                    else f"{'-':>8s} {'-':>7s}")
        diff, box, score, count, unmatched, same = checks[k]
        print(f"{k + ('*' if k == SLOW else ''):38s} {raw_cell}   {det_ms[k]:9.2f} {det_ms[k] / det_ms[base]:7.2f} "
              f"{det_ms[k] / det_ms['detcli eager']:7.2f}   {'-' if diff is None else f'{diff:.1e}':>9s} "
              f"{count:5d} {box:9.1e} {score:11.1e}  {'yes' if same else 'NO'}"
              + (f" ({len(unmatched)} unmatched, scores within {cut_gap(unmatched, ref_dets[0]):.1e} of detcli's "
                 f"last kept)" if unmatched else ""))
    print(f"* timed apart: {args.e2e_runs} runs after 1 warmup (NMS inside the graph runs over every static per-level "
          f"top-{ours.postprocess_cfg.nms_pre} candidate, those under the score threshold included)")
    for mode, (_, parity) in onnx.items():
        print(f"  detcli export parity check ({mode}): {parity}")


# ----------------------------------------------------------------------------- training step
def train_block(ours: Detector, ref, args) -> None:
    gen = torch.Generator().manual_seed(321)
    images = torch.randn(TRAIN_BATCH, 3, TRAIN_SIZE, TRAIN_SIZE, generator=gen)
    gts = random_targets(gen, TRAIN_BATCH, TRAIN_SIZE, TRAIN_SIZE, GTS_PER_IMAGE, NUM_CLASSES, "cpu")
    targets = [Target(boxes, labels) for boxes, labels in gts]
    metas = [ImageMeta(i, f"bench{i}.jpg", (TRAIN_SIZE,) * 2, (TRAIN_SIZE,) * 2, np.eye(3).tolist())
             for i in range(TRAIN_BATCH)]
    samples = mm_samples(images, targets)
    models = {"MMDetection": copy.deepcopy(ref).train(), "detcli": copy.deepcopy(ours).train()}
    optims = {k: torch.optim.AdamW(m.parameters(), lr=LR, weight_decay=WEIGHT_DECAY) for k, m in models.items()}
    first: dict[str, dict[str, float]] = {}
    last: dict[str, dict[str, float]] = {}

    def step(name: str) -> Callable[[], None]:
        model, opt = models[name], optims[name]

        def run() -> None:
            opt.zero_grad(set_to_none=True)
            if name == "detcli":
                losses = model.loss(images, targets, metas, epoch=0)
                total = sum(losses.values())
            else:
                losses = model.loss(images, samples)
                total = mm_total_loss(losses)
            total.backward()
            opt.step()
            last[name] = loss_parts(losses)
            first.setdefault(name, last[name])
        return run

    fns = {k: step(k) for k in models}
    times: dict[str, list[float]] = {k: [] for k in fns}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(args.train_warmup + args.train_runs):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if i >= args.train_warmup:
                    times[name].append(1000 * (time.perf_counter() - start))
            if i == 0:  # the first step's gradients, same weights and batch (kept until the next zero_grad)
                grads = {k: dict(m.named_parameters()) for k, m in models.items()}
                grad_diff = max(float((p.grad - grads["MMDetection"][n].grad).abs().max() /
                                      grads["MMDetection"][n].grad.abs().max().clamp(min=1e-30))
                                for n, p in grads["detcli"].items())
    ms = {k: statistics.median(v) for k, v in times.items()}
    print(f"\n{PRESET} training step, batch {TRAIN_BATCH} @ {TRAIN_SIZE}×{TRAIN_SIZE}, {GTS_PER_IMAGE} GTs per image: "
          f"forward + loss + backward + AdamW step, train mode; {args.train_runs} steps after {args.train_warmup} "
          "warmup, alternating, medians")
    head = f"{'path':14s} {'ms/step':>9s} {'ms/image':>9s} {'×mmdet':>7s}   first-step losses   (last step)"
    print(head + "\n" + "-" * len(head))
    for k in fns:
        fmt = lambda d: " ".join(f"{n} {v:.6f}" for n, v in d.items())  # noqa: E731
        print(f"{k:14s} {ms[k]:9.1f} {ms[k] / TRAIN_BATCH:9.1f} {ms[k] / ms['MMDetection']:7.2f}   {fmt(first[k])}"
              f"   ({fmt(last[k])})")
    print(f"first-step gradients of the {len(grads['detcli'])} parameter tensors: max |Δ| / max |g| (per tensor) "
          f"{grad_diff:.1e}; later steps drift apart (random weights, lr {LR:g}: the path follows float rounding)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mmdet-src", default=os.environ.get("MMDET_SRC"),
                        help="folder holding mmdet/, mmengine/, mmcv/ of MMDetection 3.3.0 (default: $MMDET_SRC)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[640, 320], help="predict input sides")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--e2e-runs", type=int, default=3, help="runs of the (slow) end-to-end ONNX path")
    parser.add_argument("--train-runs", type=int, default=8)
    parser.add_argument("--train-warmup", type=int, default=2)
    parser.add_argument("--candidates", type=int, default=5000,
                        help="(prior, class) pairs of the 640×640 image above the 0.001 score threshold")
    args = parser.parse_args()
    for message in (r"`torch\.cuda\.amp\.autocast", r"torch\.meshgrid"):  # mmdet 3.3.0 under a newer torch
        warnings.filterwarnings("ignore", message=message)
    mmdet = import_mmdet(args.mmdet_src)
    torch.set_num_threads(args.threads)
    import mmcv
    import mmengine
    import onnxruntime

    started = time.perf_counter()
    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores, load average {os.getloadavg()[0]:.2f}), torch "
          f"{torch.__version__}, onnxruntime {onnxruntime.__version__}; MMDetection {mmdet.__version__} (mmengine "
          f"{mmengine.__version__}, mmcv {mmcv.__version__}, mmcv.ops NMS = torchvision stand-in) from "
          f"{args.mmdet_src}; {args.threads} thread(s), predict: {args.runs} runs after {args.warmup} warmup, paths "
          "alternating, medians")
    gen = torch.Generator().manual_seed(123)
    images = {s: torch.randn(1, 3, s, s, generator=gen) for s in sorted(args.sizes, reverse=True)}
    calibration = images.get(640, torch.randn(1, 3, 640, 640, generator=torch.Generator().manual_seed(123)))
    ours, ref, preset = setup(args.mmdet_src, calibration, args.candidates)
    with tempfile.TemporaryDirectory(prefix="rtmdet-speed-") as tmp:
        for size in args.sizes:
            onnx = onnx_models(ours, preset, size, Path(tmp), args.threads)
            predict_block(ours, ref, size, images[size], onnx, args)
    train_block(ours, ref, args)
    print("\nraw: the network only (MMDetection _forward, detcli forward, the ONNX raw session); detect: up to the "
          "final detections in input pixels. ×mmdet / ×detcli: latency ratio to MMDetection eager / detcli eager "
          "(< 1 = faster). max|Δraw|: class logits and pixel distances against detcli eager; dets: detections; "
          "max|Δbox| px, max|Δscore| over detections matched to detcli eager's (same label, nearest box); same dets: "
          "equal counts, every detection within 1e-4.")
    print(f"total {time.perf_counter() - started:.0f} s, load average at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
