"""Stack samples into a :class:`~detcli.structures.Batch`, padding bottom/right (nanodet ``stack_batch_img``), and
split a batch back into groups of one padded shape (inference: an image's result never depends on its batch-mates).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from detcli.geometry.anchors import padded_shape
from detcli.structures import Batch, Target


def collate(samples: Sequence[dict[str, Any]], size_divisor: int = 32, pad_value: float = 0.0) -> Batch:
    """Pad every image to the largest (H, W) of the batch rounded up to ``size_divisor``, then stack.

    Padding is applied after normalisation, so 0 is the mean colour, as in nanodet/data/batch_process.py.

    Args:
        samples: dicts from a dataset: ``img`` (3, h_i, w_i), ``boxes`` (G_i, 4), ``labels`` (G_i,), ``meta``.
            A sample marked ``unreadable`` (an image evaluation could not read, ``img`` None) is left out of
            the stack; its meta goes to ``Batch.skipped``.
        size_divisor: 0 or 1 → no rounding.
    Returns:
        Batch with ``images`` (B, 3, H, W), B targets and B metas (``img_shape`` keeps the unpadded size) for the
        B readable samples (B may be 0: ``images`` is then (0, 3, 1, 1)), the metas of the skipped ones, and
        each image's own padded (h_i, w_i) rounded up to ``size_divisor`` (``pad_shapes``).
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    skipped = [s["meta"] for s in samples if s.get("unreadable")]
    samples = [s for s in samples if not s.get("unreadable")]
    if not samples:
        return Batch(images=torch.zeros(0, 3, 1, 1), targets=[], metas=[], skipped=skipped)
    imgs = [s["img"] for s in samples]
    pad_shapes = [padded_shape(im.shape[-2:], max(1, size_divisor)) for im in imgs]
    max_h = max(h for h, _ in pad_shapes)
    max_w = max(w for _, w in pad_shapes)
    # one (B, 3, H, W) tensor filled with the pad value, each image copied into its top-left corner
    images = imgs[0].new_full((len(imgs), int(imgs[0].shape[0]), max_h, max_w), pad_value)
    for slot, im in zip(images, imgs):
        slot[:, : im.shape[-2], : im.shape[-1]] = im
    targets = [
        Target(
            boxes=torch.as_tensor(s["boxes"], dtype=torch.float32).reshape(-1, 4),
            labels=torch.as_tensor(s["labels"], dtype=torch.int64).reshape(-1),
        )
        for s in samples
    ]
    return Batch(images=images, targets=targets, metas=[s["meta"] for s in samples], skipped=skipped,
                 pad_shapes=pad_shapes)


def split_by_shape(batch: Batch) -> list[tuple[list[int], Batch]]:
    """The images of ``batch`` grouped by their own padded shape (``Batch.pad_shapes``), for inference.

    Each group is cropped to its shape, so every image's tensor is bit for bit the one it has in a batch of
    one (what lay beyond its own padded shape was the collate's padding): no image's input depends on its
    batch-mates of other shapes, and GroupNorm heads (DeFCN) normalise over the image's own map, as the
    official tests at batch 1 do. Images of one padded shape stay in one forward pass.

    Args:
        batch: from :func:`collate` (``images`` (B, 3, H, W)); without ``pad_shapes`` it is one group.
    Returns:
        Per group, in the order of its first image: the indices (into ``batch``) of its images, ascending, and
        the :class:`Batch` of those images (``images`` (B_g, 3, H_g, W_g), their targets and metas, no
        ``skipped``). Empty when ``batch`` holds no image.
    """
    n = len(batch.metas)
    if n == 0:
        return []
    shapes = batch.pad_shapes or [tuple(int(s) for s in batch.images.shape[-2:])] * n
    groups: dict[tuple[int, int], list[int]] = {}
    for i, shape in enumerate(shapes):
        groups.setdefault(tuple(shape), []).append(i)
    out = []
    for (h, w), idx in groups.items():
        if len(idx) == n and (h, w) == tuple(batch.images.shape[-2:]):
            images = batch.images  # one shape, nothing to crop: the batch as it is
        else:
            images = batch.images[torch.tensor(idx, device=batch.images.device), :, :h, :w].contiguous()
        out.append((idx, Batch(images=images, targets=[batch.targets[i] for i in idx] if batch.targets else [],
                               metas=[batch.metas[i] for i in idx], pad_shapes=[(h, w)] * len(idx))))
    return out
