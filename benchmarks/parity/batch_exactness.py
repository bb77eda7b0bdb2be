"""Does an image's result depend on how many equal-shape images share its forward pass? (CPU, golden weights)

``predict`` and ``eval`` stack only images whose padded shape is equal (``detcli.data.collate.split_by_shape``),
so an image's input tensor is the one it has alone; what is left to measure is whether the kernels compute
the same numbers for a batch of B such images as for each one alone. For each preset the golden weights
(``tests/golden/<preset>.json``) are written as an official checkpoint and loaded through ``load_for_inference``;
8 seeded random images of one shape run once as a batch of 8 and once one by one, on the exact path (the model
as loaded, ``--exact``) and the optimised one (``fuse_for_inference``, the default). Printed per path: whether
the raw outputs are bitwise equal, the worst ``|Δ|`` and ``|Δ| / max(1, |value|)``, and how many of the final
detections (the fixture's official test settings) are bitwise identical. No timing.

Usage::

    python -m benchmarks.parity.batch_exactness                               # the default presets, 1 thread
    python -m benchmarks.parity.batch_exactness --preset defcn-r50-fpn --size 800 1088 --threads 2
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from tests.golden.checkpoints import write_official_checkpoint  # noqa: E402
from tests.golden.weights import fixture_state_dict  # noqa: E402

from detcli.inference.loading import load_for_inference  # noqa: E402
from detcli.models.fuse import fuse_for_inference  # noqa: E402
from detcli.structures import Detections, ImageMeta  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
SIZES = {  # (H, W) of one padded test input of the preset's recipe (long side shortened for the R-50 ones)
    "nanodet-plus-m": (320, 320), "rtmdet-tiny": (640, 640), "rtmdet-s": (640, 640),
    "retinanet-r18-fpn": (800, 1088), "retinanet-r50-fpn": (512, 704), "defcn-r50-fpn": (512, 704),
}


def run(model, images: torch.Tensor, cfg: dict) -> tuple[list[torch.Tensor], list[Detections]]:
    """Raw head outputs (B, N, ·) and detections of ``images`` (B, 3, H, W) in one forward pass each."""
    h, w = images.shape[-2:]
    metas = [ImageMeta(i, f"{i}.jpg", (h, w), (h, w), np.eye(3).tolist()) for i in range(len(images))]
    with torch.inference_mode():
        raw = [t for t in model(images) if t is not None]
        dets = model.predict(images, metas, model.postprocess_cfg.replace(
            score_thr=cfg.get("score_thr"), iou_thr=(cfg.get("nms") or {}).get("iou_threshold"),
            max_det=cfg.get("max_per_img")))
    return raw, dets


def identical(a: Detections, b: Detections) -> int:
    """How many detections of ``a`` have a bitwise-equal twin (label, box, score) in ``b``."""
    keys = {(int(c), *s.tolist(), float(x)) for c, s, x in zip(b.labels, b.boxes, b.scores)}
    return sum((int(c), *s.tolist(), float(x)) in keys for c, s, x in zip(a.labels, a.boxes, a.scores))


def compare(preset: str, size: tuple[int, int], batch: int, directory: Path) -> None:
    doc = json.loads((GOLDEN / f"{preset}.json").read_text())
    path, _ = write_official_checkpoint(doc, fixture_state_dict(doc), directory)
    model = load_for_inference(path, preset, [], torch.device("cpu")).model.eval()
    path.unlink()
    images = torch.randn(batch, 3, *size, generator=torch.Generator().manual_seed(0))
    cfg = doc.get("test_cfg") or {}
    for name, variant in (("exact", model), ("optimised", fuse_for_inference(model))):
        together, dets = run(variant, images, cfg)
        alone = [run(variant, images[i:i + 1], cfg) for i in range(batch)]
        diffs = [(t[i] - a[0][k][0]) for k, t in enumerate(together) for i, a in enumerate(alone)]
        refs = [a[0][k][0] for k in range(len(together)) for a in alone]
        equal = all(bool((d == 0).all()) for d in diffs)
        worst = max(float(d.abs().max()) for d in diffs)
        rel = max(float((d.abs() / r.abs().clamp(min=1)).max()) for d, r in zip(diffs, refs))
        n = sum(len(a[1][0].scores) for a in alone)
        same = sum(identical(dets[i], a[1][0]) for i, a in enumerate(alone))
        print(f"{preset:20s} {size[0]}x{size[1]} {name:9s} batch {batch} vs 1: raw bitwise {'yes' if equal else 'no '}"
              f"  max |d| {worst:.2e}  max rel {rel:.2e}  detections identical {same}/{n}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="golden preset (repeatable; default: those of SIZES)")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="input size (default: SIZES)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.preset or list(SIZES):
            compare(preset, tuple(args.size) if args.size else SIZES[preset], args.batch, Path(tmp))


if __name__ == "__main__":
    main()
