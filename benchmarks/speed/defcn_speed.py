"""DeFCN on CPU: predict latency without and with NMS (beside torchvision's FCOS-R50 in the same run), and the
share of a training step that POTO's Hungarian matching takes on the host.

Predict: ``model.predict`` (forward → decode → post-process) of one normalised image at ``--size``; the NMS
variant is the same model with ``test.nms=class_aware`` (IoU 0.6, DeFCN's ``NMS_THRESH_TEST``). Reference:
``torchvision.models.detection.fcos_resnet50_fpn`` (random weights; its transform set to the same size, so it
does not resize), which has the same R50-FPN-P3–P7 body and a 4+4-conv GN head, with NMS.

Train step: forward + POTO/aux assignment + losses + backward + SGD at ``--train-size`` (800×1333 as COCO),
``--gts`` random GTs per image; the assignment time is split into building the quality matrices (on the
device) and the scipy solver (host).

    OMP_NUM_THREADS=2 python -m benchmarks.speed.defcn_speed [--size 800 1216] [--iters 5] [--train-size 800 1344]
        [--gts 50] [--batch 1]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


import detcli.assigners.poto as poto
from detcli.config.loader import load_preset
from detcli.models import build_model
from detcli.structures import ImageMeta, Target


def median_seconds(fn, iters: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def predict_latency(size: tuple[int, int], iters: int) -> dict[str, float]:
    h, w = size
    images = torch.randn(1, 3, h, w)
    metas = [ImageMeta(0, "x.jpg", (h, w), (h, w), np.eye(3).tolist())]
    out = {}
    for name, overrides in (("DeFCN, no NMS", []), ("DeFCN, with NMS", ["test.nms=class_aware"])):
        model = build_model(load_preset("defcn-r50-fpn", overrides)[0], 80, pretrained=False).eval()
        with torch.inference_mode():
            cfg = model.postprocess_cfg.replace(score_thr=0.05)
            out[name] = median_seconds(lambda: model.predict(images, metas, cfg), iters)
            raw = model(images)
            out[name + " (post-process only)"] = median_seconds(
                lambda: model.detections(raw, tuple(images.shape), metas, model.postprocess_cfg), iters * 4)
    from torchvision.models.detection import fcos_resnet50_fpn

    ref = fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=81, min_size=h, max_size=w).eval()
    with torch.inference_mode():
        out["torchvision FCOS-R50 (reference)"] = median_seconds(lambda: ref([images[0]]), iters)
    return out


def hungarian_share(size: tuple[int, int], gts: int, batch: int, iters: int) -> dict[str, float]:
    h, w = size
    model = build_model(load_preset("defcn-r50-fpn")[0], 80, pretrained=False).train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, h, w, generator=g)
    targets = []
    for _ in range(batch):
        xy = torch.rand(gts, 2, generator=g) * torch.tensor([w * 0.8, h * 0.8])
        wh = 16 + torch.rand(gts, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
        targets.append(Target(torch.cat([xy, (xy + wh).clamp(max=torch.tensor([w, h]))], 1),
                              torch.randint(0, 80, (gts,), generator=g)))
    spent = {"solver": 0.0, "assign": 0.0}
    solver, assign = poto.linear_sum_assignment, model.assign

    def timed_solver(*a, **k):
        t = time.perf_counter()
        r = solver(*a, **k)
        spent["solver"] += time.perf_counter() - t
        return r

    def timed_assign(*a, **k):
        t = time.perf_counter()
        r = assign(*a, **k)
        spent["assign"] += time.perf_counter() - t
        return r

    def step():
        opt.zero_grad(set_to_none=True)
        sum(model.loss(images, targets, [], 0).values()).backward()
        opt.step()

    poto.linear_sum_assignment, model.assign = timed_solver, timed_assign
    try:
        step()  # warm-up
        spent.update(solver=0.0, assign=0.0)
        total = 0.0
        for _ in range(iters):
            t = time.perf_counter()
            step()
            total += time.perf_counter() - t
    finally:
        poto.linear_sum_assignment = solver
        del model.assign
    return {"step": total / iters, "assign (POTO + aux)": spent["assign"] / iters,
            "Hungarian solver (host)": spent["solver"] / iters}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, nargs=2, default=(800, 1216), metavar=("H", "W"))
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--train-size", type=int, nargs=2, default=(800, 1344), metavar=("H", "W"))
    ap.add_argument("--gts", type=int, default=50)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--train-iters", type=int, default=3)
    args = ap.parse_args()
    print(f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}")
    lat = predict_latency(tuple(args.size), args.iters)
    ref = lat["torchvision FCOS-R50 (reference)"]
    print(f"predict latency, one {args.size[0]}×{args.size[1]} image (median of {args.iters}):")
    for name, s in lat.items():
        print(f"  {name:<42} {1000 * s:8.1f} ms" + ("" if "only" in name else f"   {s / ref:.2f}× the reference"))
    share = hungarian_share(tuple(args.train_size), args.gts, args.batch, args.train_iters)
    print(f"training step, batch {args.batch} at {args.train_size[0]}×{args.train_size[1]}, {args.gts} GTs per image "
          f"(mean of {args.train_iters}):")
    for name, s in share.items():
        print(f"  {name:<42} {1000 * s:8.1f} ms   {100 * s / share['step']:5.1f} % of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
