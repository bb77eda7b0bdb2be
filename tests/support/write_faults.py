"""Faults at detcli's atomic writes, injected into a CLI child (tests only: detcli never imports this module).

``run_cli_forked(..., DETCLI_TEST_CHILD_HOOK="write_faults:install", DETCLI_WRITE_FAULT=..., DETCLI_WRITE_LOG=...)``
makes the child (tests/support/cli_subprocess.py runs the hook before the command):

* ``DETCLI_WRITE_LOG=<file>``: append one line per completed atomic write, the target's path relative to the
  child's working directory, in the order of the writes;
* ``DETCLI_WRITE_FAULT=<kind>:<name>[:<n>]``: at the n-th (default 1st) atomic write of a file named <name>:

  - ``kill-after``: SIGKILL the process right after the file is in place (renamed over its target);
  - ``kill-during``: SIGKILL it during the write: the temporary is complete, the rename not done;
  - ``enospc``: the write fails as on a full disk: the file's ``write`` raises ENOSPC once 64 KiB are written,
    or at the first write of a smaller file's final flush (``torch.save`` then raises RuntimeError, as it does).

Only :mod:`detcli.fileio` is patched (its ``os`` and ``tempfile`` modules are replaced by proxies), so only atomic
writes count.
"""
from __future__ import annotations

import errno
import os
import signal
import tempfile
from pathlib import Path
from typing import Any

ENOSPC_AFTER = 64 * 1024


def install() -> None:
    from detcli import fileio

    fault = os.environ.get("DETCLI_WRITE_FAULT", "")
    log = os.environ.get("DETCLI_WRITE_LOG")
    kind, name, n = (fault.split(":") + ["1"])[:3] if fault else ("", "", "1")
    fileio.os = faulty = _FaultyOs(kind, name, int(n), Path(log) if log else None)
    fileio.tempfile = _NamedTemporaries(faulty.temporaries)


def _target_name(tmp: str) -> str:
    """``.last.pt.abc123.tmp`` (an atomic_write temporary) → ``last.pt``."""
    return Path(tmp).name[1:].rsplit(".", 2)[0]


class _NamedTemporaries:
    """Stands for the ``tempfile`` module inside detcli.fileio: remembers the path of each ``mkstemp`` fd."""

    def __init__(self, paths: dict[int, str]) -> None:
        self.paths = paths

    def __getattr__(self, attr: str) -> Any:
        return getattr(tempfile, attr)

    def mkstemp(self, *args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, path = tempfile.mkstemp(*args, **kwargs)
        self.paths[fd] = path
        return fd, path


class _FaultyOs:
    """Stands for the ``os`` module inside detcli.fileio."""

    def __init__(self, kind: str, name: str, n: int, log: Path | None) -> None:
        self.kind, self.name, self.n, self.log = kind, name, n, log
        self.seen: dict[str, int] = {}
        self.temporaries: dict[int, str] = {}  # fd → path, filled by _NamedTemporaries

    def __getattr__(self, attr: str) -> Any:
        return getattr(os, attr)

    def _due(self, name: str) -> bool:
        return name == self.name and self.seen.get(name, 0) + 1 == self.n

    def fdopen(self, fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        f = os.fdopen(fd, mode, *args, **kwargs)
        name = _target_name(self.temporaries.pop(fd, ""))
        return _FullDisk(f) if self.kind == "enospc" and self._due(name) else f

    def replace(self, src: str, dst: str) -> None:
        name = Path(dst).name
        if self.kind == "kill-during" and self._due(name):
            os.kill(os.getpid(), signal.SIGKILL)
        os.replace(src, dst)
        due = self._due(name)
        self.seen[name] = self.seen.get(name, 0) + 1
        if self.log is not None:
            with open(self.log, "a") as f:
                f.write(os.path.relpath(dst) + "\n")
        if self.kind == "kill-after" and due:
            os.kill(os.getpid(), signal.SIGKILL)


class _FullDisk:
    """A binary file on a disk that fills up: ``write`` fails with ENOSPC past ENOSPC_AFTER bytes, ``flush``
    fails when anything is still unwritten."""

    def __init__(self, f: Any) -> None:
        self.f, self.written, self.pending = f, 0, False

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.f, attr)

    def __enter__(self) -> "_FullDisk":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.f.close()

    def write(self, data: Any) -> int:
        size = len(memoryview(data))
        if self.written + size > ENOSPC_AFTER:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.written += size
        self.pending = True
        return self.f.write(data)

    def flush(self) -> None:
        if self.pending:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.f.flush()
