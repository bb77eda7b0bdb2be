"""Atomic file writes: the one place detcli writes a file that must never be seen half-written.

A temporary file in the target's folder is written, flushed and fsynced, given the usual permissions
(0666 minus the umask, so 0644 under the common umask 022, not ``mkstemp``'s 0600), then renamed over
the target with ``os.replace``. A crash or an error mid-write leaves the previous file untouched and no
temporary behind; ``OSError`` (read-only folder, full disk) becomes a :class:`DetcliError` naming the file.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from detcli.errors import DetcliError

TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically; ``write(f)`` fills the binary file object ``f``.

    Raises:
        DetcliError: the folder cannot be created or written (read-only, full disk, …); the previous
            content of ``path`` is kept.
    """
    path = Path(path)
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except OSError as e:
        _remove_quietly(tmp)
        reason = e.strerror or str(e) or type(e).__name__
        raise DetcliError(f"cannot write {path}: {reason}; the previous file (if any) is unchanged") from None
    except BaseException:
        _remove_quietly(tmp)
        raise
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, payload: Any, indent: int | None = 2) -> Path:
    """``atomic_write`` of a JSON document (``default=str`` for paths and the like), newline-terminated."""
    return atomic_write_text(path, json.dumps(payload, indent=indent, default=str) + "\n")


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries left by an interrupted :func:`atomic_write` in ``folder``; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file():
            _remove_quietly(str(tmp))
            removed.append(tmp)
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _remove_quietly(tmp: str | None) -> None:
    if tmp is not None:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _fsync_dir(folder: Path) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
