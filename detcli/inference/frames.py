"""Decoded frames of what ``detcli predict SOURCE`` names: images, folders, glob patterns and videos.

:func:`detcli.sources.resolve_source` finds the files (without opening them); :func:`iter_sources` decodes them,
one :class:`Frame` per image or video frame, for the prediction loop (:mod:`detcli.inference.loop`).
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import cv2
import numpy as np

from detcli.data.image_io import read_image_bgr
from detcli.errors import DetcliError
from detcli.sources import kind, resolve_source

WarnFn = Callable[[str], None]


@dataclass
class Frame:
    """One decoded picture to run the detector on.

    Attributes:
        img: (H, W, 3) uint8 BGR.
        path: the file it came from, as found (folder/glob sources give ``folder/name``).
        index: running number (from 0) over everything ``iter_sources`` yielded; ``index + 1`` is the
            ``image_id`` in ``predictions.json``.
        frame: frame number inside a video, ``None`` for an image.
        fps: frames per second of the video, ``None`` for an image.
    """

    img: np.ndarray
    path: str
    index: int
    frame: int | None = None
    fps: float | None = None

    @property
    def is_video(self) -> bool:
        return self.frame is not None


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


def iter_sources(source: str, warn: WarnFn = _warn) -> Iterator[Frame]:
    """Decoded frames of every image/video that ``source`` names, in sorted file order.

    Unreadable images and videos are reported through ``warn`` and skipped.

    Raises:
        DetcliError: nothing matches ``source`` (see :func:`resolve_source`), or nothing it matches is readable.
    """
    return _iter_files(resolve_source(source), source, warn)  # resolve now: a bad source fails at once


def _iter_files(paths: list[str], source: str, warn: WarnFn) -> Iterator[Frame]:
    index = 0
    for path in paths:
        if kind(path) == "video":
            for frame in _iter_video(path, index, warn):
                index += 1
                yield frame
            continue
        img = read_image_bgr(path)
        if img is None:
            warn(f"skipping '{path}': not a readable image")
            continue
        yield Frame(img=img, path=path, index=index)
        index += 1
    if index == 0:
        raise DetcliError(f"no readable image or video frame in '{source}'")


def _iter_video(path: str, start_index: int, warn: WarnFn) -> Iterator[Frame]:
    cap = cv2.VideoCapture(path)
    try:
        if not cap.isOpened():
            warn(f"skipping '{path}': cannot open video")
            return
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else 30.0
        n = 0
        while True:
            ok, img = cap.read()
            if not ok:
                break
            yield Frame(img=img, path=path, index=start_index + n, frame=n, fps=fps)
            n += 1
        if n == 0:
            warn(f"skipping '{path}': no decodable frame")
    finally:
        cap.release()


__all__ = ["Frame", "WarnFn", "iter_sources"]
