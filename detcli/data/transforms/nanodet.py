"""NanoDet-Plus data pipeline: one random homography (ShapeTransform), colour jitter, BGR normalisation.

Follows ``nanodet/data/transform/warp.py::ShapeTransform`` and ``color.py::color_aug_and_norm``
(RangiLyu/nanodet @be9b4a9). Randomness comes from a caller-given ``np.random.Generator`` so a
sample is reproducible from (seed, index).
"""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np
import torch

from detcli.data.transforms.common import (
    IMAGENET_MEAN_BGR,
    IMAGENET_STD_BGR,
    normalize_chw,
    resize_matrix,
    warp_boxes,
)

Range = tuple[float, float]


def sample_shape_matrix(
    width: int,
    height: int,
    rng: np.random.Generator,
    *,
    perspective: float,
    scale: Range,
    stretch: tuple[Range, Range],
    rotation: float,
    shear: float,
    flip: float,
    translate: float,
) -> np.ndarray:
    """Random part of ShapeTransform, before the final resize, as a (3, 3) float64 matrix.

    ``T · F · Sh · R · Str · Scl · P · C`` — the official order of composition: C moves the image centre to
    the origin, every component is sampled on every call (ShapeTransform, unlike the legacy warp_and_resize,
    has no 50 % gates), and T puts the centre back at ``U(0.5 − t, 0.5 + t)`` of the width/height.
    """
    c = np.eye(3)
    c[0, 2], c[1, 2] = -width / 2, -height / 2

    p = np.eye(3)  # perspective
    p[2, 0] = rng.uniform(-perspective, perspective)
    p[2, 1] = rng.uniform(-perspective, perspective)

    s = rng.uniform(*scale)  # isotropic scale
    scl = np.diag([s, s, 1.0])

    strx = rng.uniform(*stretch[0])  # independent x / y stretch
    stry = rng.uniform(*stretch[1])
    st = np.diag([strx, stry, 1.0])

    a = math.radians(rng.uniform(-rotation, rotation))  # cv2.getRotationMatrix2D(center=(0,0), angle, 1)
    r = np.array([[math.cos(a), math.sin(a), 0.0], [-math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])

    sh = np.eye(3)
    sh[0, 1] = math.tan(math.radians(rng.uniform(-shear, shear)))
    sh[1, 0] = math.tan(math.radians(rng.uniform(-shear, shear)))

    f = np.eye(3)  # horizontal flip about the centre: x → W − x after T (as the official matrix, no −1)
    if rng.random() < flip:
        f[0, 0] = -1.0

    t = np.eye(3)
    t[0, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * width
    t[1, 2] = rng.uniform(0.5 - translate, 0.5 + translate) * height

    return t @ f @ sh @ r @ st @ scl @ p @ c


def color_jitter(
    img01: np.ndarray,
    rng: np.random.Generator,
    brightness: float,
    contrast: Range,
    saturation: Range,
) -> np.ndarray:
    """Official colour augmentation on a float image scaled to [0, 1]; each op applies with p = 0.5, no clipping.

    1. brightness: ``img += U(−b, b)``;  2. contrast: ``img *= U(c0, c1)``;
    3. saturation: HSV S channel ``*= U(s0, s1)`` (OpenCV float HSV).

    Args:
        img01: (H, W, 3) float32 BGR (not modified).
    Returns:
        (H, W, 3) float32 BGR; ``img01`` itself when no op applies.
    """
    # Every draw is made whether or not the op applies, so the random stream does not depend on the gates.
    do_b, do_c, do_s = rng.random(3) < 0.5
    db = rng.uniform(-brightness, brightness)
    ac = rng.uniform(*contrast)
    as_ = rng.uniform(*saturation)
    img = img01
    if do_b:
        img = img + np.float32(db)
    if do_c:
        img = img * np.float32(ac)
    if do_s:
        hsv = cv2.cvtColor(img.astype(np.float32, copy=False), cv2.COLOR_BGR2HSV)
        hsv[..., 1] *= as_
        img = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return img.astype(np.float32, copy=False)


class NanoDetTransform:
    """NanoDet-Plus train / val transform.

    Train: random homography ``M = Resize · T · F · Sh · R · Str · Scl · P · C`` applied with
    ``cv2.warpPerspective`` (bilinear, constant border 0), boxes warped at their 4 corners and clipped
    (degenerate boxes kept, as official), colour jitter on ``img / 255``, then BGR normalisation.
    Val: ``M = diag(w_in / W, h_in / H, 1)`` (stretch resize, no letterbox) and normalisation only.

    Args:
        input_size: network input (w, h).
        mean, std: BGR, 0..255 scale.
        train: augment or not.
        Remaining arguments: ranges as in the official ``pipeline`` config (defaults = nanodet-plus-m_320.yml).
    """

    def __init__(
        self,
        input_size: tuple[int, int],
        mean: tuple[float, float, float] = IMAGENET_MEAN_BGR,
        std: tuple[float, float, float] = IMAGENET_STD_BGR,
        train: bool = True,
        scale: Range = (0.6, 1.4),
        stretch: tuple[Range, Range] = ((0.8, 1.2), (0.8, 1.2)),
        flip: float = 0.5,
        translate: float = 0.2,
        rotation: float = 0.0,
        shear: float = 0.0,
        perspective: float = 0.0,
        brightness: float = 0.2,
        contrast: Range = (0.6, 1.4),
        saturation: Range = (0.5, 1.2),
    ) -> None:
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.train = train
        self.shape_kwargs = dict(
            perspective=perspective,
            scale=tuple(scale),
            stretch=(tuple(stretch[0]), tuple(stretch[1])),
            rotation=rotation,
            shear=shear,
            flip=flip,
            translate=translate,
        )
        self.color_kwargs = dict(brightness=brightness, contrast=tuple(contrast), saturation=tuple(saturation))

    def warp_matrix(self, width: int, height: int, rng: np.random.Generator | None) -> np.ndarray:
        """(3, 3) float64 original → input matrix for an image of size (width, height)."""
        resize = resize_matrix((width, height), self.input_size)
        if not self.train:
            return resize
        if rng is None:
            raise ValueError("NanoDetTransform(train=True) needs an rng")
        return resize @ sample_shape_matrix(width, height, rng, **self.shape_kwargs)

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
            rng: source of randomness (required when ``train``).
        Returns:
            dict with ``img`` (3, h, w) float32 tensor, ``boxes`` (G, 4) float32 tensor (input pixels, clipped),
            ``labels`` (G,) int64 tensor, ``warp_matrix`` (3, 3) float64 array, ``img_shape`` (h, w).
        """
        height, width = img.shape[:2]
        m = self.warp_matrix(width, height, rng)
        w_in, h_in = self.input_size
        warped = cv2.warpPerspective(
            img, m, dsize=(w_in, h_in), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
        )
        out_boxes = warp_boxes(np.asarray(boxes, dtype=np.float32).reshape(-1, 4), m, w_in, h_in)

        # colour ops and normalisation on img / 255, as color.py (one pass: the cast and the float32 division)
        img01 = np.divide(warped, np.float32(255), dtype=np.float32)
        if self.train:
            img01 = color_jitter(img01, rng, **self.color_kwargs)
        # float32(mean) / 255 in float32, as color.py::_normalize (not float32(mean / 255): 1 ulp apart for some)
        mean01 = np.divide(np.asarray(self.mean, dtype=np.float32), np.float32(255), dtype=np.float32)
        std01 = np.divide(np.asarray(self.std, dtype=np.float32), np.float32(255), dtype=np.float32)

        return {
            "img": normalize_chw(img01, mean01, std01),
            "boxes": torch.from_numpy(out_boxes),
            "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64).reshape(-1)),
            "warp_matrix": m,
            "img_shape": (h_in, w_in),
        }
