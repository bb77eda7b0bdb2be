"""Frames of anything :meth:`detcli.api.Model.predict` takes: files (:func:`~detcli.inference.frames.iter_sources`),
numpy arrays, PIL images, or a list of those.

Every picture becomes a :class:`~detcli.inference.frames.Frame` of (H, W, 3) uint8 BGR pixels, numbered from 0 in
the order given (the ``image_id`` of a results file is that number + 1).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Union

import numpy as np

from detcli.errors import DetcliError
from detcli.inference.frames import Frame, WarnFn, iter_sources

Source = Union[str, Path, np.ndarray, Any, list, tuple]  # Any: a PIL image (PIL is imported only when given one)


def frames_of(source: Source, warn: WarnFn | None = None) -> Iterator[Frame]:
    """Decoded frames of ``source``: a path, folder, glob or video (str or Path), an (H, W, 3) BGR uint8 array
    (or (H, W) grey), a PIL image (any mode; RGB → BGR here), or a list/tuple of those, in that order.

    File sources are resolved at once (a missing file fails here, before anything runs); pictures are decoded
    as the frames are consumed; unreadable files are skipped with a word to ``warn`` (default: a Python warning).
    An array or PIL image without a file name is named ``image<N>.jpg`` (N its
    number), the name its drawn copy is saved under.

    Raises:
        DetcliError: a source that names no file, an array of another shape or dtype, or another type.
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise DetcliError("nothing to predict on: the source list is empty")
    parts = [_part(item, i, warn) for i, item in enumerate(items)]  # checked now, decoded lazily
    return _numbered(parts)


def _part(item: Any, position: int, warn: WarnFn | None) -> Iterable[Frame]:
    """Frames of one item (numbered later); files are resolved now."""
    if isinstance(item, (str, Path)):
        return iter_sources(str(item)) if warn is None else iter_sources(str(item), warn)
    if isinstance(item, np.ndarray):
        return [Frame(img=bgr_array(item, f"source {position}"), path=f"image{position}.jpg", index=0)]
    if _is_pil(item):
        name = Path(getattr(item, "filename", "") or f"image{position}.jpg").name
        return [Frame(img=pil_to_bgr(item), path=name, index=0)]
    raise DetcliError(f"source {position}: a path, a numpy array or a PIL image is expected, got "
                      f"{type(item).__name__}")


def _numbered(parts: list[Iterable[Frame]]) -> Iterator[Frame]:
    index = 0
    for part in parts:
        for frame in part:
            yield dataclasses.replace(frame, index=index)
            index += 1


def bgr_array(img: np.ndarray, what: str) -> np.ndarray:
    """``img`` as (H, W, 3) uint8 BGR: (H, W) grey is repeated over 3 channels; anything else is refused."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] != 3) or 0 in img.shape:
        raise DetcliError(f"{what}: an image array must be (H, W, 3) BGR or (H, W) grey, dtype uint8; got shape "
                          f"{tuple(img.shape)}, dtype {img.dtype}")
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    return np.ascontiguousarray(img)


def pil_to_bgr(img: Any) -> np.ndarray:
    """A PIL image (any mode) → (H, W, 3) uint8 BGR."""
    return np.ascontiguousarray(np.asarray(img.convert("RGB"))[:, :, ::-1])


def _is_pil(item: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:  # pillow is a dependency; a missing one only means the item is not a PIL image
        return False
    return isinstance(item, Image.Image)


__all__ = ["Source", "bgr_array", "frames_of", "pil_to_bgr"]
