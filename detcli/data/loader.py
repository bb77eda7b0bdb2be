"""DataLoader construction with reproducible shuffling and worker seeds."""
from __future__ import annotations

import random
from typing import Callable, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from detcli.cpus import available_cpus
from detcli.data.samplers import GroupedBatchSampler, GroupingRule, dataset_orientations


def seed_worker(worker_id: int) -> None:
    """``worker_init_fn``: seed Python/NumPy global RNGs from the worker's torch seed; single-threaded OpenCV.

    The torch seed of worker ``k`` is ``base_seed + k``, with ``base_seed`` drawn from the loader's
    generator, so it is fixed by the loader seed. Samples take their own generator from it (see CocoDetection).
    """
    import cv2

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    cv2.setNumThreads(0)  # workers are the parallelism; OpenCV threads inside them only oversubscribe


def cap_workers(requested: int, processes: int = 1, cpus: int | None = None) -> int:
    """DataLoader workers per process: ``requested``, at most the CPUs shared by this machine's ``processes``.

    As Ultralytics (``min(os.cpu_count() // devices, workers)``): more workers than CPUs only adds memory and
    context switches, and PyTorch warns about it.
    """
    cpus = available_cpus() if cpus is None else cpus
    return max(0, min(int(requested), cpus // max(1, processes)))


def build_dataloader(
    dataset: Dataset,
    batch_size: int,
    workers: int,
    shuffle: bool,
    drop_last: bool,
    seed: int,
    distributed: bool,
    collate_fn: Callable,
    aspect_ratio_grouping: GroupingRule | Literal["none"] = "none",
) -> DataLoader:
    """A DataLoader; ``batch_size`` is per process.

    With ``distributed`` a :class:`DistributedSampler` (seeded, same permutation on every rank) splits the
    data; call ``loader.sampler.set_epoch(epoch)`` each epoch to reshuffle. Otherwise shuffling uses a
    generator seeded with ``seed``. Workers are started afresh each epoch (their seeds come from ``generator``, so a resumed run
    repeats them) and memory is pinned on CUDA.

    ``aspect_ratio_grouping`` (``data.aspect_ratio_grouping``, with ``shuffle``): batches of one orientation
    by that rule, from a :class:`~detcli.data.samplers.GroupedBatchSampler` (``loader.batch_sampler``, seeded
    with ``seed + epoch``: call its ``set_epoch`` each epoch; it splits the batches over the ranks itself).
    """
    generator = torch.Generator()
    sampler = None
    if shuffle and aspect_ratio_grouping != "none":
        from detcli.distributed import rank, world_size

        generator.manual_seed(seed + 1000003 * rank())  # worker seeds only: the batches come from seed + epoch
        processes = world_size() if distributed else 1
        batches = GroupedBatchSampler(dataset_orientations(dataset, aspect_ratio_grouping), batch_size, seed,
                                      drop_last, processes, rank() if distributed else 0)
        return DataLoader(dataset, batch_sampler=batches, **_loader_options(workers, collate_fn, generator))
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)
        rank = sampler.rank
        generator.manual_seed(seed + 1000003 * rank)  # distinct worker seeds per rank
        shuffle = False
    else:
        generator.manual_seed(seed)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, sampler=sampler, drop_last=drop_last,
                      **_loader_options(workers, collate_fn, generator))


def _loader_options(workers: int, collate_fn: Callable, generator: torch.Generator) -> dict:
    """What every loader shares: workers seeded from ``generator`` and started afresh each epoch, pinned memory."""
    return dict(
        num_workers=workers,
        collate_fn=collate_fn,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=seed_worker,
        generator=generator,
        persistent_workers=False,  # fresh, re-seeded workers each epoch: exact --resume
    )
