"""Point priors: one point per feature-map cell, as used by anchor-free heads (NanoDet-Plus, RTMDet)."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor


def point_priors(
    featmap_sizes: list[tuple[int, int]],
    strides: Sequence[int],
    offset: float = 0.0,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """Cell points of every level, concatenated level after level.

    Args:
        featmap_sizes: ``(h, w)`` of each level's feature map.
        strides: stride of each level in input pixels.
        offset: fraction of a cell added to the cell index. 0 puts the point at the cell's
            top-left corner, as in the official NanoDet (``get_single_level_center_priors``)
            and mmdet ``MlvlPointGenerator(offset=0)`` used by RTMDet.
        device, dtype: of the result.

    Returns:
        (N, 4) rows ``[x, y, stride, stride]`` with ``x = (j + offset) * stride``,
        ``y = (i + offset) * stride``; level-major, then row-major (``y`` outer, ``x`` inner),
        N = sum(h * w).
    """
    if len(featmap_sizes) != len(strides):
        raise ValueError(f"{len(featmap_sizes)} feature-map sizes but {len(strides)} strides")
    levels = []
    for (h, w), stride in zip(featmap_sizes, strides):
        xs = (torch.arange(int(w), device=device, dtype=dtype) + offset) * stride
        ys = (torch.arange(int(h), device=device, dtype=dtype) + offset) * stride
        y, x = torch.meshgrid(ys, xs, indexing="ij")
        s = torch.full_like(x, float(stride))
        levels.append(torch.stack([x, y, s, s], dim=-1).reshape(-1, 4))
    if not levels:
        return torch.zeros((0, 4), device=device, dtype=dtype)
    return torch.cat(levels, dim=0)
