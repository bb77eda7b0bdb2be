"""Stack samples into a :class:`~detcli.structures.Batch`, padding bottom/right (nanodet ``stack_batch_img``)."""
from __future__ import annotations

from typing import Any, Sequence

import torch

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
        B readable samples (B may be 0: ``images`` is then (0, 3, 1, 1)), and the metas of the skipped ones.
    """
    if not samples:
        raise ValueError("collate needs at least one sample")
    skipped = [s["meta"] for s in samples if s.get("unreadable")]
    samples = [s for s in samples if not s.get("unreadable")]
    if not samples:
        return Batch(images=torch.zeros(0, 3, 1, 1), targets=[], metas=[], skipped=skipped)
    imgs = [s["img"] for s in samples]
    max_h = max(int(im.shape[-2]) for im in imgs)
    max_w = max(int(im.shape[-1]) for im in imgs)
    if size_divisor > 1:
        max_h = -(-max_h // size_divisor) * size_divisor
        max_w = -(-max_w // size_divisor) * size_divisor
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
    return Batch(images=images, targets=targets, metas=[s["meta"] for s in samples], skipped=skipped)
