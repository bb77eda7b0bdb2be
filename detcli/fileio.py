"""Atomic file writes: the one place detcli writes a file that must never be seen half-written.

A temporary file in the target's folder is written, flushed and fsynced, given the usual permissions
(0666 minus the umask, so 0644 under the common umask 022, not ``mkstemp``'s 0600), then renamed over
the target with ``os.replace``. A crash or an error mid-write leaves the previous file untouched and no
temporary behind (a kill leaves its temporary: :func:`remove_stale_temporaries`). An ``OSError`` (read-only
folder, full disk), also one that a writer wraps in another exception (``torch.save`` raises ``RuntimeError``
after ENOSPC, the ``OSError`` as its context), becomes a :class:`~detcli.errors.WriteError` naming the file and
saying when the disk is full.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, BinaryIO

from detcli.errors import DetcliError, WriteError


# ---------------------------------------------------------------------------------------------- reading: regular files only
_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


class NotRegularFile(OSError):
    """The path exists but is not a regular file (``strerror`` says what it is)."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(errno.EINVAL, f"not a regular file ({kind})", str(path))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def is_regular(path: str | Path) -> bool:
    """True when ``path`` (symlinks followed) is a regular file; False when missing, unreadable or anything else."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return False


def open_regular(path: str | Path) -> BinaryIO:
    """Open ``path`` for binary reading, refusing anything but a regular file before it is opened.

    Raises:
        NotRegularFile: a folder, FIFO, device or socket (checked with ``stat``, so a FIFO is never opened).
        OSError: missing, unreadable, name too long, …
    """
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise NotRegularFile(path, _kind(st.st_mode))
    # O_NONBLOCK: should the file be swapped for a FIFO after the stat, the open still returns at once
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
                 | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(path, _kind(mode))
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular_bytes(path: str | Path) -> bytes:
    """The bytes of a regular file (see :func:`open_regular`)."""
    with open_regular(path) as f:
        return f.read()


# ---------------------------------------------------------------------------------------------- writing
TEMP_SUFFIX = ".tmp"


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` atomically; ``write(f)`` fills the binary file object ``f``.

    Raises:
        WriteError: the folder cannot be created or written (read-only, full disk, …), also when ``write``
            raises an exception caused by an ``OSError``; the previous content of ``path`` is kept.
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
    except BaseException as e:
        _remove_quietly(tmp)
        cause = _os_error(e) if isinstance(e, Exception) else None
        if cause is None:
            raise
        raise WriteError(f"cannot write {path}: {_reason(cause)}; the previous file (if any) is unchanged") from None
    _fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    """``atomic_write`` of UTF-8 text."""
    data = text.encode("utf-8")
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_json(path: str | Path, payload: Any, indent: int | None = 2, allow_nan: bool = True) -> Path:
    """``atomic_write`` of a JSON document (``default=str`` for paths and the like), newline-terminated.
    ``allow_nan=False``: strict JSON; a NaN or infinity in ``payload`` is a :class:`WriteError`, nothing written."""
    try:
        text = json.dumps(payload, indent=indent, default=str, allow_nan=allow_nan)
    except ValueError as e:  # "Out of range float values are not JSON compliant"
        raise WriteError(f"cannot write {path}: a value is NaN or infinite, which JSON cannot hold ({e}); "
                         "nothing was written") from None
    return atomic_write_text(path, text + "\n")


def output_folder(folder: str | Path, flag: str) -> Path:
    """``folder`` created (with its parents) for a command's output; ``flag`` (e.g. ``"--output out/"``) names it.

    Raises:
        DetcliError: ``folder`` is a file, or cannot be created (read-only parent, …).
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise DetcliError(f"{flag}: {folder} is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DetcliError(f"{flag}: cannot create the folder {folder} ({e.strerror or e})") from None
    return folder


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Delete temporaries left by an interrupted :func:`atomic_write` in ``folder``; returns what was removed."""
    removed = []
    for tmp in Path(folder).glob(f".*{TEMP_SUFFIX}"):
        if tmp.is_file():
            _remove_quietly(str(tmp))
            removed.append(tmp)
    return removed


def _os_error(e: BaseException) -> OSError | None:
    """``e`` itself when it is an ``OSError``, else the first ``OSError`` it was raised from or while handling
    (``torch.save`` turns a failed ``f.write`` into ``RuntimeError: … unexpected pos …``)."""
    seen: set[int] = set()
    stack: list[BaseException | None] = [e]
    while stack:
        cur = stack.pop()
        if cur is None or id(cur) in seen:
            continue
        if isinstance(cur, OSError):
            return cur
        seen.add(id(cur))
        stack += [cur.__context__, cur.__cause__]
    return None


def _reason(e: OSError) -> str:
    reason = e.strerror or str(e) or type(e).__name__
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{reason} (the disk is full: free some space on it)"
    return reason


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
