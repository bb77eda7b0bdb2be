"""Decode an image file as BGR uint8, telling a corrupt or truncated file from a good one.

:func:`read_image_bgr` is the one place detcli reads an image's pixels (training, evaluation, ``predict``,
``train --check``): the file is read as bytes through :func:`detcli.fileio.read_regular_bytes` (a FIFO or
device named like an image is refused, never opened) and decoded with ``cv2.imdecode``, which applies the
EXIF orientation as ``cv2.imread`` does.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detcli.fileio import read_regular_bytes

_JPEG_SOI, _JPEG_EOI = b"\xff\xd8", b"\xff\xd9"
_PNG_SIG, _PNG_IEND = b"\x89PNG\r\n\x1a\n", b"IEND\xaeB`\x82"


def truncated(data: bytes) -> bool:
    """True when JPEG bytes lack their end-of-image marker or PNG bytes their IEND chunk (a cut-off
    download/copy). OpenCV decodes such files without an error, filling the missing part with grey."""
    tail = data[-64:].rstrip(b"\x00\r\n ")
    if data.startswith(_JPEG_SOI):
        return not tail.endswith(_JPEG_EOI)
    if data.startswith(_PNG_SIG):
        return not tail.endswith(_PNG_IEND)
    return False


def looks_truncated(path: str | Path) -> bool:
    """:func:`truncated` of a file's bytes."""
    return truncated(read_regular_bytes(path))


def decode_image(data: bytes) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR of encoded image bytes (EXIF orientation applied), or None if corrupt or truncated."""
    import cv2  # here, not at the top: resolving a dataset (which imports this module) stays free of OpenCV

    if not data or truncated(data):
        return None
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.ndim != 3 or img.shape[2] != 3 or img.size == 0:
        return None
    return img


def read_image_bgr(path: str | Path) -> np.ndarray | None:
    """(H, W, 3) uint8 BGR as ``cv2.imread`` gives it (EXIF orientation applied), or None if unreadable
    (missing, not a regular file, corrupt or truncated)."""
    try:
        data = read_regular_bytes(path)
    except (OSError, ValueError):
        return None
    return decode_image(data)
