"""Speed of detcli's RetinaNet-R50 against torchvision's ``retinanet_resnet50_fpn_v2`` in the same process.

One training iteration (forward + loss + backward, batch 2) and one inference pass (batch 1, with
post-processing) at the same input size for both. torchvision's internal transform is given
``min_size``/``max_size`` equal to the input so it does not resize, and its stem + layer1 are frozen like
detcli's (``frozen_stages=1``). Architectures still differ the way the projects do (torchvision v2 has GN
in its head and a GIoU box loss; MMDetection/detcli has no norm in the head and an L1 loss).

    python -m benchmarks.speed.retinanet_speed                      # 512x512, CPU, 1 thread
    python -m benchmarks.speed.retinanet_speed --size 800 1333 --device cuda --runs 20
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch


from detcli.config.schema import RetinaNetConfig
from detcli.models.detectors.retinanet import RetinaNet
from detcli.structures import ImageMeta, Target


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed_pair(fa, fb, runs: int, warmup: int, device: torch.device) -> tuple[float, float]:
    """Median wall times (ms) of ``fa`` and ``fb``, run alternately so that load changes hit both alike."""
    for _ in range(warmup):
        fa(), fb()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(runs):
        for fn, out in ((fa, times[0]), (fb, times[1])):
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            out.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times[0]), statistics.median(times[1])


def random_targets(gen: torch.Generator, n_img: int, h: int, w: int, n_box: int, num_classes: int, device):
    out = []
    for _ in range(n_img):
        xy = torch.rand(n_box, 2, generator=gen) * torch.tensor([w * 0.7, h * 0.7])
        wh = 16 + torch.rand(n_box, 2, generator=gen) * torch.tensor([w * 0.3, h * 0.3])
        boxes = torch.cat([xy, xy + wh], 1)
        out.append((boxes.to(device), torch.randint(0, num_classes, (n_box,), generator=gen).to(device)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="detcli vs torchvision RetinaNet-R50 speed")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-classes", type=int, default=80)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    h, w = args.size
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    from torchvision.models.detection import retinanet_resnet50_fpn_v2

    ours = RetinaNet.from_config(RetinaNetConfig(type="retinanet", depth=50), args.num_classes).to(device)
    tv = retinanet_resnet50_fpn_v2(
        weights=None, weights_backbone=None, num_classes=args.num_classes, min_size=min(h, w), max_size=max(h, w)
    ).to(device)
    body = tv.backbone.body
    for m in (body.conv1, body.bn1, body.layer1):  # same frozen set as detcli's frozen_stages=1
        m.requires_grad_(False)

    gts = random_targets(gen, 2, h, w, 5, args.num_classes, device)
    x2 = torch.randn(2, 3, h, w, generator=gen).to(device)
    metas = [ImageMeta(i, "", (h, w), (h, w), np.eye(3).tolist()) for i in range(2)]
    targets = [Target(b, l) for b, l in gts]
    tv_imgs = [img for img in x2.sigmoid()]  # torchvision wants 0..1 images; it normalises inside
    tv_targets = [{"boxes": b, "labels": l} for b, l in gts]

    def ours_train():
        ours.zero_grad(set_to_none=True)
        sum(ours.loss(x2, targets, metas, 0).values()).backward()

    def tv_train():
        tv.zero_grad(set_to_none=True)
        sum(tv(tv_imgs, tv_targets).values()).backward()

    ours.train(), tv.train()
    t_ours_train, t_tv_train = timed_pair(ours_train, tv_train, args.runs, args.warmup, device)

    ours.eval(), tv.eval()
    x1, tv_x1 = x2[:1], tv_imgs[:1]

    def ours_infer():
        with torch.no_grad():
            ours.predict(x1, metas[:1], ours.postprocess_cfg.replace(score_thr=0.05, iou_thr=0.5, max_det=100))

    def tv_infer():
        with torch.no_grad():
            tv(tv_x1)

    t_ours_inf, t_tv_inf = timed_pair(ours_infer, tv_infer, args.runs, args.warmup, device)

    print(f"device {device}, threads {args.threads}, input {h}x{w}, median of {args.runs} alternating runs (after {args.warmup} warm-up)")
    print(f"{'':26s}{'detcli':>12s}{'torchvision':>14s}{'tv / detcli':>13s}")
    print(f"{'train iter (ms / image)':26s}{t_ours_train / 2:12.1f}{t_tv_train / 2:14.1f}{t_tv_train / t_ours_train:13.2f}")
    print(f"{'inference (ms / image)':26s}{t_ours_inf:12.1f}{t_tv_inf:14.1f}{t_tv_inf / t_ours_inf:13.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
