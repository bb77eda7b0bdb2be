"""Run the installed CLI as a user does: ``python -m detcli …`` in a subprocess (shared by the CLI tests)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def run_cli(*args: str, cwd: Path, timeout: int = 300, threads: int = 1, **env_vars: str) -> subprocess.CompletedProcess:
    """``detcli ARGS`` in ``cwd`` with its own ``DETCLI_HOME`` (``cwd/home``); stdout/stderr captured as text."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "DETCLI_HOME": str(cwd / "home"), **env_vars}
    return subprocess.run(
        [sys.executable, "-m", "detcli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )
