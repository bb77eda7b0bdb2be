"""Keep-ratio resize + random horizontal flip + RGB normalisation: MMDetection 3.x's RetinaNet pipeline.

``Resize(scale=(1333, 800), keep_ratio=True)`` → ``RandomFlip(prob=0.5)`` → ``DetDataPreprocessor(mean, std,
bgr_to_rgb=True)``. The scale factor is min(long / max(h, w), short / min(h, w)) and the new size is
``int(w·s + 0.5) × int(h·s + 0.5)`` (mmcv ``rescale_size``); the image is resized bilinearly with cv2, the
boxes by the *realised* factors new_w / w and new_h / h, then clipped to the resized image. Flip maps
x → W − x (no −1). Batch padding (to 32, value 0 after normalisation) happens in ``collate``.

Multi-scale training (DeFCN, detectron2's ``ResizeShortestEdge(short_edge_length=(640, …, 800), max_size=1333,
sample_style="choice")``): ``short_sides`` draws each image's short side from the list; the long side is capped
at the larger value of ``scale``.

DeFCN on cvpods resizes as detectron2 does, which two options reproduce exactly (chosen by its preset):
``size_rule="shortest_edge"`` (:func:`shortest_edge_size`: the short side set first, then the long-side cap,
each side rounded at the end; mmcv's single factor rounds 1 px differently for 552 of the 4 million sizes up to
2000 × 2000 at 800 / 1333) and ``backend="pil"`` (PIL ``BILINEAR`` on the uint8 image, which widens its
filter by the scale factor when it shrinks, a low-pass that OpenCV's ``INTER_LINEAR`` does not apply: 18 grey
levels apart at most, a third of the values differing, on the 1000 × 872 test photograph shrunk to 917 × 800;
enlarging, the two differ by their fixed-point rounding, 1 level). Golden end to end: ``tests/e2e/test_e2e_defcn.py``.
"""
from __future__ import annotations

from typing import Any, Literal

import cv2
import numpy as np
import torch

from detcli.data.transforms.common import warp_boxes
from detcli.data.transforms.pipeline import normalization_table, normalize_to_chw

# ImageNet statistics, RGB order, 0..255 scale (MMDetection pytorch-style configs).
IMAGENET_MEAN_RGB = (123.675, 116.28, 103.53)
IMAGENET_STD_RGB = (58.395, 57.12, 57.375)


ResizeBackend = Literal["cv2", "pil"]
SizeRule = Literal["mmcv", "shortest_edge"]


def keep_ratio_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(new_w, new_h) of mmcv ``rescale_size(…, scale)``: fit the long side in max(scale) and the short in min(scale)."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def shortest_edge_size(width: int, height: int, short: int, max_size: int) -> tuple[int, int]:
    """(new_w, new_h) of detectron2/cvpods ``ResizeShortestEdge``, in its float64 steps and their order.

    The short side becomes ``short`` (the height when h < w, else the width) and the other side ``short / min(h,
    w)`` times its length; when the longer of the two exceeds ``max_size``, both are multiplied by ``max_size /
    longer``; each side is then rounded as ``int(x + 0.5)``.
    """
    factor = short / min(height, width)
    new_h, new_w = (float(short), factor * width) if height < width else (factor * height, float(short))
    longer = max(new_h, new_w)
    if longer > max_size:
        cap = max_size / longer
        new_h, new_w = new_h * cap, new_w * cap
    return int(new_w + 0.5), int(new_h + 0.5)


def resize_bilinear(img: np.ndarray, new_w: int, new_h: int, backend: ResizeBackend = "cv2") -> np.ndarray:
    """(H, W, 3) uint8 → (new_h, new_w, 3) uint8, bilinear: ``cv2.INTER_LINEAR`` (mmcv ``imresize``) or PIL
    ``Image.BILINEAR`` (cvpods ``ResizeTransform``; channels are resampled independently, so the channel
    order does not matter)."""
    if backend == "pil":
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((new_w, new_h), Image.BILINEAR))
    return cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_LINEAR)


class KeepRatioResizeTransform:
    """RetinaNet train / val transform (callable contract shared with the other families' transforms).

    Args:
        scale: (long, short) bound of the resized image, e.g. (1333, 800); order does not matter.
        mean, std: RGB, 0..255 scale.
        to_rgb: convert the BGR input to RGB before normalising (``bgr_to_rgb=True``).
        flip: horizontal-flip probability when ``train``.
        train: augment (flip) or not.
        short_sides: when ``train``, each image's short-side bound drawn uniformly from these (multi-scale).
        backend: bilinear resize of :func:`resize_bilinear` (``"cv2"`` MMDetection, ``"pil"`` cvpods).
        size_rule: ``"mmcv"`` (:func:`keep_ratio_size`) or ``"shortest_edge"`` (:func:`shortest_edge_size` with
            the short side min(scale), or the drawn one, and max_size max(scale)).
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
        backend: ResizeBackend = "cv2",
        size_rule: SizeRule = "mmcv",
    ) -> None:
        self.scale = (int(scale[0]), int(scale[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.to_rgb = to_rgb
        self.table = normalization_table(self.mean, self.std)
        self.flip = float(flip)
        self.train = train
        self.short_sides = [int(v) for v in short_sides] if short_sides and train else None
        if backend not in ("cv2", "pil") or size_rule not in ("mmcv", "shortest_edge"):
            raise ValueError(f"backend {backend!r} / size_rule {size_rule!r}: expected cv2|pil / mmcv|shortest_edge")
        self.backend: ResizeBackend = backend
        self.size_rule: SizeRule = size_rule

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
        if self.size_rule == "shortest_edge":
            new_w, new_h = shortest_edge_size(width, height, min(scale), max(scale))
        else:
            new_w, new_h = keep_ratio_size(width, height, scale)
        out = resize_bilinear(img, new_w, new_h, self.backend)
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
