"""Single-image geometric steps of the MMDetection 3.x pipelines: Resize, RandomResize, RandomCrop, RandomFlip, Pad.

Behaviour follows mmcv 2.1.0 ``transforms/processing.py`` and mmdet 3.3.0 ``datasets/transforms/transforms.py``;
random draws are made in the same order and from the same ranges as there, from the caller's generator.
Boxes are moved with numpy on the whole (G, 4) array, and every step updates :attr:`Sample.matrix`.
"""
from __future__ import annotations

import cv2
import numpy as np

from detcli.data.transforms.pipeline import Sample, clip_and_keep, scaling, translation


def rescale_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_w, new_h) of mmcv ``rescale_size(…, scale)``: as large as fits max(scale) × min(scale), ratio kept.

    factor = min(max(scale) / max(h, w), min(scale) / min(h, w)); each side ``int(side · factor + 0.5)``
    (at least 1 px).
    """
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return max(1, int(width * factor + 0.5)), max(1, int(height * factor + 0.5))


def resize_sample(sample: Sample, new_w: int, new_h: int) -> Sample:
    """Bilinear resize to (new_w, new_h); boxes by the realised factors new/old, clipped (mmdet ``Resize``)."""
    sx, sy = new_w / sample.width, new_h / sample.height
    img = cv2.resize(sample.img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    boxes = sample.boxes * np.array([sx, sy, sx, sy], dtype=np.float32)
    boxes, _ = clip_and_keep(boxes, new_w, new_h)  # mmdet Resize clips (clip_object_border) but drops nothing
    return sample.with_(img=img, boxes=boxes, matrix=scaling(sx, sy) @ sample.matrix)


class Resize:
    """mmdet ``Resize(scale, keep_ratio)``: the test-time resize (RTMDet: longer side 640).

    Args:
        scale: (w, h); with ``keep_ratio`` the image fits max(scale) × min(scale), else it is stretched to it.
        keep_ratio: keep the aspect ratio.
    """

    def __init__(self, scale: tuple[int, int], keep_ratio: bool = True) -> None:
        self.scale = (int(scale[0]), int(scale[1]))
        self.keep_ratio = keep_ratio

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        if self.keep_ratio:
            new_w, new_h = rescale_size(sample.width, sample.height, self.scale)
        else:
            new_w, new_h = self.scale
        return resize_sample(sample, new_w, new_h)

    def __repr__(self) -> str:
        return f"Resize(scale={self.scale}, keep_ratio={self.keep_ratio})"


class RandomResize:
    """mmcv ``RandomResize(scale, ratio_range)`` with mmdet ``Resize``: target ``(int(w·r), int(h·r))``, r ~ U(ratio_range).

    One draw (``random_sample``); then as :class:`Resize` with that target.
    """

    def __init__(self, scale: tuple[int, int], ratio_range: tuple[float, float], keep_ratio: bool = True) -> None:
        self.scale = (int(scale[0]), int(scale[1]))
        self.ratio_range = (float(ratio_range[0]), float(ratio_range[1]))
        self.keep_ratio = keep_ratio

    def target_scale(self, rng: np.random.Generator) -> tuple[int, int]:
        lo, hi = self.ratio_range
        ratio = rng.random() * (hi - lo) + lo
        return max(1, int(self.scale[0] * ratio)), max(1, int(self.scale[1] * ratio))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return Resize(self.target_scale(rng), self.keep_ratio)(sample)

    def __repr__(self) -> str:
        return f"RandomResize(scale={self.scale}, ratio_range={self.ratio_range}, keep_ratio={self.keep_ratio})"


class RandomCrop:
    """mmdet ``RandomCrop(crop_size, crop_type='absolute')``.

    The crop is min(crop, image) on each side (a smaller image is not padded here), at offsets drawn uniformly
    in ``[0, H − crop_h]`` then ``[0, W − crop_w]``. Boxes are shifted, clipped, and those left without area are
    dropped; when none is left (or there was none) and not ``allow_negative_crop``, the sample is dropped
    (returns None) and the dataset loads another one.

    Args:
        crop_size: (w, h).
        allow_negative_crop: keep crops without any box.
    """

    def __init__(self, crop_size: tuple[int, int], allow_negative_crop: bool = False) -> None:
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.allow_negative_crop = allow_negative_crop

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample | None:
        crop_w, crop_h = min(self.crop_size[0], sample.width), min(self.crop_size[1], sample.height)
        y0 = int(rng.integers(0, sample.height - crop_h + 1))
        x0 = int(rng.integers(0, sample.width - crop_w + 1))
        img = sample.img[y0:y0 + crop_h, x0:x0 + crop_w]
        boxes, keep = clip_and_keep(sample.boxes - np.array([x0, y0, x0, y0], dtype=np.float32), crop_w, crop_h)
        if not keep.any() and not self.allow_negative_crop:
            return None
        return sample.with_(img=img, boxes=boxes[keep], labels=sample.labels[keep],
                            matrix=translation(-x0, -y0) @ sample.matrix)

    def __repr__(self) -> str:
        return f"RandomCrop(crop_size={self.crop_size}, allow_negative_crop={self.allow_negative_crop})"


def hflip_sample(sample: Sample) -> Sample:
    """Mirror the image; boxes x1' = W − x2, x2' = W − x1 (mmdet ``HorizontalBoxes.flip_``)."""
    w = sample.width
    boxes = sample.boxes[:, [2, 1, 0, 3]] * np.array([-1, 1, -1, 1], dtype=np.float32)
    boxes += np.array([w, 0, w, 0], dtype=np.float32)
    flip = np.array([[-1.0, 0.0, w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # a contiguous copy, not a [:, ::-1] view: the steps after it run several times faster on it
    return sample.with_(img=cv2.flip(sample.img, 1), boxes=boxes, matrix=flip @ sample.matrix)


class RandomFlip:
    """mmcv ``RandomFlip(prob, direction='horizontal')``: flip when a uniform draw is below ``prob``."""

    def __init__(self, prob: float) -> None:
        self.prob = float(prob)

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return hflip_sample(sample) if rng.random() < self.prob else sample

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob})"


def pad_image(img: np.ndarray, width: int, height: int, value: float) -> np.ndarray:
    """(H, W, 3) → (max(H, height), max(W, width), 3), the image top-left, the rest ``value``
    (``img`` itself when it is large enough already)."""
    if img.shape[0] >= height and img.shape[1] >= width:
        return img
    out = np.full((max(img.shape[0], height), max(img.shape[1], width), 3), value, dtype=img.dtype)
    out[: img.shape[0], : img.shape[1]] = img
    return out


class Pad:
    """mmdet ``Pad(size, pad_val)``: pad bottom/right to ``size`` (w, h) with ``pad_val`` before normalisation."""

    def __init__(self, size: tuple[int, int], pad_val: float = 114.0) -> None:
        self.size = (int(size[0]), int(size[1]))
        self.pad_val = float(pad_val)

    def __call__(self, sample: Sample, rng: np.random.Generator | None = None) -> Sample:
        return sample.with_(img=pad_image(sample.img, self.size[0], self.size[1], self.pad_val))

    def __repr__(self) -> str:
        return f"Pad(size={self.size}, pad_val={self.pad_val})"
