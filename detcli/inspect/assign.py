"""Run a detector's own label assignment over dataset images, through the detector contract only.

``priors`` → (``assignment_outputs`` when the assigner looks at predictions) → ``assign`` → ``prior_fit``: the
code training runs (``Detector.loss`` calls the same ``assign``), never a copy, for every family alike.
"""
from __future__ import annotations

import copy
import functools
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from detcli.assigners.assignment import Assignment
from detcli.assigners.prior_fit import PriorFit
from detcli.data.collate import collate
from detcli.errors import DatasetError
from detcli.inspect.stats import AssignmentStats
from detcli.models.base import Detector
from detcli.structures import Priors
from detcli.structures import Batch


class InspectedImages(Dataset):
    """Samples ``indices`` of a :class:`~detcli.data.coco.CocoDetection` with the pipeline it was built with.

    An unreadable image gives ``{"unreadable": path}`` instead of a sample (counted, never substituted). Image
    ``i`` gets the generator ``default_rng([seed, i])``, so with training augmentation the same image looks the
    same in the statistics pass and in its picture. ``pixels=False`` (assigners that look at no predictions):
    the image tensor is replaced by a zero-stride view of its shape, so no pixels travel between processes or
    get padded and stacked.
    """

    def __init__(self, dataset, indices: Sequence[int], seed: int = 0, pixels: bool = True) -> None:
        self.dataset, self.indices, self.seed, self.pixels = dataset, list(indices), seed, pixels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        idx = self.indices[k]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the count and the names are reported once, at the end
                sample = self.dataset.get(idx, np.random.default_rng([self.seed, idx]))
        except DatasetError:
            return {"unreadable": self.dataset.image_info(idx)["file_name"]}
        if not self.pixels:
            sample["img"] = torch.zeros(()).expand(sample["img"].shape)
        return sample


@dataclass
class Collated:
    batch: Batch | None
    unreadable: list[str]


def collate_readable(samples: list[dict], size_divisor: int) -> Collated:
    """:func:`~detcli.data.collate.collate` of the readable samples; the others are named."""
    readable = [s for s in samples if "unreadable" not in s]
    unreadable = [s["unreadable"] for s in samples if "unreadable" in s]
    if not readable:
        return Collated(None, unreadable)
    if readable[0]["img"].stride() == (0, 0, 0):  # no pixels (InspectedImages(pixels=False)): shapes only
        h = max(int(s["img"].shape[-2]) for s in readable)
        w = max(int(s["img"].shape[-1]) for s in readable)
        shapes = [dict(s, img=torch.zeros(()).expand(3, 1, 1)) for s in readable]
        batch = collate(shapes, 1)
        d = max(1, size_divisor)
        batch.images = torch.zeros(()).expand(len(readable), 3, -(-h // d) * d, -(-w // d) * d)
        return Collated(batch, unreadable)
    return Collated(collate(readable, size_divisor), unreadable)


class _AssignmentGraph(nn.Module):
    """``forward`` = the detector's ``assignment_outputs`` (so BatchNorm folding can trace it)."""

    def __init__(self, model: Detector) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor):
        return self.model.assignment_outputs(images)


def assignment_runner(model: Detector) -> Detector:
    """What computes the assigner's predictions: ``model`` itself when the assigner looks at none, else a copy
    in eval mode with every foldable BatchNorm folded into its conv (exact up to float rounding, as
    :func:`detcli.models.fuse.fuse_for_inference`, but over the graph of ``assignment_outputs``, which may
    include training-only modules such as NanoDet-Plus' AGM)."""
    from detcli.models.fuse import fold_batchnorms_

    if model.assignment_predictions is None:
        return model
    param = next(model.parameters())
    runner = copy.deepcopy(model).eval()
    side = max(32, max(model.strides))
    fold_batchnorms_(_AssignmentGraph(runner), torch.zeros(1, 3, side, side, device=param.device, dtype=param.dtype))
    for p in runner.parameters():
        p.requires_grad_(False)
    return runner


@torch.no_grad()
def assign_batch(model: Detector, runner: Detector, batch: Batch) -> tuple[Priors, Assignment, list[PriorFit]]:
    """Priors of the batch's input size, the family's assignment of every image, and each image's prior fit."""
    images = batch.images
    priors = model.priors(tuple(images.shape[-2:]), images.device)
    outputs = runner.assignment_outputs(images)
    assignment = model.assign(outputs, priors, batch.targets, batch.metas)
    fits = [model.prior_fit(priors, t.boxes, m) for t, m in zip(batch.targets, batch.metas)]
    return priors, assignment, fits


def collect_statistics(
    model: Detector, runner: Detector, images: InspectedImages, stats: AssignmentStats, batch_size: int,
    workers: int, size_divisor: int, device: torch.device, progress=None,
) -> tuple[float, list[str]]:
    """The statistics pass: every image of ``images`` in batches, assigned and added to ``stats``, nothing drawn.

    Returns:
        The seconds it took and the unreadable files (skipped).
    """
    loader = DataLoader(images, batch_size=batch_size, shuffle=False, num_workers=workers,
                        collate_fn=functools.partial(collate_readable, size_divisor=size_divisor),
                        persistent_workers=False, worker_init_fn=_single_threaded_opencv)
    batches = progress(loader) if progress is not None else loader
    unreadable: list[str] = []
    start = time.perf_counter()
    for item in batches:
        unreadable += item.unreadable
        if item.batch is None:
            continue
        batch = item.batch.to(device)
        priors, assignment, fits = assign_batch(model, runner, batch)
        stats.add(priors, assignment, batch.targets, batch.metas, fits)
    stats.unreadable += len(unreadable)
    return time.perf_counter() - start, unreadable


def _single_threaded_opencv(worker_id: int) -> None:
    import cv2

    cv2.setNumThreads(0)
