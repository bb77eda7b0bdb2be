"""Speed of ``detcli inspect-anchors``' statistics pass over a 1000-image dataset (CPU), with references.

    python -m benchmarks.speed.inspect_speed [--images 1000] [--presets retinanet-r50-fpn,nanodet-plus-m] [--threads 2]

For each preset: the whole statistics pass (data pipeline in 2 workers, assignment, prior fit, statistics; nothing
drawn), as the command runs it, in seconds per 1000 images. Then, on 64 of the same images, the assignment step
alone against a reference measured in the same run:

- anchor presets: MaxIoU on the anchors that may overlap a GT (what ``RetinaNet.assign`` runs) vs MaxIoU on every
  valid anchor (the plain way, the same result);
- presets whose assigner looks at predictions: the BatchNorm-folded copy that inspection runs vs the model as
  loaded (the network forward dominates there).

The dataset is the demo generator's (``detcli.data.demo``) with ``--images`` train images, cached under
``~/.cache/detcli/bench-inspect-<n>``.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from detcli.config.loader import load_preset
from detcli.data.collate import collate
from detcli.data.dataset_config import load_dataset_config
from detcli.data.demo import generate_demo_dataset
from detcli.data.loader import cap_workers
from detcli.geometry.anchors import padded_shape
from detcli.inspect.assign import InspectedImages, assign_batch, assignment_runner, collect_statistics
from detcli.inspect.stats import AssignmentStats
from detcli.models import build_model


def dataset_root(n: int) -> Path:
    root = Path.home() / ".cache" / "detcli" / f"bench-inspect-{n}"
    if not (root / "demo.yaml").is_file():
        generate_demo_dataset(root, num_train=n, num_val=8)
    return root


def dense_retinanet_assign(model, priors, batch):
    """MaxIoU on every valid anchor of each image (the reference)."""
    valid = model.anchor_generator.valid_flags(
        priors.level_sizes, [padded_shape(m.img_shape, model.size_divisor) for m in batch.metas])
    for i, t in enumerate(batch.targets):
        model.assigner.assign(priors.boxes[valid[i]], t.boxes, t.labels)


def timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--presets", default="retinanet-r50-fpn,nanodet-plus-m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    root = dataset_root(args.images)
    split = load_dataset_config(root / "demo.yaml").train
    print(f"{args.images} train images in {root}; torch threads {args.threads}; "
          f"{cap_workers(2)} data workers; batch {args.batch}")
    for name in args.presets.split(","):
        from detcli.data.build import build_transform
        from detcli.data.coco import CocoDetection

        preset, _ = load_preset(name, [])
        dataset = CocoDetection(split.ann_file, split.img_dir, build_transform(preset, train=False),
                                filter_empty=False, unreadable="raise")
        torch.manual_seed(0)
        model = build_model(preset, dataset.num_classes, pretrained=False).eval()
        runner = assignment_runner(model)
        uses_predictions = model.assignment_predictions is not None
        stats = AssignmentStats(model.strides, dataset.class_names, anchor_iou=not uses_predictions,
                                size_divisor=preset.input.size_divisor)
        seconds, _ = collect_statistics(
            model, runner, InspectedImages(dataset, range(len(dataset)), pixels=uses_predictions), stats,
            args.batch, cap_workers(2), preset.input.size_divisor, torch.device("cpu"))
        print(f"{name}: statistics pass {seconds:.1f} s for {len(dataset)} images "
              f"({seconds / len(dataset) * 1000:.1f} ms/image, {stats.images} assigned)")

        samples = [InspectedImages(dataset, [i])[0] for i in range(64)]
        batches = [collate(samples[i:i + args.batch], preset.input.size_divisor)
                   for i in range(0, 64, args.batch)]
        with torch.no_grad():
            if uses_predictions:
                ref_name = "the model as loaded (no BN folding)"
                ours = timed(lambda: [assign_batch(model, runner, b) for b in batches])
                ref = timed(lambda: [assign_batch(model, model, b) for b in batches])
            else:
                ref_name = "MaxIoU on every valid anchor"
                priors = [model.priors(tuple(b.images.shape[-2:])) for b in batches]
                ours = timed(lambda: [model.assign(None, p, b.targets, b.metas) for p, b in zip(priors, batches)])
                ref = timed(lambda: [dense_retinanet_assign(model, p, b) for p, b in zip(priors, batches)])
        print(f"  assignment of 64 images: {ours:.2f} s vs {ref_name} {ref:.2f} s: ratio {ours / ref:.2f}")


if __name__ == "__main__":
    main()
