"""OpenMP waiting policy of a detcli process, set before torch loads its OpenMP runtime.

By default GNU OpenMP (torch's CPU thread pool on Linux) lets a thread that finishes its part of a parallel
region spin for a while before sleeping. When the cores are shared — a DataLoader worker, another run, a
virtual machine whose CPUs are stolen by the host — a spinning thread holds a core that the thread everyone
waits for needs, and a CPU training step becomes several times slower: 4.4× for the NanoDet-Plus demo step on
a shared 2-core machine (``benchmarks/demo_threads_workers.py``). ``OMP_WAIT_POLICY=PASSIVE`` makes idle
threads sleep at once. Numbers do not change (same threads, same work split), and a value the user set wins.
"""
from __future__ import annotations

import os
import sys

WAIT_POLICY_ENV = "OMP_WAIT_POLICY"


def prefer_passive_waiting() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set already; True when this call set it.

    Only effective before ``torch`` is first imported (the runtime reads it when it loads); later it changes
    nothing, and nothing is set then (the process' threads keep the policy they have).
    """
    if WAIT_POLICY_ENV in os.environ or "torch" in sys.modules:
        return False
    os.environ[WAIT_POLICY_ENV] = "PASSIVE"
    return True


__all__ = ["WAIT_POLICY_ENV", "prefer_passive_waiting"]
