"""What ``detcli predict SOURCE`` names: an image, a video, a folder of them or a glob pattern.

Only the file system is looked at (nothing is opened or decoded, neither OpenCV nor torch is imported), so a
source that names nothing is reported before the model and its libraries load.
:func:`detcli.inference.frames.iter_sources` decodes the files found here.
"""
from __future__ import annotations

import glob
import os

from detcli.errors import DetcliError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".m4v", ".mpg", ".mpeg", ".wmv", ".webm", ".flv", ".ts")


def kind(path: str) -> str:
    """``"image"``, ``"video"`` or ``"other"``, by the file name's extension (any case)."""
    ext = os.path.splitext(path)[1].lower()
    return "video" if ext in VIDEO_EXTENSIONS else "image" if ext in IMAGE_EXTENSIONS else "other"


def resolve_source(source: str) -> list[str]:
    """The image/video files ``source`` names: a file, a folder (sorted), or a glob pattern (sorted).

    Raises:
        DetcliError: the path does not exist, the folder holds no image/video, or the pattern matches none.
    """
    if os.path.isfile(source):
        return [source]
    if os.path.isdir(source):
        files = sorted(os.path.join(source, n) for n in os.listdir(source) if kind(n) != "other")
        files = [f for f in files if os.path.isfile(f)]
        if not files:
            raise DetcliError(
                f"no images or videos in folder '{source}' "
                f"(looked for {', '.join(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS)})"
            )
        return files
    if glob.has_magic(source):
        matches = sorted(glob.glob(source, recursive=True))
        files = [f for f in matches if os.path.isfile(f) and kind(f) != "other"]
        if not files:
            what = f"{len(matches)} match(es), none an image or video" if matches else "nothing matches"
            raise DetcliError(f"source pattern '{source}': {what}")
        return files
    raise DetcliError(f"source not found: '{source}' (expected an image, a video, a folder or a glob pattern)")


__all__ = ["IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "kind", "resolve_source"]
