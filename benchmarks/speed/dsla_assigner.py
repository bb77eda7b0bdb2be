"""Time detcli's DynamicSoftLabelAssigner against the official NanoDet one.

    NANODET_REPO=/path/to/nanodet python -m benchmarks.speed.dsla_assigner [--device cpu|cuda] [--threads 1]

Inputs mimic NanoDet-Plus-m at 320x320: 2125 priors (strides 8/16/32/64), 80 classes, class logits
~ N(-4, 1.5), boxes decoded from random distance logits, random GTs of 4-150 px. Prints the median time
of one image's assignment for 20 and 100 GTs, the per-batch time of ``assign_batch`` against a loop of
official calls, and the ratio official / detcli (> 1 means detcli is faster).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch


from detcli.assigners.dsl import DynamicSoftLabelAssigner
from detcli.geometry.priors import point_priors
from detcli.losses.nanodet_plus_loss import decode_gfl_boxes


def median_ms(fn, device: str, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def make_inputs(batch: int, num_gt: int, device: str, gen: torch.Generator):
    num_classes, reg_max, size = 80, 7, 320
    strides = (8, 16, 32, 64)
    priors = point_priors([(-(-size // s), -(-size // s)) for s in strides], strides)
    n = priors.shape[0]
    logits = torch.randn(batch, n, num_classes, generator=gen) * 1.5 - 4
    boxes = decode_gfl_boxes(torch.randn(batch, n, 4 * (reg_max + 1), generator=gen) * 2, priors, reg_max)
    gts, labels = [], []
    for _ in range(batch):
        xy = torch.rand(num_gt, 2, generator=gen) * 280
        gts.append(torch.cat([xy, (xy + torch.rand(num_gt, 2, generator=gen) * 146 + 4).clamp(max=size)], 1).to(device))
        labels.append(torch.randint(0, num_classes, (num_gt,), generator=gen).to(device))
    return logits.to(device), priors.to(device), boxes.to(device), gts, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    repo = os.environ.get("NANODET_REPO")
    if not repo:
        sys.exit("set NANODET_REPO to an official nanodet checkout")
    from tests.support.nanodet_official import load_official

    official = load_official(repo).dsl.DynamicSoftLabelAssigner(topk=13)
    ours = DynamicSoftLabelAssigner()
    gen = torch.Generator().manual_seed(0)
    print(f"device={args.device} threads={args.threads} priors=2125 classes=80")
    for num_gt in (20, 100):
        logits, priors, boxes, gts, labels = make_inputs(args.batch, num_gt, args.device, gen)
        t_off = median_ms(lambda: official.assign(logits[0], priors, boxes[0], gts[0], labels[0]), args.device, args.repeats)
        t_our = median_ms(lambda: ours.assign(logits[0], priors, boxes[0], gts[0], labels[0]), args.device, args.repeats)
        print(f"1 image , {num_gt:3d} GTs: official {t_off:8.2f} ms  detcli {t_our:8.2f} ms  ratio {t_off / t_our:5.2f}x")

        def official_loop():
            for i in range(args.batch):
                official.assign(logits[i], priors, boxes[i], gts[i], labels[i])

        t_off = median_ms(official_loop, args.device, max(2, args.repeats // 2))
        t_our = median_ms(lambda: ours.assign_batch(logits, priors, boxes, gts, labels), args.device, max(2, args.repeats // 2))
        print(
            f"{args.batch} images, {num_gt:3d} GTs: official loop {t_off:8.2f} ms  detcli assign_batch {t_our:8.2f} ms"
            f"  ratio {t_off / t_our:5.2f}x"
        )


if __name__ == "__main__":
    main()
