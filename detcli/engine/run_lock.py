"""One training process per run folder: an advisory lock on ``<run>/.lock``, held while the run writes there.

A second ``train --exist-ok`` or ``train --resume`` into a folder in use is refused at once, naming the folder
and the process that holds it, instead of interleaving its files with the running one. The lock is
``fcntl.flock`` on the lock file: the kernel releases it when the holder exits in any way (kill -9 included),
so a lock file left behind by a dead run never blocks. The holder writes its pid, host, start time and command
into the file for the message; the file is removed when the run ends. Where ``fcntl`` does not exist (Windows)
the lock is a no-op.
"""
from __future__ import annotations

import json
import os
import shlex
import socket
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from detcli.errors import DetcliError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class RunFolderInUse(DetcliError):
    """The run folder is locked by another live process."""


class RunLock:
    """``with RunLock(run_dir, argv):`` holds ``run_dir``'s lock for the block.

    Raises (on entering):
        RunFolderInUse: another process holds it (its pid and command are named when it wrote them).
    """

    def __init__(self, run_dir: str | Path, argv: Sequence[str] = ()) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self.argv = [str(a) for a in argv]
        self._fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()

    def acquire(self) -> None:
        if fcntl is None:
            return
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise RunFolderInUse(
                    f"{self.run_dir} is in use by another training run ({holder}); wait for it to end or stop it, "
                    "or train into another folder (--name)"
                ) from None
            if _same_file(fd, self.path):  # not a lock file its last holder removed while we opened it
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "argv": self.argv}
        os.write(fd, (json.dumps(holder) + "\n").encode())
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file, then let go of it (a waiting opener of the removed file tries again)."""
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(self._fd)  # releases the flock
        self._fd = None

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise DetcliError(f"cannot lock the run folder {self.run_dir}: {e.strerror or e}") from None


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _read_holder(fd: int) -> str:
    """'process 123 on host: detcli train …' from the lock file, or what is known when it holds nothing yet."""
    try:
        info = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except (OSError, ValueError):
        info = {}
    if not isinstance(info, dict) or "pid" not in info:
        return "a process that has not written its id yet"
    argv = [str(a) for a in info.get("argv") or []]
    command = f": detcli {shlex.join(argv[1:])}" if len(argv) > 1 else ""
    return f"process {info['pid']} on {info.get('host', '?')}{command}"


__all__ = ["LOCK_NAME", "RunLock", "RunFolderInUse"]
