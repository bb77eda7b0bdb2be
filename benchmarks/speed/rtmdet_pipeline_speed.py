"""Images/s of the RTMDet data pipelines in one process (= one DataLoader worker), and a detector's train step.

Each figure is a full ``CocoDetection.__getitem__``: JPEG decode, the steps, BGR normalisation, refetches of
samples RandomCrop dropped. Caches are warmed first (one pass over ``--warmup`` samples), as in a running
epoch. ``--per-step`` also prints the share of each step. Data: the built-in demo set (288–416 px images) or
``--synthetic`` COCO-sized 640×480 JPEGs.

The train-step figure needs a model: :func:`train_step_seconds` takes any detcli :class:`Detector`
(``--model-preset rtmdet-tiny``; any preset works). It runs with all of the process's threads, as the trainer
does (the pipelines run single-threaded, as a DataLoader worker). With both figures the script prints how many
workers per process keep one process fed: ``batch / (step_s · images_per_s_per_worker)``.

    OMP_NUM_THREADS=1 python -m benchmarks.speed.rtmdet_pipeline_speed [--images 200] [--synthetic] [--per-step]
        [--model-preset NAME --batch 32 --iters 10 --device cuda]
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch


from detcli.config.schema import InputConfig, RTMDetAugmentConfig
from detcli.data.coco import CocoDetection
from detcli.data.transforms.pipeline import Pipeline
from detcli.data.transforms.rtmdet import rtmdet_test_pipeline, rtmdet_train_pipeline
from detcli.models.base import Detector

INPUT = InputConfig(size=(640, 640), keep_ratio=True, channel_order="bgr",
                    mean=(103.53, 116.28, 123.675), std=(57.375, 57.12, 58.395))
TINY_S_RATIO = {"resize": {"ratio_range": [0.5, 2.0]}}
VARIANTS: dict[str, dict[str, Any]] = {
    "stage 1, m/l/x": {"type": "rtmdet"},
    "stage 1, s": {"type": "rtmdet", **TINY_S_RATIO},
    "stage 1, tiny": {"type": "rtmdet", **TINY_S_RATIO, "mosaic": {"max_cached_images": 20, "random_pop": False},
                      "mixup": {"max_cached_images": 10, "random_pop": False, "prob": 0.5}},
    "stage 2, tiny/s": {"type": "rtmdet", **TINY_S_RATIO, "mosaic": None, "mixup": None,
                        "resize": {"scale": [640, 640], "ratio_range": [0.5, 2.0]}},
}


# ----------------------------------------------------------------------------- data
def synthetic_coco(root: Path, n: int, size: tuple[int, int] = (640, 480)) -> tuple[Path, Path]:
    """``n`` smooth-noise JPEGs of ``size`` with 1–10 boxes each (COCO averages ~7), as a COCO file."""
    import cv2

    rng = np.random.default_rng(0)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    w, h = size
    for i in range(1, n + 1):
        img = cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (0, 0), 2)
        cv2.imwrite(str(img_dir / f"{i:06d}.jpg"), img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        images.append({"id": i, "file_name": f"{i:06d}.jpg", "width": w, "height": h})
        for _ in range(int(rng.integers(1, 11))):
            bw, bh = rng.uniform(8, 0.5 * w), rng.uniform(8, 0.5 * h)
            x, y = rng.uniform(0, w - bw), rng.uniform(0, h - bh)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": 1, "bbox": [x, y, bw, bh],
                         "area": bw * bh, "iscrowd": 0})
    ann = root / "ann.json"
    ann.write_text(json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "thing"}]}))
    return ann, img_dir


def demo_coco() -> tuple[Path, Path]:
    from detcli.data.demo import ensure_demo_dataset

    root = ensure_demo_dataset()
    return root / "annotations" / "instances_train.json", root / "train"


# ----------------------------------------------------------------------------- pipeline speed
class _TimedStep:
    """Wraps a step and adds its wall time to a shared dict."""

    def __init__(self, step: Callable, totals: dict[str, float]) -> None:
        self.step, self.totals, self.name = step, totals, type(step).__name__

    def __call__(self, sample, rng):
        t = time.perf_counter()
        out = self.step(sample, rng)
        self.totals[self.name] = self.totals.get(self.name, 0.0) + time.perf_counter() - t
        return out

    def reset(self) -> None:
        reset = getattr(self.step, "reset", None)
        if callable(reset):
            reset()


def pipeline_images_per_second(dataset: CocoDetection, images: int, warmup: int, per_step: bool) -> tuple[float, dict]:
    """Samples/s of ``dataset[i]`` in this process after ``warmup`` samples; step shares when ``per_step``."""
    totals: dict[str, float] = {}
    pipe = dataset.transform
    if per_step and isinstance(pipe, Pipeline):
        pipe.steps = [_TimedStep(s, totals) for s in pipe.steps]
    torch.manual_seed(0)
    order = np.random.default_rng(0).permutation(max(images + warmup, len(dataset))) % len(dataset)
    for i in order[:warmup]:
        dataset[int(i)]
    totals.clear()
    t = time.perf_counter()
    for i in order[warmup:warmup + images]:
        dataset[int(i)]
    elapsed = time.perf_counter() - t
    return images / elapsed, {k: v / elapsed for k, v in totals.items()}


# ----------------------------------------------------------------------------- train step
def train_step_seconds(
    model: Detector,
    batch_size: int = 32,
    size: int = 640,
    device: str | torch.device = "cpu",
    amp: bool = False,
    iters: int = 10,
    warmup: int = 3,
    boxes_per_image: int = 7,
) -> float:
    """Median seconds of one training iteration of ``model`` at ``size``² (forward + loss + backward + AdamW step).

    Inputs are random normalised images with ``boxes_per_image`` random boxes each; the model runs in train
    mode, channels_last, with AMP on CUDA when ``amp`` (as the trainer). Synchronises CUDA around each step.

    Args:
        model: any detcli detector (e.g. ``build_model(load_preset("rtmdet-tiny")[0], 80)``).
        batch_size: images per iteration (one process).
    Returns:
        seconds per iteration (median of ``iters`` after ``warmup``).
    """
    from detcli.structures import ImageMeta, Target

    device = torch.device(device)
    model = model.to(device, memory_format=torch.channels_last).train()
    g = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, 3, size, size, generator=g).to(device).contiguous(memory_format=torch.channels_last)
    targets, metas = [], []
    num_classes = int(getattr(model, "num_classes", 80))
    for i in range(batch_size):
        xy = torch.rand(boxes_per_image, 2, generator=g) * size * 0.8
        wh = 8 + torch.rand(boxes_per_image, 2, generator=g) * size * 0.3
        boxes = torch.cat([xy, (xy + wh).clamp(max=size)], 1)
        labels = torch.randint(0, num_classes, (boxes_per_image,), generator=g)
        targets.append(Target(boxes, labels).to(device))
        metas.append(ImageMeta(i, f"{i}.jpg", (size, size), (size, size), np.eye(3).tolist()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    use_amp = amp and device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    times = []
    for k in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, enabled=use_amp):
            losses = model.loss(images, targets, metas, 0)
        scaler.scale(sum(losses.values())).backward()
        scaler.step(optimizer)
        scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k >= warmup:
            times.append(time.perf_counter() - t)
    return float(np.median(times))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=200, help="timed samples per pipeline")
    ap.add_argument("--warmup", type=int, default=50, help="samples before timing (fills the caches)")
    ap.add_argument("--synthetic", action="store_true", help="640×480 generated JPEGs instead of the demo set")
    ap.add_argument("--per-step", action="store_true", help="share of each step")
    ap.add_argument("--model-preset", default=None, help="also time this preset's model at 640 (e.g. rtmdet-tiny)")
    ap.add_argument("--batch", type=int, default=32, help="train-step batch (per process)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--amp", action="store_true")
    ap.add_argument("--iters", type=int, default=10, help="timed train steps (after 3 warm-up steps)")
    args = ap.parse_args()
    train_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(0)  # as a DataLoader worker (detcli.data.loader.seed_worker)

    with tempfile.TemporaryDirectory() as tmp:
        ann, img_dir = synthetic_coco(Path(tmp), 120) if args.synthetic else demo_coco()
        data = "synthetic 640×480 JPEGs" if args.synthetic else "demo set (288–416 px)"
        print(f"RTMDet pipelines, one process (one DataLoader worker), {data}; {args.images} samples each "
              f"after {args.warmup} warm-up; OMP threads {torch.get_num_threads()}, cv2 threads {cv2.getNumThreads()}")
        rates = {}
        for name, cfg in VARIANTS.items():
            pipe = rtmdet_train_pipeline(RTMDetAugmentConfig.model_validate(cfg), INPUT)
            ds = CocoDetection(ann, img_dir, pipe, filter_empty=True, min_size=32)
            rate, shares = pipeline_images_per_second(ds, args.images, args.warmup, args.per_step)
            rates[name] = rate
            print(f"  {name:<16} {rate:7.1f} images/s  ({1000 / rate:6.1f} ms/image)")
            if shares:
                print("      " + ", ".join(f"{k} {100 * v:.0f}%" for k, v in shares.items()))
        test = CocoDetection(ann, img_dir, rtmdet_test_pipeline(RTMDetAugmentConfig(type="rtmdet"), (640, 640), INPUT),
                             filter_empty=False, unreadable="raise")
        rate, _ = pipeline_images_per_second(test, args.images, 5, False)
        print(f"  {'test':<16} {rate:7.1f} images/s  ({1000 / rate:6.1f} ms/image)")

    if args.model_preset is None:
        print("train step: pass --model-preset NAME (e.g. rtmdet-tiny) to time a model, or call "
              "train_step_seconds(model, batch_size, 640, device) with any detcli Detector")
        return 0
    from detcli.config.loader import load_preset
    from detcli.models import build_model

    preset, _ = load_preset(args.model_preset)
    model = build_model(preset, 80, pretrained=False)
    torch.set_num_threads(train_threads)
    step = train_step_seconds(model, args.batch, 640, args.device, args.amp, iters=args.iters)
    where = args.device if torch.device(args.device).type != "cpu" else f"cpu, {train_threads} threads"
    print(f"train step: {preset.name} at 640, batch {args.batch} on {where}{' AMP' if args.amp else ''}: "
          f"{step * 1000:.0f} ms/iteration ({args.batch / step:.1f} images/s)")
    for name, rate in rates.items():
        print(f"  workers per process to keep up with '{name}': {args.batch / (step * rate):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
