"""How much of a training batch is padding, with and without aspect-ratio grouping (``data.aspect_ratio_grouping``).

For each preset the demo's training split (generated into a temporary folder) goes through the preset's
training transform (its resize and random short side; zero images of each annotated size, so only shapes are
computed), and epochs of batches are formed as ``detcli train`` forms them at the preset's demo batch: shuffled
plain batches (``drop_last``), and :class:`detcli.data.samplers.GroupedBatchSampler` batches. A batch is padded
to its largest image rounded up to the size divisor (:func:`detcli.data.collate.collate`); printed: the share
of the batch tensor that is padding, and the mean padded pixels per batch. Also on a COCO-like mix (sizes of
COCO val2017's two commonest shapes, 640×480 and 480×640, 3:1) for the scale of the effect on real data.

Usage::

    python -m benchmarks.speed.aspect_grouping_padding [--epochs 3]
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from detcli.config.loader import load_preset
from detcli.data.build import build_transform
from detcli.data.coco import CocoDetection
from detcli.data.demo import ensure_demo_dataset
from detcli.data.samplers import GroupedBatchSampler, orientation_groups
from detcli.geometry.anchors import padded_shape


def padding(batches: list[list[int]], shapes: list[tuple[int, int]], divisor: int) -> tuple[float, float]:
    """(padding share of all batch tensors, mean padded pixels per batch) of ``batches`` of image indices."""
    pad = total = 0
    for b in batches:
        hs, ws = zip(*(padded_shape(shapes[i], divisor) for i in b))
        area = len(b) * max(hs) * max(ws)
        pad += area - sum(shapes[i][0] * shapes[i][1] for i in b)
        total += area
    return pad / total, pad / len(batches)


def plain_batches(n: int, batch: int, seed: int, epoch: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    return [order[i:i + batch] for i in range(0, n - batch + 1, batch)]  # drop_last, as detcli train


def compare(name: str, sizes: list[tuple[int, int]], epochs: int, label: str) -> None:
    preset = load_preset(name)[0]
    transform = build_transform(preset, train=True)
    rng = np.random.default_rng(0)
    batch, divisor = preset.train_with(demo=True).batch, preset.input.size_divisor
    groups = orientation_groups(sizes, preset.data.aspect_ratio_grouping)
    sampler = GroupedBatchSampler(groups, batch, seed=0, drop_last=True)
    rows = {"plain": [], "grouped": []}
    for epoch in range(epochs):  # the random short side changes every epoch (DeFCN)
        shapes = []
        for w, h in sizes:
            out = transform(np.zeros((h, w, 3), np.uint8), np.zeros((0, 4), np.float32), np.zeros(0, np.int64), rng)
            shapes.append(tuple(int(s) for s in out["img"].shape[-2:]))
        sampler.set_epoch(epoch)
        rows["plain"].append(padding(plain_batches(len(sizes), batch, 0, epoch), shapes, divisor))
        rows["grouped"].append(padding(list(sampler), shapes, divisor))
    for kind, values in rows.items():
        share, pixels = np.mean(values, axis=0)
        print(f"{name:18s} {label:10s} batch {batch:2d} {kind:8s} padding {100 * share:5.1f} % of the batch tensor, "
              f"{pixels / 1e6:6.3f} Mpx per batch", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = ensure_demo_dataset(Path(tmp) / "demo")
        ds = CocoDetection(root / "annotations" / "instances_train.json", root / "train", None, filter_empty=False)
        demo = [(ds.image_info(i)["width"], ds.image_info(i)["height"]) for i in range(len(ds))]
    coco_like = [(640, 480)] * 384 + [(480, 640)] * 128
    for name in ("retinanet-r50-fpn", "defcn-r50-fpn"):
        compare(name, demo, args.epochs, "demo")
        compare(name, coco_like, args.epochs, "coco-like")


if __name__ == "__main__":
    main()
