"""The training data as the trainer sees it: its classes, the epoch its samplers and pipeline are at, and the
random generators its loader draws from (saved in checkpoints, so a resumed run repeats the same batches), and
why a batch is too small for BatchNorm."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from detcli.errors import DetcliError


def dataset_classes(train_dataset: Any, val_dataset: Any | None) -> tuple[list[str], list[int]]:
    """Class names and category ids of the run, from the training dataset (the validation one must agree)."""
    names = getattr(train_dataset, "class_names", None)
    cat_ids = getattr(train_dataset, "cat_ids", None)
    if val_dataset is not None:
        val_names = getattr(val_dataset, "class_names", None)
        if names is not None and val_names is not None and list(names) != list(val_names):
            raise DetcliError(f"training classes {list(names)} differ from validation classes {list(val_names)}")
        names = names if names is not None else val_names
        cat_ids = cat_ids if cat_ids is not None else getattr(val_dataset, "cat_ids", None)
    if names is None:
        raise DetcliError("the training dataset has no class_names")
    cat_ids = list(cat_ids) if cat_ids is not None else list(range(1, len(names) + 1))
    return list(names), [int(c) for c in cat_ids]


def set_epoch(loader: DataLoader, epoch: int) -> bool:
    """``set_epoch`` on the loader's sampler(s) (DistributedSampler reshuffles by epoch) and on its dataset
    (the transform's stage and caches: ``augment.switch``), where they have one; True when the dataset's
    pipeline stage changed. Called before the epoch's workers start, so they copy the new stage."""
    samplers = [getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None),
                getattr(getattr(loader, "batch_sampler", None), "sampler", None)]
    seen: set[int] = set()
    for s in samplers:
        if s is not None and id(s) not in seen and hasattr(s, "set_epoch"):
            seen.add(id(s))
            s.set_epoch(epoch)
    dataset_epoch = getattr(loader.dataset, "set_epoch", None)
    return bool(dataset_epoch(epoch)) if callable(dataset_epoch) else False


def loader_generators(loader: DataLoader) -> list[torch.Generator]:
    """Distinct torch generators a DataLoader draws from (its own, its sampler's), in a fixed order."""
    candidates = [
        getattr(loader, "generator", None),
        getattr(getattr(loader, "sampler", None), "generator", None),
        getattr(getattr(getattr(loader, "batch_sampler", None), "sampler", None), "generator", None),
    ]
    out: list[torch.Generator] = []
    for g in candidates:
        if isinstance(g, torch.Generator) and all(g is not o for o in out):
            out.append(g)
    return out



def batch_too_small(images: torch.Tensor, split_size: int, model: torch.nn.Module) -> DetcliError:
    """Why BatchNorm saw one value per channel: a batch of one image whose coarsest feature map is 1×1."""
    n, (h, w) = images.shape[0], images.shape[-2:]
    stride = max(getattr(model, "strides", None) or (0,))
    coarsest = f"its stride-{stride} feature map is {-(-w // stride)}×{-(-h // stride)}, " if stride else ""
    split = f" (the training split has {split_size} image)" if split_size < 2 else ""
    return DetcliError(
        f"BatchNorm cannot train on a batch of {n} image of {w}×{h}: {coarsest}one value per channel{split}. "
        "Use --batch 2 or more per process with at least 2 training images, or a larger --imgsz"
    )


__all__ = ["dataset_classes", "set_epoch", "loader_generators", "batch_too_small"]
