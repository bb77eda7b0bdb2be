"""Where a dataset may read: names stay inside their dataset, and only regular files are opened.

Two rules, one place each, for every format (COCO, YOLO, Pascal VOC) and every command:

- **Confinement.** A path that comes from inside a data file (a COCO ``file_name``, a VOC image id, a line of
  a YOLO image list) is a name *under* a folder of its dataset: one that is absolute or climbs out with
  ``..`` is refused unread (:func:`escapes`, judged on the name alone). A file whose *text* detcli parses and
  may quote in a message (YOLO label files and image lists, VOC image sets and XML) must also lie inside the
  dataset after symlinks are resolved (:meth:`Roots.check`): a label file that is a symlink to a file
  elsewhere is refused, never opened. Images may be symlinks (they are decoded, never shown), as for COCO.
  Paths the user wrote in a dataset YAML (``path:``, an absolute ``train:``) are the user's choice.
- **Regular files only.** :func:`detcli.fileio.open_regular` opens a path only after ``stat`` says it is a regular file;
  opening a FIFO for reading would block forever (a FIFO named ``x.jpg`` in an image folder), reading a
  device never ends. A refusal is an :class:`OSError` (:class:`detcli.fileio.NotRegularFile`), so every reader's existing
  ``except OSError`` turns it into its message.
"""
from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterable

from detcli.errors import DatasetError
from detcli.fileio import read_regular_bytes

# no file system stores a longer name; longer ones end in ENAMETOOLONG deep inside a run
MAX_NAME_BYTES = 255  # one path component (NAME_MAX)
MAX_PATH_BYTES = 4096  # a whole relative name (PATH_MAX)
def read_regular_text(path: str | Path, what: str) -> str:
    """UTF-8 text of a regular file; ``what`` names it in the message (``"label file"``).

    Raises:
        DatasetError: missing, not a regular file, unreadable or not UTF-8.
    """
    try:
        raw = read_regular_bytes(path)
    except OSError as e:
        raise DatasetError(f"{what} {path} cannot be read: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{what} {path}: not UTF-8 text ({e.reason} at byte {e.start})") from None


# ---------------------------------------------------------------------------------------------- confinement
def escapes(name: str) -> bool:
    """True when a name from a data file is absolute or climbs out of its folder with ``..``.

    The check is on the name alone (``/`` and ``\\`` both count as separators, a Windows drive counts as
    absolute), so nothing is looked up for a refused name.
    """
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).anchor:
        return True
    depth = 0
    for part in re.split(r"[\\/]", name):
        if part == "..":
            depth -= 1
            if depth < 0:
                return True
        elif part not in ("", "."):
            depth += 1
    return False


def bad_name(name: str) -> str | None:
    """Why a relative file name from a data file cannot name a file (None when it can): a NUL character,
    a component longer than :data:`MAX_NAME_BYTES` or a name longer than :data:`MAX_PATH_BYTES` (UTF-8 bytes)."""
    if "\0" in name:
        return "it contains a NUL character"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"it is longer than {MAX_PATH_BYTES} bytes"
    if any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in re.split(r"[\\/]", name)):
        return f"a folder or file name in it is longer than {MAX_NAME_BYTES} bytes"
    return None


def within(path: str | Path, root: str | Path) -> bool:
    """True when ``path`` is ``root`` or below it, comparing the normalised names (no symlink resolved)."""
    p, r = os.path.normpath(os.path.abspath(path)), os.path.normpath(os.path.abspath(root))
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)


class Roots:
    """The folders a dataset may read from: a dataset root (a YOLO ``path``, a VOC root) and the folders of
    the absolute paths the user wrote in the dataset YAML.

    :meth:`holds` judges a name (no symlink resolved: images may be symlinks); :meth:`check` judges a file
    whose text is parsed by where it really is (symlinks resolved, each folder's once), without opening it.
    """

    def __init__(self, roots: Iterable[str | Path]) -> None:
        self.roots = list(dict.fromkeys(Path(os.path.abspath(r)) for r in roots))
        self._real = [os.path.realpath(r) for r in self.roots]
        self._real_dirs: dict[str, str] = {}

    def __str__(self) -> str:
        return ", ".join(str(r) for r in self.roots)

    def holds(self, path: str | Path) -> bool:
        """``path`` (as named) is inside one of the roots."""
        return any(within(path, r) for r in self.roots)

    def really_hold(self, path: str | Path) -> bool:
        """``path``, symlinks resolved, is inside one of the roots (symlinks resolved too)."""
        path = os.path.abspath(path)
        folder, name = os.path.split(path)
        real_dir = self._real_dirs.get(folder)
        if real_dir is None:
            real_dir = self._real_dirs[folder] = os.path.realpath(folder)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(real_dir, name)
        return any(within(real, r) for r in self._real)

    def check(self, path: str | Path, what: str) -> None:
        """Raise unless :meth:`really_hold`; the file is not opened.

        Raises:
            DatasetError: naming ``what`` (e.g. ``"label file a.txt"``) and the roots, never the target or its
                content.
        """
        if not self.really_hold(path):
            raise DatasetError(f"{what} leads out of the dataset ({self}) through a symlink: detcli reads only "
                               f"files inside the dataset; copy the file in, or point the dataset at the folder "
                               f"where the files really are")


__all__ = ["MAX_NAME_BYTES", "MAX_PATH_BYTES", "Roots", "bad_name", "escapes", "read_regular_text", "within"]
