"""Run the installed CLI as a user does, ``python -m detcli …`` in a subprocess (shared by the CLI tests).

``run_cli`` starts a fresh interpreter per command. ``run_cli_forked`` gives the same result faster: one helper
process per test session imports torch, torchvision and detcli once, and forks a child per command. The child
is ``python -m detcli ARGS`` in every way the tests look at: its own process, working directory, environment,
umask, stdout/stderr (files, not a terminal), exit code, and a traceback printed as the interpreter prints one. It
only skips the 3–7 s of imports that every fresh interpreter pays. The helper runs no torch operation itself,
so each child starts with torch as untouched as a fresh interpreter has it. Keep a fresh-interpreter
``run_cli`` where a test is about the start of the program itself.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import subprocess
import sys
import tempfile
from pathlib import Path


def _env(cwd: Path, threads: int, env_vars: dict[str, str]) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "DETCLI_HOME": str(cwd / "home"), **env_vars}


def run_cli(*args: str, cwd: Path, timeout: int = 300, threads: int = 1, **env_vars: str) -> subprocess.CompletedProcess:
    """``detcli ARGS`` in ``cwd`` with its own ``DETCLI_HOME`` (``cwd/home``); stdout/stderr captured as text."""
    return subprocess.run(
        [sys.executable, "-m", "detcli", *args], cwd=cwd, env=_env(cwd, threads, env_vars), capture_output=True,
        text=True, timeout=timeout, check=False,
    )


def run_cli_forked(*args: str, cwd: Path, timeout: int = 300, threads: int = 1,
                   **env_vars: str) -> subprocess.CompletedProcess:
    """As :func:`run_cli`, in a child forked from the session's helper process (imports already done)."""
    return _server().run([str(a) for a in args], Path(cwd), _env(Path(cwd), threads, env_vars), timeout)


class _Server:
    def __init__(self) -> None:
        self.tmp = tempfile.TemporaryDirectory(prefix="detcli-cli-")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # each child sets its own thread count
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=open(os.path.join(self.tmp.name, "server.err"), "w"), env=env,
                                     text=True, bufsize=1)
        self.count = 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def run(self, args: list[str], cwd: Path, env: dict[str, str], timeout: int) -> subprocess.CompletedProcess:
        self.count += 1
        out, err = (os.path.join(self.tmp.name, f"{self.count}.{s}") for s in ("out", "err"))
        umask = os.umask(0o022)
        os.umask(umask)  # read back: a subprocess inherits the caller's umask
        request = {"args": args, "cwd": str(cwd), "env": env, "umask": umask, "stdout": out, "stderr": err,
                   "timeout": timeout}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout + 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            self.close()
            log = Path(self.tmp.name, "server.err").read_text()[-3000:]
            raise RuntimeError(f"the CLI helper process gave no answer for detcli {' '.join(args)}:\n{log}")
        reply = json.loads(line)
        if reply.get("timed_out"):
            raise subprocess.TimeoutExpired(["detcli", *args], timeout)
        stdout, stderr = (Path(p).read_text(errors="replace") for p in (out, err))
        for p in (out, err):
            os.unlink(p)
        return subprocess.CompletedProcess(["detcli", *args], reply["returncode"], stdout, stderr)

    def close(self) -> None:
        if self.alive():
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.tmp.cleanup()


_SERVER: _Server | None = None


def _server() -> _Server:
    global _SERVER
    if _SERVER is None or not _SERVER.alive():
        _SERVER = _Server()
    return _SERVER


@atexit.register
def _close_server() -> None:
    if _SERVER is not None:
        _SERVER.close()


# ---------------------------------------------------------------------------------------------- helper process
def _child(request: dict) -> None:
    """In the forked child: become ``python -m detcli ARGS``; never returns."""
    import runpy
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        os.umask(request["umask"])
        os.environ.clear()
        os.environ.update(request["env"])
        hook = os.environ.get("DETCLI_TEST_CHILD_HOOK")  # "module:function" of tests/support/, run first (write_faults)
        if hook:
            import importlib

            module, _, function = hook.partition(":")
            getattr(importlib.import_module(module), function)()
        import torch

        torch.set_num_threads(int(request["env"]["OMP_NUM_THREADS"]))  # what OMP_NUM_THREADS gives at start-up
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        for fd, path in ((1, request["stdout"]), (2, request["stderr"])):
            target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.argv = [str(Path(sys.modules["detcli"].__file__).with_name("__main__.py")), *request["args"]]
        sys.path[0] = request["cwd"]  # as ``python -m`` puts the working directory first
        try:
            runpy.run_module("detcli", run_name="__main__", alter_sys=True)
            code = 0
        except SystemExit as e:  # the exit status the interpreter makes of it
            if e.code is None:
                code = 0
            elif isinstance(e.code, int):
                code = e.code
            else:
                print(e.code, file=sys.stderr)
                code = 1
        except BaseException:  # noqa: BLE001 - printed as the interpreter prints an uncaught exception
            traceback.print_exc()
            code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001
                pass
        os._exit(code)


def _serve() -> None:
    import signal
    import time

    import torch  # noqa: F401 - what every command imports: done once, before forking
    import torchvision  # noqa: F401

    import detcli.api.model  # noqa: F401
    import detcli.app.evaluate  # noqa: F401
    import detcli.app.export  # noqa: F401
    import detcli.app.predict  # noqa: F401
    import detcli.app.train  # noqa: F401
    import detcli.cli  # noqa: F401

    replies = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        replies.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            _child(request)
        deadline, timed_out = time.monotonic() + request["timeout"], False
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                _, status = os.waitpid(pid, 0)
                timed_out = True
                break
            time.sleep(0.01)
        replies.write(json.dumps({"returncode": os.waitstatus_to_exitcode(status), "timed_out": timed_out}) + "\n")
        replies.flush()


if __name__ == "__main__":
    _serve()
