"""Per-image CPU latency of NanoDet-Plus-m predict, detcli vs the official implementation, in one process.

Both models hold the same weights (random, with BN statistics calibrated and the class bias shifted so that
about ``--candidates`` (prior, class) pairs of the benchmark image pass the 0.05 score threshold, as a
trained model produces on a busy image). Timed path, eager, under ``torch.no_grad``, from a preprocessed
(1, 3, H, W) tensor to detections in input pixels:

- detcli: ``NanoDetPlus.predict`` (forward, sigmoid, Integral decode, clamp, multi-label class-aware NMS);
- official: ``model(img)`` + ``model.head.post_process``'s decoding/NMS part ``head.get_bboxes`` (its
  remaining step, mapping boxes back to the original image, is the engine's job in detcli).

The two are timed alternately (warmup, then the median of ``--runs``), with the same thread count.

Usage: ``python -m benchmarks.speed.nanodet_predict_latency --repo /path/to/nanodet --imgsz 320 --runs 50 --threads 1``
"""
from __future__ import annotations

import argparse
import math
import statistics
import time

import torch


from benchmarks.common.official_nanodet import build_official, calibrate_bn_, import_official, randomize_

from detcli.config.schema import NanoDetPlusConfig
from detcli.models.detectors.nanodet_plus import NanoDetPlus

SCORE_THR, IOU_THR, MAX_DET = 0.05, 0.6, 100  # official get_bboxes settings


@torch.no_grad()
def shift_class_bias_(model, images: torch.Tensor, candidates: int, num_classes: int = 80) -> None:
    """Shift every level's class bias by one constant so that ≈ ``candidates`` pairs score > SCORE_THR."""
    logits = model(images)[..., :num_classes].flatten()
    kth = logits.topk(min(candidates, logits.numel())).values[-1]
    shift = math.log(SCORE_THR / (1 - SCORE_THR)) - float(kth) + 1e-4
    for conv in model.head.gfl_cls:
        conv.bias[:num_classes] += shift


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=None, help="RangiLyu/nanodet checkout (default: $NANODET_REPO)")
    parser.add_argument("--imgsz", type=int, default=320, choices=(320, 416))
    parser.add_argument("--width", default="1.0x", choices=("1.0x", "1.5x"))
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--candidates", type=int, default=1000, help="(prior, class) pairs above the score threshold")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    official = import_official(args.repo)
    ref, _ = build_official(official, args.width, args.imgsz)
    randomize_(ref)
    calibrate_bn_(ref, args.imgsz)
    ref.eval()
    images = torch.randn(1, 3, args.imgsz, args.imgsz, generator=torch.Generator().manual_seed(123))
    shift_class_bias_(ref, images, args.candidates)
    nc = {"1.0x": 96, "1.5x": 128}[args.width]
    ours = NanoDetPlus.from_config(NanoDetPlusConfig(type="nanodet_plus", width=args.width, neck_channels=nc,
                                                      aux_channels=2 * nc), 80)
    ours.load_official_state_dict({"state_dict": ref.state_dict()})
    ours.eval()

    def run_ours():
        return ours.predict(images, [], ours.postprocess_cfg.replace(score_thr=SCORE_THR, iou_thr=IOU_THR,
                                                                     max_det=MAX_DET))

    def run_official():
        preds = ref(images)
        cls, reg = preds.split([80, preds.shape[-1] - 80], dim=-1)
        return ref.head.get_bboxes(cls, reg, {"img": images})

    times: dict[str, list[float]] = {"detcli": [], "official": []}
    with torch.no_grad():
        for i in range(args.warmup + args.runs):
            for name, fn in (("detcli", run_ours), ("official", run_official)):
                start = time.perf_counter()
                fn()
                if i >= args.warmup:
                    times[name].append(time.perf_counter() - start)
        dets = run_ours()[0]
        ref_dets, ref_labels = run_official()[0]
        n_cand = int((ref(images)[..., :80].sigmoid() > SCORE_THR).sum())

    same = (len(dets.scores) == len(ref_dets) and torch.equal(dets.labels, ref_labels)
            and torch.allclose(dets.boxes, ref_dets[:, :4], atol=1e-3) and torch.allclose(dets.scores, ref_dets[:, 4]))
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"NanoDet-Plus-m {args.width} @{args.imgsz}, CPU, {args.threads} thread(s), batch 1, eager, "
          f"{args.runs} runs after {args.warmup} warmup; {n_cand} candidate pairs > {SCORE_THR}, "
          f"{len(dets.scores)} detections, identical to official: {'yes' if same else 'NO'}")
    print(f"detcli   predict            : {ms['detcli']:.2f} ms/img (median)")
    print(f"official forward+get_bboxes : {ms['official']:.2f} ms/img (median)")
    print(f"ratio detcli/official       : {ms['detcli'] / ms['official']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
