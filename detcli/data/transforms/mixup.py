"""Cached MixUp: blend the sample 0.5/0.5 with a cached one that has boxes.

As mmdet 3.3.0 ``CachedMixUp`` (``datasets/transforms/transforms.py``), the RTMDet default:

1. the incoming sample joins the cache (over ``max_cached_images``: a random entry or the oldest leaves);
2. while the cache holds at most 1 sample, or with probability 1 − ``prob``, the sample passes unchanged;
3. a partner is drawn from the cache but its newest entry (the sample itself) up to ``max_iters`` times
   until one has boxes; if the last one drawn has none, the sample passes unchanged;
4. the partner is letterboxed top-left into ``img_scale`` (``int(side · s)``, bilinear, ``pad_val`` around),
   that canvas is resized by a jitter ``j ~ U(ratio_range)`` (RTMDet: 1), flipped with probability
   ``flip_ratio``, padded to at least the sample's size and cropped to it at a random offset (drawn, as
   mmdet's ``numpy.random.randint(0, excess)``, in ``[0, excess − 1]``: never the last position);
5. image = ``uint8(0.5 · sample + 0.5 · partner)`` (truncated, as the official ``astype``);
   boxes = the sample's, then the partner's (scaled, clipped to the jittered canvas, flipped, shifted,
   clipped), those without area dropped.

Draw order: cache pop (random_pop and full), gate, partner index (≤ ``max_iters`` times), jitter, flip,
y offset (if the padded partner is taller), x offset (if wider).
"""
from __future__ import annotations

import cv2
import numpy as np

from detcli.data.transforms.cache import ResultsCache
from detcli.data.transforms.geometric import hflip_sample, pad_image
from detcli.data.transforms.pipeline import Sample, clip_and_keep


def mean_floor(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``uint8(0.5·a + 0.5·b)`` of two uint8 images, as the official float32 blend then ``astype`` (exact
    before the truncation, so it is floor((a + b) / 2)), computed as ``(a & b) + ((a ^ b) >> 1)`` in uint8."""
    out = np.bitwise_xor(a, b)
    np.right_shift(out, 1, out=out)
    out += a & b
    return out


class CachedMixUp:
    """MixUp with a partner from the cache of samples seen at this point of the pipeline.

    Args:
        img_scale: (w, h) of the partner's letterbox.
        ratio_range: scale jitter of the letterboxed partner.
        flip_ratio: probability of flipping the partner horizontally.
        pad_val: value around the letterboxed partner.
        max_iters: draws allowed to find a partner with boxes.
        max_cached_images: cache size (≥ 2).
        random_pop: drop a random cached sample when full (False: the oldest).
        prob: chance to mix once the cache is warm.
    """

    def __init__(
        self,
        img_scale: tuple[int, int] = (640, 640),
        ratio_range: tuple[float, float] = (1.0, 1.0),
        flip_ratio: float = 0.5,
        pad_val: float = 114.0,
        max_iters: int = 15,
        max_cached_images: int = 20,
        random_pop: bool = True,
        prob: float = 1.0,
    ) -> None:
        if max_cached_images < 2:
            raise ValueError(f"CachedMixUp needs max_cached_images >= 2, got {max_cached_images}")
        self.img_scale = (int(img_scale[0]), int(img_scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.flip_ratio = float(flip_ratio)
        self.pad_val = float(pad_val)
        self.max_iters = int(max_iters)
        self.prob = float(prob)
        self.cache = ResultsCache(max_cached_images, random_pop)

    def reset(self) -> None:
        self.cache.clear()

    def draw_partner(self, rng: np.random.Generator) -> Sample:
        """Up to ``max_iters`` uniform draws, stopping at the first partner with boxes (else the last drawn)."""
        partner = self.cache.draw(rng)
        for _ in range(self.max_iters - 1):
            if len(partner.boxes):
                break
            partner = self.cache.draw(rng)
        return partner

    def letterbox(self, partner: Sample, jitter: float) -> tuple[Sample, float]:
        """The partner top-left on an ``img_scale`` canvas of ``pad_val``, then resized by ``jitter``.

        Returns:
            the canvas as a sample (boxes scaled by the overall factor and clipped to it, unfiltered), and that factor.
        """
        w, h = self.img_scale
        s = min(h / partner.height, w / partner.width)
        size = (max(1, int(partner.width * s)), max(1, int(partner.height * s)))
        # a same-size bilinear resize is an exact copy: skipped (RTMDet's partners are already img_scale)
        fitted = partner.img if size == (partner.width, partner.height) else cv2.resize(
            partner.img, size, interpolation=cv2.INTER_LINEAR)
        canvas = pad_image(fitted, w, h, self.pad_val)[:h, :w]
        if jitter != 1.0:
            canvas = cv2.resize(canvas, (max(1, int(w * jitter)), max(1, int(h * jitter))),
                                interpolation=cv2.INTER_LINEAR)
        s *= jitter
        boxes, _ = clip_and_keep(partner.boxes * np.float32(s), canvas.shape[1], canvas.shape[0])
        return partner.with_(img=canvas, boxes=boxes), s

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        self.cache.push(sample, rng)
        if len(self.cache) <= 1:
            return sample
        if rng.random() > self.prob:
            return sample
        partner = self.draw_partner(rng)
        if not len(partner.boxes):
            return sample
        jitter = rng.uniform(*self.ratio_range)
        # mmdet flips when U(0, 1) > flip_ratio, i.e. with probability 1 − flip_ratio; this flips with
        # probability flip_ratio and, at the RTMDet value 0.5, on exactly the same draws
        flip = rng.random() > 1.0 - self.flip_ratio
        moved, _ = self.letterbox(partner, jitter)
        if flip:
            moved = hflip_sample(moved)

        th, tw = sample.height, sample.width
        padded = pad_image(moved.img, tw, th, self.pad_val)
        y0 = int(rng.integers(0, padded.shape[0] - th)) if padded.shape[0] > th else 0
        x0 = int(rng.integers(0, padded.shape[1] - tw)) if padded.shape[1] > tw else 0
        patch = padded[y0:y0 + th, x0:x0 + tw]
        partner_boxes, _ = clip_and_keep(moved.boxes - np.array([x0, y0, x0, y0], dtype=np.float32), tw, th)

        img = mean_floor(sample.img, np.ascontiguousarray(patch))
        boxes, keep = clip_and_keep(np.concatenate([sample.boxes, partner_boxes]), tw, th)
        labels = np.concatenate([sample.labels, partner.labels])
        return sample.with_(img=img, boxes=boxes[keep], labels=labels[keep])

    def __repr__(self) -> str:
        return (
            f"CachedMixUp(img_scale={self.img_scale}, ratio_range={self.ratio_range}, flip_ratio={self.flip_ratio}, "
            f"pad_val={self.pad_val}, max_iters={self.max_iters}, max_cached_images={self.cache.max_size}, "
            f"random_pop={self.cache.random_pop}, prob={self.prob})"
        )
