"""Keep-ratio resize + random horizontal flip + RGB normalisation: MMDetection 3.x's RetinaNet pipeline.

``Resize(scale=(1333, 800), keep_ratio=True)`` → ``RandomFlip(prob=0.5)`` → ``DetDataPreprocessor(mean, std,
bgr_to_rgb=True)``. The scale factor is min(long / max(h, w), short / min(h, w)) and the new size is
``int(w·s + 0.5) × int(h·s + 0.5)`` (mmcv ``rescale_size``); the image is resized bilinearly with cv2, the
boxes by the *realised* factors new_w / w and new_h / h, then clipped to the resized image. Flip maps
x → W − x (no −1). Batch padding (to 32, value 0 after normalisation) happens in ``collate``.

Multi-scale training (DeFCN, detectron2's ``ResizeShortestEdge(short_edge_length=(640, …, 800), max_size=1333,
sample_style="choice")``): ``short_sides`` draws each image's short side from the list; the long side is capped
at the larger value of ``scale`` — the same size rule with ``scale = (long, drawn short)``.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import torch

from detcli.data.transforms.common import warp_boxes
from detcli.data.transforms.pipeline import normalization_table, normalize_to_chw

# ImageNet statistics, RGB order, 0..255 scale (MMDetection pytorch-style configs).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_w, new_h) of mmcv ``rescale_size(…, scale)``: fit the long side in max(scale) and the short in min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


class KeepRatioResizeTransform:
    """RetinaNet train / val transform (callable contract shared with the other families' transforms).

    Args:
        scale: (long, short) bound of the resized image, e.g. (1333, 800); order does not matter.
        mean, std: RGB, 0..255 scale.
        to_rgb: convert the BGR input to RGB before normalising (``bgr_to_rgb=True``).
        flip: horizontal-flip probability when ``train``.
        train: augment (flip) or not.
        short_sides: when ``train``, each image's short-side bound drawn uniformly from these (multi-scale).
    """

    def __init__(
        self,
        scale: tuple[int, int] = (1333, 800),
        mean: tuple[float, float, float] = IMAGENET_MEAN_RGB,
        std: tuple[float, float, float] = IMAGENET_STD_RGB,
        to_rgb: bool = True,
        flip: float = 0.5,
        train: bool = True,
        short_sides: list[int] | None = None,
    ) -> None:
        self.scale = (int(scale[0]), int(scale[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.to_rgb = to_rgb
        self.table = normalization_table(self.mean, self.std)
        self.flip = float(flip)
        self.train = train
        self.short_sides = [int(v) for v in short_sides] if short_sides and train else None

    def __call__(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> dict[str, Any]:
        """Transform one image and its boxes.

        Args:
            img: (H, W, 3) uint8 BGR.
            boxes: (G, 4) float32 xyxy in original pixels.
            labels: (G,) integer class indices.
            rng: source of randomness (required when ``train`` and ``flip`` > 0).
        Returns:
            dict with ``img`` (3, h, w) float32 tensor, ``boxes`` (G, 4) float32 tensor (input pixels, clipped),
            ``labels`` (G,) int64 tensor, ``warp_matrix`` (3, 3) float64 original → input, ``img_shape`` (h, w).
        """
        height, width = img.shape[:2]
        scale = self.scale
        if self.short_sides is not None:
            if rng is None:
                raise ValueError("KeepRatioResizeTransform(short_sides=…) needs an rng")
            scale = (max(self.scale), self.short_sides[int(rng.integers(len(self.short_sides)))])
        new_w, new_h = keep_ratio_size(width, height, scale)
        out = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
        m = np.diag([new_w / width, new_h / height, 1.0])
        if self.train and self.flip > 0:
            if rng is None:
                raise ValueError("KeepRatioResizeTransform(train=True) needs an rng")
            if rng.random() < self.flip:
                out = out[:, ::-1]
                m = np.array([[-1.0, 0.0, new_w], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ m
        out_boxes = warp_boxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), m, new_w, new_h)
        return {
            # one table lookup per pixel, the same float32 values as (img − mean) / std
            "img": normalize_to_chw(np.ascontiguousarray(out), self.table, to_rgb=self.to_rgb),
            "boxes": torch.from_numpy(out_boxes),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "warp_matrix": m,
            "img_shape": (new_h, new_w),
        }
