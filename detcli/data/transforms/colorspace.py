"""YOLOX's HSV augmentation, as mmdet 3.3.0 ``YOLOXHSVRandomAug`` (from YOLOX ``data_augment.py``)."""
from __future__ import annotations

import cv2
import numpy as np

from detcli.data.transforms.pipeline import Sample


def hsv_gains(rng: np.random.Generator, hue_delta: int, saturation_delta: int, value_delta: int) -> np.ndarray:
    """(3,) int16 additive gains for (H, S, V).

    Each is ``U(−1, 1) · delta``, zeroed with p = 0.5 (a 0/1 draw per channel), then truncated toward 0 to
    int16, so |gain| ≤ delta. Draws: 3 uniforms, then 3 integers in {0, 1}.
    """
    gains = rng.uniform(-1, 1, 3) * np.array([hue_delta, saturation_delta, value_delta], dtype=np.float64)
    gains *= rng.integers(0, 2, 3)
    return gains.astype(np.int16)


def shift_hsv(img: np.ndarray, gains: np.ndarray) -> np.ndarray:
    """Add ``gains`` in OpenCV's uint8 HSV: H modulo 180, S and V clipped to [0, 255].

    The image goes through BGR → HSV → BGR even when every gain is 0, as in the official code.

    Args:
        img: (H, W, 3) uint8 BGR.
        gains: (3,) integers.
    Returns:
        (H, W, 3) uint8 BGR, a new array.
    """
    # the official int16 arithmetic, tabulated for the 256 values of each uint8 channel (same result, ~2× faster)
    v = np.arange(256, dtype=np.int16)
    tables = ((v + gains[0]) % 180, np.clip(v + gains[1], 0, 255), np.clip(v + gains[2], 0, 255))
    h, s, val = cv2.split(cv2.cvtColor(img, cv2.COLOR_BGR2HSV))
    shifted = [cv2.LUT(ch, t.astype(np.uint8)) for ch, t in zip((h, s, val), tables)]
    return cv2.cvtColor(cv2.merge(shifted), cv2.COLOR_HSV2BGR)


class YOLOXHSVRandomAug:
    """Random additive hue/saturation/value shift (RTMDet: deltas 5, 30, 30)."""

    def __init__(self, hue_delta: int = 5, saturation_delta: int = 30, value_delta: int = 30) -> None:
        self.deltas = (int(hue_delta), int(saturation_delta), int(value_delta))

    def __call__(self, sample: Sample, rng: np.random.Generator) -> Sample:
        return sample.with_(img=shift_hsv(sample.img, hsv_gains(rng, *self.deltas)))

    def __repr__(self) -> str:
        h, s, v = self.deltas
        return f"YOLOXHSVRandomAug(hue_delta={h}, saturation_delta={s}, value_delta={v})"
