"""The CPUs a process gets, how loaded they are, and the OpenMP wait policy chosen from that before torch loads.

OpenMP (libgomp, which torch's CPU kernels run on) lets idle threads spin for a while before sleeping
(``OMP_WAIT_POLICY`` unset, or ``ACTIVE``). On an idle machine that is the fast choice; on a machine whose
load is above its CPUs the spinning threads steal the time the working ones need: a NanoDet-Plus training
iteration ran 2× slower at load 5 and 9× slower at load 10 on 2 CPUs, and ``PASSIVE`` (threads sleep at once)
made the step 4.3× faster at load ≈ 3, but 1.39× slower on the idle machine (benchmarks/speed/demo_threads_workers.py).
libgomp reads the variable once, when it is loaded, so :func:`choose_wait_policy` runs before torch is imported.
"""
from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

#: the line the run prints (in its header) when :func:`choose_wait_policy` chose PASSIVE; None otherwise
wait_policy_note: str | None = None


def available_cpus() -> int:
    """CPUs this process may run on: its affinity mask where the OS has one (Linux), else ``os.cpu_count()``."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def load_average() -> float | None:
    """The 1-minute load average (runnable processes), or None where the OS has none (Windows)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def torch_loaded() -> bool:
    """Whether torch (and with it libgomp, which has read ``OMP_WAIT_POLICY`` already) is imported."""
    return "torch" in sys.modules


def choose_wait_policy(environ: MutableMapping[str, str] = os.environ) -> str | None:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` in ``environ`` when the machine is busier than the CPUs of this process
    (1-minute load above :func:`available_cpus`), the user has not set the variable, and torch (with libgomp)
    is not loaded yet; returns the line saying so (also kept in :data:`wait_policy_note`), else None.
    Child processes (DataLoader workers, DDP workers) inherit the choice."""
    global wait_policy_note
    wait_policy_note = None
    if "OMP_WAIT_POLICY" in environ or torch_loaded():
        return None
    load, cpus = load_average(), available_cpus()
    if load is None or load <= cpus:
        return None
    environ["OMP_WAIT_POLICY"] = "PASSIVE"
    wait_policy_note = (
        f"the CPUs are shared: 1-minute load {load:.1f} on the {cpus} CPU(s) of this process, so OpenMP threads "
        "sleep while they wait (OMP_WAIT_POLICY=PASSIVE, several times faster under load); set "
        "OMP_WAIT_POLICY=ACTIVE to keep busy-waiting"
    )
    return wait_policy_note


__all__ = ["available_cpus", "choose_wait_policy", "load_average", "torch_loaded", "wait_policy_note"]
