"""Batch-1 CPU latency of NanoDet-Plus-m, image in → detections out, in every runtime detcli offers.

Rows (same weights, same input, post-processing included everywhere; medians of alternating runs):

- official: RangiLyu/nanodet ``model(img)`` + ``head.get_bboxes`` (only with ``--repo`` / ``$NANODET_REPO``);
- detcli eager: ``NanoDetPlus.predict`` (forward → decode → clip → shared postprocess);
- detcli eager, optimised: the export's end-to-end graph in eager mode under ``inference_mode`` (static shapes,
  pre-NMS top-1000, one NMS call);
- TorchScript: that graph traced and frozen (``optimize_for_inference`` was slower here: MKL-DNN and
  depthwise convolutions);
- onnxruntime: that graph exported to ONNX (opset 17), all graph optimisations, same thread count.

Ratios are against detcli eager measured in the same run.

    python -m benchmarks.speed.export_latency                 # 320x320, 1 thread
    python -m benchmarks.speed.export_latency --imgsz 416 --threads 4 --repo /path/to/nanodet
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
import warnings

import torch


from detcli.config.schema import NanoDetPlusConfig
from detcli.export import formats
from detcli.export.graph import EndToEndGraph
from detcli.models.detectors.nanodet_plus import NanoDetPlus


def median_ms(fns: dict, runs: int, warmup: int) -> dict[str, float]:
    """Median wall time of each callable, run alternately so that load changes hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


@torch.no_grad()
def trained_like_weights(model: NanoDetPlus, images: torch.Tensor, candidates: int) -> None:
    """Random but non-degenerate head weights, then one class-bias shift so that ≈ ``candidates`` (prior, class)
    pairs score above the threshold, as a trained model on a busy image."""
    gen = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if name.startswith("head.") and p.ndim > 1:
            p.add_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
    c = model.num_classes
    logits = model(images).cls_logits.flatten()
    kth = logits.topk(min(candidates, logits.numel())).values[-1]
    thr = model.postprocess_cfg.score_thr
    shift = math.log(thr / (1 - thr)) - float(kth) + 1e-4
    for conv in model.head.gfl_cls:
        conv.bias[:c] += shift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--candidates", type=int, default=1000, help="(prior, class) pairs above the score threshold")
    parser.add_argument("--repo", default=os.environ.get("NANODET_REPO"), help="RangiLyu/nanodet checkout (optional)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    size = (args.imgsz, args.imgsz)
    torch.manual_seed(0)
    ours = NanoDetPlus.from_config(NanoDetPlusConfig(type="nanodet_plus", width="1.0x", neck_channels=96), 80).eval()
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(123))
    trained_like_weights(ours, images, args.candidates)
    graph = EndToEndGraph(ours, size, ours.postprocess_cfg).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.freeze(formats.torchscript_module(graph, images))
    ort = formats.require("onnxruntime", "this benchmark")
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    data = formats.onnx_bytes(graph, images, ["num_dets", "boxes", "scores", "labels"], 17, False)
    session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    feed = {"images": images.numpy()}

    fns = {"detcli eager": lambda: ours.predict(images, [], ours.postprocess_cfg)}
    if args.repo:
        from benchmarks.common.official_nanodet import build_official, import_official

        ref, _ = build_official(import_official(args.repo), "1.0x", args.imgsz)
        missing, unexpected = ref.load_state_dict(ours.state_dict(), strict=False)  # same key names
        assert not unexpected and all("distribution_project" in k for k in missing), (missing, unexpected)
        ref.eval()

        def official():
            with torch.no_grad():
                preds = ref(images)
                cls, reg = preds.split([80, preds.shape[-1] - 80], dim=-1)
                return ref.head.get_bboxes(cls, reg, {"img": images})

        fns["official eager"] = official

    def fast_eager():
        with torch.inference_mode():
            return graph(images)

    def torchscript():
        with torch.inference_mode():
            return scripted(images)

    fns["detcli eager, optimised"] = fast_eager
    fns["TorchScript"] = torchscript
    fns["onnxruntime"] = lambda: session.run(None, feed)
    n_dets = int(graph(images)[0][0])
    ms = median_ms(fns, args.runs, args.warmup)
    base = ms["detcli eager"]
    print(f"NanoDet-Plus-m {args.imgsz}x{args.imgsz}, batch 1, CPU, {args.threads} thread(s), {n_dets} detections, "
          f"median of {args.runs} alternating runs; torch {torch.__version__}, onnxruntime {ort.__version__}")
    print(f"{'runtime':28s}{'ms / image':>12s}{'vs detcli eager':>18s}")
    for name, t in ms.items():
        print(f"{name:28s}{t:12.2f}{base / t:17.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
