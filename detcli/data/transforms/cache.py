"""The per-process cache of recent samples through which cached multi-image steps see other images.

As ``results_cache`` in mmdet's ``CachedMosaic`` / ``CachedMixUp`` (mmdet 3.3.0
``datasets/transforms/transforms.py``): every incoming sample is appended; once the cache holds more than
``max_size`` entries, one is removed, a random one (``random_pop``) or the oldest (FIFO). mmdet draws both the
entry to remove and the partners with ``random.randint(0, len(cache) - 1)`` where ``random`` is
``numpy.random`` (``from numpy import random``), whose upper bound is exclusive: the newest entry, i.e. the
sample being transformed, is never removed and never its own partner. Drawn here the same way.
"""
from __future__ import annotations

import numpy as np

from detcli.data.transforms.pipeline import Sample


class ResultsCache:
    """Bounded list of :class:`Sample` (held by reference: steps never write into a sample's arrays).

    Args:
        max_size: most entries kept.
        random_pop: when full, drop a random entry (True) or the oldest (False).
    """

    def __init__(self, max_size: int, random_pop: bool) -> None:
        if max_size < 1:
            raise ValueError(f"max_size must be at least 1, got {max_size}")
        self.max_size = int(max_size)
        self.random_pop = bool(random_pop)
        self.entries: list[Sample] = []

    def __len__(self) -> int:
        return len(self.entries)

    def push(self, sample: Sample, rng: np.random.Generator) -> None:
        """Append ``sample``; over capacity, drop one entry other than ``sample`` (uniformly, one draw from
        ``rng``, when ``random_pop``; else the oldest)."""
        self.entries.append(sample)
        if len(self.entries) > self.max_size:
            index = int(rng.integers(0, len(self.entries) - 1)) if self.random_pop else 0
            self.entries.pop(index)

    def draw(self, rng: np.random.Generator) -> Sample:
        """A uniformly drawn entry other than the newest (one draw; needs at least 2 entries)."""
        if len(self.entries) < 2:
            raise ValueError("drawing a partner needs at least 2 cached samples")
        return self.entries[int(rng.integers(0, len(self.entries) - 1))]

    def clear(self) -> None:
        self.entries.clear()
