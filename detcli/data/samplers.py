"""Training batches of one orientation (aspect-ratio grouping), as the RetinaNet and DeFCN recipes batch.

A batch is padded to its largest image (:func:`~detcli.data.collate.collate`); a portrait image next to a
landscape one pads both to a square around the two. MMDetection's COCO recipes (``AspectRatioBatchSampler`` in
``configs/_base_/datasets/coco_detection.py``) and cvpods (``DATALOADER.SAMPLER_TRAIN = DistributedGroupSampler``,
its default) therefore batch landscape and portrait images apart. The two split square images differently:

- ``"w>=h"``: MMDetection, ``width < height`` is portrait, everything else landscape;
- ``"w>h"``: cvpods (``BaseDataset._set_group_flag``), ``width / height > 1`` is landscape, everything else portrait.

Orientation comes from the annotation file's ``width``/``height`` (as both do), before any augmentation.
RTMDet and NanoDet-Plus train on one fixed input size (mosaic/crop to 640², warp to 320²): nothing to group.
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Literal

import numpy as np
import torch
from torch.utils.data import Sampler

GroupingRule = Literal["w>=h", "w>h"]


def orientation_groups(sizes: Sequence[tuple[int, int]], rule: GroupingRule) -> np.ndarray:
    """(N,) int64 group per image, 1 = landscape, 0 = portrait, by ``rule`` (see the module docstring).

    Args:
        sizes: (width, height) of each image.
    """
    wh = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    landscape = wh[:, 0] >= wh[:, 1] if rule == "w>=h" else wh[:, 0] > wh[:, 1]
    return landscape.astype(np.int64)


def dataset_orientations(dataset, rule: GroupingRule) -> np.ndarray:
    """:func:`orientation_groups` of a :class:`~detcli.data.coco.CocoDetection` (its ``image_info`` sizes)."""
    infos = (dataset.image_info(i) for i in range(len(dataset)))
    return orientation_groups([(info["width"], info["height"]) for info in infos], rule)


class GroupedBatchSampler(Sampler[list[int]]):
    """Shuffled batches whose images all belong to one group; the same batches on every process, split by rank.

    Each epoch (:meth:`set_epoch`, called by the trainer before the epoch starts) a ``torch.Generator`` seeded
    with ``seed + epoch`` (as ``DistributedSampler``: the same order on every process, and a resumed run repeats
    it) permutes the indices of every group, cuts them into batches of ``batch_size``, and permutes the
    batches of all groups together. A group's last, shorter batch is kept (every image once per epoch);
    with ``drop_last`` it is left out, unless it is the group's only batch (a group smaller than one batch is
    never lost). Process ``rank`` of ``num_replicas`` takes every ``num_replicas``-th batch from ``rank`` on; the
    list is first filled up to a multiple of ``num_replicas`` with its first batches, so that every process
    runs the same number of steps (``len``).

    Args:
        groups: (N,) group id of each dataset index (e.g. :func:`dataset_orientations`).
        batch_size: images per batch and process.
    """

    def __init__(self, groups: Sequence[int] | np.ndarray, batch_size: int, seed: int = 0, drop_last: bool = False,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} is not in [0, {num_replicas})")
        groups = np.asarray(groups, dtype=np.int64).reshape(-1)
        self.members = [np.flatnonzero(groups == g) for g in np.unique(groups)]  # indices per group, ascending
        self.batch_size, self.seed, self.drop_last = int(batch_size), int(seed), bool(drop_last)
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _batches_of(self, n: int) -> int:
        full, rest = divmod(n, self.batch_size)
        return full + int(rest > 0 and (not self.drop_last or full == 0))

    def __len__(self) -> int:
        total = sum(self._batches_of(len(m)) for m in self.members)
        return math.ceil(total / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        batches: list[list[int]] = []
        for members in self.members:
            order = members[torch.randperm(len(members), generator=g).numpy()].tolist()
            cut = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
            batches += cut[: self._batches_of(len(members))]
        batches = [batches[i] for i in torch.randperm(len(batches), generator=g).tolist()]
        padded = len(self) * self.num_replicas
        batches += [batches[i % len(batches)] for i in range(padded - len(batches))] if batches else []
        return iter(batches[self.rank::self.num_replicas])
