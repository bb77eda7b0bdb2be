"""Small helpers that behave the same with and without torch.distributed."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def is_main() -> bool:
    return rank() == 0


def reduce_mean(x: Tensor) -> Tensor:
    """Mean of ``x`` over all processes (identity when not distributed). Used for loss normalisers."""
    if not is_dist():
        return x
    x = x.clone()
    dist.all_reduce(x.div_(world_size()), op=dist.ReduceOp.SUM)
    return x


def barrier() -> None:
    if is_dist():
        dist.barrier()


def broadcast_object(obj):
    """Broadcast a picklable object from rank 0."""
    if not is_dist():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


__all__ = ["is_dist", "world_size", "rank", "is_main", "reduce_mean", "barrier", "broadcast_object", "torch"]
