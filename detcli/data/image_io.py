"""Decode an image file as BGR uint8, telling a corrupt or truncated file from a good one."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIG, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def looks_truncated(path: str | Path) -> bool:
    """True when a JPEG lacks its end-of-image marker or a PNG its IEND chunk (a cut-off download/copy).

    OpenCV decodes such files without an error, filling the missing part with grey.
    """
    with open(path, "rb") as f:
        head = f.read(8)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - 64))
        tail = f.read().rstrip(b"\x00\r\n ")
    if head.startswith(_JPEG_SOI):
        return not tail.endswith(_JPEG_EOI)
    if head.startswith(_PNG_SIG):
        return not tail.endswith(_PNG_IEND)
    return False


def read_image_bgr(path: str | Path) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR as ``cv2.imread`` gives it (EXIF orientation applied), or None if unreadable."""
    try:
        if looks_truncated(path):
            return None
    except OSError:
        return None
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return None
    return img
