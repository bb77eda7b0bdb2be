"""A training transform that changes at given epochs (mmdet's ``PipelineSwitchHook``), for any family.

The dataset forwards ``set_epoch`` (called by the trainer at the start of every epoch, on every process,
resumed runs included) to its transform; :class:`EpochStages` then serves the stage that epoch belongs to.
With DataLoader workers started afresh each epoch (``detcli.data.loader``), the workers pick up the stage
chosen in the main process before they start.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

Transform = Callable[..., "dict[str, Any] | None"]


class EpochStages:
    """Stage k's transform serves the epochs from ``starts[k]`` until the next stage starts.

    Args:
        stages: ``(first 0-indexed epoch, transform)`` pairs; the first must start at epoch 0. Two stages may
            share a start (the later one wins), e.g. stage 2 from epoch 0 when the run is shorter than it.
    """

    def __init__(self, stages: Sequence[tuple[int, Transform]]) -> None:
        if not stages or stages[0][0] != 0:
            raise ValueError("the first stage must start at epoch 0")
        starts = [int(s) for s, _ in stages]
        if starts != sorted(starts):
            raise ValueError(f"stage starts must be in order, got {starts}")
        self.starts = starts
        self.transforms = [t for _, t in stages]
        self.active = 0

    def stage_at(self, epoch: int) -> int:
        """Index of the stage serving 0-indexed ``epoch``."""
        return max(k for k, s in enumerate(self.starts) if s <= epoch)

    def set_epoch(self, epoch: int) -> bool:
        """Serve ``epoch``'s stage (its transform starts the epoch too); True when the stage changed."""
        stage = self.stage_at(epoch)
        changed = stage != self.active
        self.active = stage
        start = getattr(self.transforms[stage], "set_epoch", None)
        if callable(start):
            start(epoch)
        return changed

    def __call__(
        self, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, rng: np.random.Generator | None = None
    ) -> dict[str, Any] | None:
        return self.transforms[self.active](img, boxes, labels, rng)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  from epoch {s}: {t!r}" for s, t in zip(self.starts, self.transforms))
        return f"EpochStages(\n{inner})"
