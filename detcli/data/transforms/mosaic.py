"""Cached mosaic: the sample and three cached ones, one per quadrant around a random centre.

As mmdet 3.3.0 ``CachedMosaic`` (``datasets/transforms/transforms.py``), the RTMDet default:

1. the incoming sample joins the cache (over ``max_cached_images``: a random entry or the oldest leaves);
2. while the cache holds at most 4 samples, or with probability 1 − ``prob``, the sample passes unchanged;
3. otherwise three partners are drawn uniformly, with replacement, from the cache but its newest entry (the
   sample itself; see :mod:`~detcli.data.transforms.cache`);
4. canvas ``(2h, 2w)`` of ``pad_val``, centre ``(int(U(r0, r1)·w), int(U(r0, r1)·h))``;
5. each tile is resized to fit ``img_scale`` keeping its ratio (``int(side · s)``, bilinear) and put with its
   inner corner on the centre: the sample top-left, the partners top-right, bottom-left, bottom-right; the
   canvas border cuts what sticks out;
6. boxes are scaled by ``s``, shifted, clipped to the canvas, and those left without area dropped.

Draw order: cache pop (random_pop and full), gate, 3 partner indices, centre x, centre y.
"""
from __future__ import annotations

import cv2
import numpy as np

from detcli.data.transforms.cache import ResultsCache
from detcli.data.transforms.pipeline import Sample, clip_and_keep, scaling, translation

# quadrant order of mmdet's loc_strs: (left of the centre?, above the centre?)
QUADRANTS = ((True, True), (False, True), (True, False), (False, False))


def tile_span(center: int, size: int, limit: int, before: bool) -> tuple[int, int, int, int]:
    """Where a tile of extent ``size`` lands on one axis of the canvas ``[0, limit]`` next to ``center``.

    Returns:
        (paste0, paste1, crop0, crop1): canvas interval ``[paste0, paste1)`` receives the tile's
        ``[crop0, crop1)``; the tile ends at ``center`` (``before``) or starts there.
    """
    if before:
        paste0, paste1 = max(center - size, 0), center
        return paste0, paste1, size - (paste1 - paste0), size
    paste0, paste1 = center, min(center + size, limit)
    return paste0, paste1, 0, paste1 - paste0


class CachedMosaic:
    """Mosaic of 4 cached samples (the sample top-left), output ``(2h, 2w)``.

    Args:
        img_scale: (w, h) of one tile's box; the canvas is ``(2w, 2h)``.
        center_ratio_range: the centre is ``U(range) · (w, h)``.
        pad_val: canvas value where no tile lands.
        prob: chance to build a mosaic once the cache is warm.
        max_cached_images: cache size (≥ 4).
        random_pop: drop a random cached sample when full (False: the oldest).
    """

    def __init__(
        self,
        img_scale: tuple[int, int] = (640, 640),
        center_ratio_range: tuple[float, float] = (0.5, 1.5),
        pad_val: float = 114.0,
        prob: float = 1.0,
        max_cached_images: int = 40,
        random_pop: bool = True,
    ) -> None:
        if max_cached_images < 4:
            raise ValueError(f"CachedMosaic needs max_cached_images >= 4, got {max_cached_images}")
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        self.center_ratio_range = (float(center_ratio_range[0]), float(center_ratio_range[1]))
        self.pad_val = float(pad_val)
        self.prob = float(prob)
        self.cache = ResultsCache(max_cached_images, random_pop)

    def reset(self) -> None:
        self.cache.clear()

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        self.cache.push(sample, rng)
        if len(self.cache) <= 4:
            return sample
        if rng.random() > self.prob:
            return sample
        partners = [self.cache.draw(rng) for _ in range(3)]
        w, h = self.img_scale
        cx = int(rng.uniform(*self.center_ratio_range) * w)
        cy = int(rng.uniform(*self.center_ratio_range) * h)

        canvas = np.full((2 * h, 2 * w, 3), self.pad_val, dtype=np.uint8)
        boxes, labels = [], []
        matrix = sample.matrix
        for k, (tile, (left, top)) in enumerate(zip([sample, *partners], QUADRANTS)):
            s = min(h / tile.height, w / tile.width)
            tw, th = max(1, int(tile.width * s)), max(1, int(tile.height * s))
            img = cv2.resize(tile.img, (tw, th), interpolation=cv2.INTER_LINEAR)
            px0, px1, cx0, cx1 = tile_span(cx, tw, 2 * w, before=left)
            py0, py1, cy0, cy1 = tile_span(cy, th, 2 * h, before=top)
            canvas[py0:py1, px0:px1] = img[cy0:cy1, cx0:cx1]
            dx, dy = px0 - cx0, py0 - cy0
            boxes.append(tile.boxes * np.float32(s) + np.array([dx, dy, dx, dy], dtype=np.float32))
            labels.append(tile.labels)
            if k == 0:
                matrix = translation(dx, dy) @ scaling(s, s) @ sample.matrix

        all_boxes, keep = clip_and_keep(np.concatenate(boxes), 2 * w, 2 * h)
        return Sample(img=canvas, boxes=all_boxes[keep], labels=np.concatenate(labels)[keep], matrix=matrix)

    def __repr__(self) -> str:
        return (
            f"CachedMosaic(img_scale={self.img_scale}, center_ratio_range={self.center_ratio_range}, "
            f"pad_val={self.pad_val}, prob={self.prob}, max_cached_images={self.cache.max_size}, "
            f"random_pop={self.cache.random_pop})"
        )
