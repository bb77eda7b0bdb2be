"""Batch-1 CPU latency of every inference path of a preset, from one preprocessed (1, 3, H, W) tensor, in one run.

Paths (rows):

- official eager: RangiLyu/nanodet's own model (NanoDet-Plus presets, with ``--repo`` / ``$NANODET_REPO``);
- detcli eager: the model as ``load_for_inference`` gives it;
- detcli optimised eager: :func:`detcli.models.fuse.fuse_for_inference` (BatchNorms folded, channels_last),
  what ``detcli predict`` / ``eval`` run by default;
- TorchScript: ``torch.jit.trace`` of the optimised model's ``DecodedGraph``, then ``torch.jit.freeze``;
  and the same after ``torch.jit.optimize_for_inference`` (oneDNN layouts), a separate row;
- onnxruntime: the optimised model's ``DecodedGraph`` exported here (``torch.onnx.export``, opset 17, static
  shape), CPUExecutionProvider, ``intra_op_num_threads`` = threads, graph optimisation level ALL.

Columns: "raw" is the network: the eager models' ``forward`` (head outputs); the two graph paths hold
forward + decode (boxes and scores), so they do a little more there. "detections" is everything up to the
final detections in input pixels: ``predict`` for detcli (forward → decode → clip → shared postprocess), the
graph output → clip → the same postprocess for TorchScript / onnxruntime, ``forward`` + ``head.get_bboxes``
for the official model. Eager paths run under ``torch.inference_mode()``.

Weights are random. With the official model they are set as in ``nanodet_predict_latency.py`` (whose helpers
this reuses): BN statistics calibrated on random images and the class bias shifted so that about
``--candidates`` (prior, class) pairs pass the 0.05 score threshold, as a trained model on a busy image;
without it the score threshold is set to let that many pass. Every path is checked against detcli eager (raw max |Δ|, same
detections). Timing: warmup, then the paths alternate (A B C … A B C …) and the medians are reported, so a
change of machine load hits all alike.

Usage::

    python -m benchmarks.speed.inference_latency --repo /path/to/nanodet                # nanodet-plus-m @320, 1 thread
    python -m benchmarks.speed.inference_latency --repo … --preset nanodet-plus-m-1.5x-416 --threads 2
"""
from __future__ import annotations

import argparse
import copy
import io
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch


from benchmarks.common.official_nanodet import OFFICIAL_CONFIGS, build_official, calibrate_bn_, import_official, randomize_

from detcli.config.loader import load_preset
from detcli.data.build import input_size
from detcli.export.graph import DecodedGraph
from detcli.models import build_model
from detcli.models.base import Detector
from detcli.models.fuse import fuse_for_inference
from detcli.postprocess import clip_boxes, image_limits
from detcli.structures import Detections

NUM_CLASSES = 80
SCORE_THR = 0.05  # official get_bboxes


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def setup(preset_name: str, imgsz: int | None, repo: str | None, candidates: int):
    """(detcli model, official model or None, images, score threshold, (h, w))."""
    preset, _ = load_preset(preset_name, [f"model.num_classes={NUM_CLASSES}"])
    w, h = input_size(preset, imgsz)
    images = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(123))
    ours = build_model(preset, NUM_CLASSES, pretrained=False)
    official_cfg = (getattr(preset.model, "width", None), w)
    ref = None
    if preset.model.type == "nanodet_plus" and h == w and official_cfg in OFFICIAL_CONFIGS and (
            repo or os.environ.get("NANODET_REPO")):
        from benchmarks.speed.nanodet_predict_latency import shift_class_bias_

        ref, _ = build_official(import_official(repo), *official_cfg)
        randomize_(ref)
        calibrate_bn_(ref, w)
        ref.eval()
        shift_class_bias_(ref, images, candidates, NUM_CLASSES)
        ours.load_official_state_dict({"state_dict": ref.state_dict()})
        score_thr = SCORE_THR
    else:
        randomize_(ours)
        with torch.inference_mode():
            scores = ours.decode_scores(ours(images)).flatten()
        score_thr = float(scores.topk(min(candidates + 1, scores.numel())).values[-1])
    return ours.eval(), ref, images, score_thr, (h, w)


def torchscript(graph: torch.nn.Module, images: torch.Tensor, optimize: bool) -> torch.jit.ScriptModule:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.freeze(torch.jit.trace(graph, (images,)).eval())
        return torch.jit.optimize_for_inference(traced) if optimize else traced


def onnx_session(graph: torch.nn.Module, images: torch.Tensor, threads: int):
    import onnxruntime as ort

    buf = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (images,), buf, dynamo=False, opset_version=17, input_names=["images"],
                          output_names=["boxes", "scores"])
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])


def paths(ours: Detector, ref, images: torch.Tensor, score_thr: float, threads: int, size: tuple[int, int]):
    """{name: (raw_fn, detections_fn)}; every fn returns what it computed."""
    cfg = ours.postprocess_cfg.replace(score_thr=score_thr)
    fused = fuse_for_inference(ours)
    graph = DecodedGraph(fused, size).eval()
    priors = graph.priors

    def graph_detections(run: Callable[[], tuple]) -> Callable[[], list[Detections]]:
        def detect():
            boxes, scores = (torch.as_tensor(t) for t in run())
            boxes = clip_boxes(boxes, image_limits([], images.shape, boxes))
            return ours.postprocess(boxes, scores, priors, cfg)
        return detect

    out: dict[str, tuple[Callable, Callable]] = {}
    if ref is not None:
        def official_detections():
            preds = ref(images)
            cls, reg = preds.split([NUM_CLASSES, preds.shape[-1] - NUM_CLASSES], dim=-1)
            return [Detections(d[:, :4], d[:, 4], lab) for d, lab in ref.head.get_bboxes(cls, reg, {"img": images})]
        out["official eager"] = (lambda: ref(images), official_detections)
    out["detcli eager"] = (lambda: ours(images), lambda: ours.predict(images, [], cfg))
    out["detcli optimised eager"] = (lambda: fused(images), lambda: fused.predict(images, [], cfg))
    for name, optimize in (("TorchScript frozen", False), ("TorchScript optimize_for_inference", True)):
        ts = torchscript(graph, images, optimize)
        out[name] = (lambda ts=ts: ts(images), graph_detections(lambda ts=ts: ts(images)))
    session, feed = onnx_session(graph, images, threads), {"images": images.numpy()}
    out["onnxruntime"] = (lambda: session.run(None, feed), graph_detections(lambda: session.run(None, feed)))
    return out


def time_all(fns: dict[object, Callable], runs: int, warmup: int) -> dict[object, float]:
    """Median ms of each fn, the fns alternating (every one once per round)."""
    times: dict[object, list[float]] = {k: [] for k in fns}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, fn in fns.items():
                start = time.perf_counter()
                fn()
                if i >= warmup:
                    times[name].append(1000 * (time.perf_counter() - start))
    return {k: statistics.median(v) for k, v in times.items()}


def raw_difference(out, reference, ours: Detector, size: tuple[int, int]) -> float:
    """Max |Δ| against detcli eager: of the head outputs (eager paths), or of the scores and of the boxes
    relative to their size (the graphs' decoded outputs)."""
    if hasattr(out, "cls_logits"):  # detcli HeadOutput
        return max(float((a - b).abs().max()) for a, b in zip(out[:2], reference[:2]))
    if isinstance(out, torch.Tensor):  # official (B, N, C + K)
        return float((out - torch.cat([reference.cls_logits, reference.bbox_reg], dim=-1)).abs().max())
    boxes, scores = (torch.as_tensor(t) for t in out)
    ref_boxes, ref_scores = ours.decode(reference, ours.priors(size))
    box_size = (ref_boxes[..., 2:] - ref_boxes[..., :2]).amax(dim=-1, keepdim=True).clamp(min=1)
    return max(float((scores - ref_scores).abs().max()), float(((boxes - ref_boxes).abs() / box_size).max()))


def same_detections(a: list[Detections], b: list[Detections], tol: float = 1e-4) -> bool:
    """Each detection of ``b`` has its own in ``a`` with the same label, score within ``tol`` and box within
    ``tol`` · its size (as ``tests/unit/test_fuse.py``; the order may differ where two scores are within float noise)."""
    for x, y in zip(a, b):
        if len(x.scores) != len(y.scores):
            return False
        size = (y.boxes[:, 2:] - y.boxes[:, :2]).amax(dim=1).clamp(min=1)
        close = (((y.boxes[:, None] - x.boxes[None]).abs().amax(dim=2) <= tol * size[:, None])
                 & ((y.scores[:, None] - x.scores[None]).abs() <= tol) & (y.labels[:, None] == x.labels[None].long()))
        for i in range(len(y.scores)):
            j = int(close[i].float().argmax())
            if not close[i, j]:
                return False
            close[:, j] = False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", action="append", help="preset(s) to time (default: nanodet-plus-m)")
    parser.add_argument("--imgsz", type=int, default=None, help="input long side (default: the preset's)")
    parser.add_argument("--repo", default=None, help="RangiLyu/nanodet checkout (default: $NANODET_REPO)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=1000, help="(prior, class) pairs above the score threshold")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime

    print(f"CPU: {cpu_name()} ({os.cpu_count()} logical cores), torch {torch.__version__}, "
          f"onnxruntime {onnxruntime.__version__}; {args.threads} thread(s), batch 1, {args.runs} runs after "
          f"{args.warmup} warmup, paths alternating, medians")
    for preset_name in args.preset or ["nanodet-plus-m"]:
        ours, ref, images, score_thr, size = setup(preset_name, args.imgsz, args.repo, args.candidates)
        fns = paths(ours, ref, images, score_thr, args.threads, size)
        with torch.inference_mode():
            cfg = ours.postprocess_cfg.replace(score_thr=score_thr)
            ref_raw, ref_dets = ours(images), ours.predict(images, [], cfg)
            checks = {k: (raw_difference(raw(), ref_raw, ours, size), same_detections(det(), ref_dets))
                      for k, (raw, det) in fns.items()}
            n_cand = int((ours.decode_scores(ref_raw) > score_thr).sum())
            exact = copy.deepcopy(ours).double()(images.double())  # the float32 rounding of detcli eager itself
            noise = max(float((a.double() - b).abs().max()) for a, b in zip(ref_raw[:2], exact[:2]))
        ms = time_all({(k, col): fn for k, pair in fns.items() for col, fn in enumerate(pair)}, args.runs, args.warmup)
        raw_ms, det_ms = ({k: ms[k, col] for k in fns} for col in (0, 1))
        print(f"\n{preset_name} @ {size[0]}×{size[1]}: {n_cand} (prior, class) pairs > {score_thr:.4g}, "
              f"{len(ref_dets[0].scores)} detections; detcli eager's head outputs are {noise:.1e} from a float64 run")
        base = [b for b in ("official eager", "detcli eager") if b in raw_ms]
        ratio_names = "".join(f" {'×' + b.split()[0]:>9s}" for b in base)
        head = f"{'path':35s} {'raw ms':>8s}{ratio_names}   {'detect ms':>9s}{ratio_names}   {'max|Δraw|':>9s}  same dets"
        print(head + "\n" + "-" * len(head))
        for k in fns:
            cells = [f"{col[k]:8.2f}" + "".join(f" {col[k] / col[b]:9.2f}" for b in base) for col in (raw_ms, det_ms)]
            diff, same = checks[k]
            print(f"{k:35s} {cells[0]}   {' ' + cells[1]}   {diff:9.1e}  {'yes' if same else 'NO'}")
        if ref is None:
            print("(no official row: it needs a NanoDet-Plus preset at an official size and --repo / NANODET_REPO)")
    print("\n×official / ×detcli: latency ratio to the official eager / detcli eager path (< 1 = faster). Raw of "
          "the TorchScript and onnxruntime rows includes the decode (forward + decode graph). max|Δraw|: against "
          "detcli eager, head outputs (eager rows) or scores and boxes / box size (graph rows); same dets: labels "
          "equal, scores and boxes / box size within 1e-4.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
