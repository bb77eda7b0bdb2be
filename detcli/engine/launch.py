"""Devices and process launch: one process, ``torch.multiprocessing.spawn`` workers, or torchrun.

* ``--device 0,1`` → :func:`launch_ddp` spawns one process per GPU (NCCL) on this machine.
* Under ``torchrun`` (``LOCAL_RANK`` set) every process is already there: :func:`init_from_env`.
* On CPU, ``DETCLI_DDP_CPU_PROCS=N`` (N ≥ 2) runs N gloo processes: the way the tests exercise the
  DDP code path without a GPU (``DETCLI_DDP_CPU_PROCS=2 detcli train --device cpu …``).
"""
from __future__ import annotations

import os
import re
import socket
from datetime import timedelta
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from detcli import errors
from detcli.errors import DetcliError

CPU_PROCS_ENV = "DETCLI_DDP_CPU_PROCS"
# Generous: rank 0 may scan a large dataset while the others wait at the first collective.
PROCESS_GROUP_TIMEOUT = timedelta(hours=3)


def cpu_processes() -> int:
    """Processes for CPU training: ``DETCLI_DDP_CPU_PROCS`` (default 1)."""
    raw = os.environ.get(CPU_PROCS_ENV, "1").strip() or "1"
    if not raw.isdigit() or int(raw) < 1:
        raise DetcliError(f"{CPU_PROCS_ENV}={raw!r}: expected a positive integer")
    return int(raw)


def process_count(device_type: str, ids: Sequence[int]) -> int:
    """Training processes for a parsed device: one per GPU id; on CPU ``DETCLI_DDP_CPU_PROCS``."""
    if device_type == "cuda":
        return max(1, len(ids))
    return cpu_processes() if device_type == "cpu" else 1


def backend_for(device_type: str) -> str:
    return "nccl" if device_type == "cuda" else "gloo"


def torchrun_env() -> bool:
    """True when started by torchrun (or any launcher that sets ``LOCAL_RANK`` and ``WORLD_SIZE``)."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def process_device(device_type: str, ids: Sequence[int]) -> torch.device:
    """The device of this process: GPU ``ids[LOCAL_RANK]`` (or ``LOCAL_RANK`` under torchrun), else CPU/MPS."""
    if device_type != "cuda":
        return torch.device(device_type)
    lr = local_rank()
    index = ids[lr] if lr < len(ids) else lr
    return torch.device("cuda", index)


def init_from_env(backend: str, device: torch.device | None = None) -> None:
    """``init_process_group`` from the environment torchrun set (no-op when already initialised)."""
    if dist.is_initialized():
        return
    if device is not None and device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend=backend, init_method="env://", timeout=PROCESS_GROUP_TIMEOUT)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch_ddp(
    fn: Callable[..., Any],
    nprocs: int,
    backend: str,
    args: tuple = (),
    device_type: str = "cpu",
    device_ids: Sequence[int] = (),
) -> None:
    """Run ``fn(*args)`` in ``nprocs`` spawned processes joined in one process group on this machine.

    Each worker gets ``RANK``/``LOCAL_RANK``/``WORLD_SIZE``/``MASTER_ADDR``/``MASTER_PORT`` (a free port),
    sets its GPU (``device_ids[rank]``) and calls ``init_process_group(backend)`` before ``fn``. ``fn`` and
    ``args`` must be picklable (module-level function). A :class:`DetcliError` raised in a worker is raised
    again here with its message.
    """
    port = free_port()
    try:
        mp.spawn(_worker, args=(fn, nprocs, backend, tuple(args), device_type, list(device_ids), port), nprocs=nprocs)
    except mp.ProcessRaisedException as e:
        raise _as_detcli_error(str(e)) or e from None


def _worker(
    rank: int, fn: Callable[..., Any], world: int, backend: str, args: tuple,
    device_type: str, device_ids: list[int], port: int,
) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world)
    )
    if device_type == "cpu":
        from detcli.data.loader import available_cpus

        torch.set_num_threads(max(1, available_cpus() // world))
    init_from_env(backend, process_device(device_type, device_ids))
    try:
        fn(*args)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _as_detcli_error(traceback_text: str) -> DetcliError | None:
    """The DetcliError (subclass kept) named on the last line of a worker's traceback, if any."""
    for line in reversed(traceback_text.strip().splitlines()):
        m = re.match(r"^(?:[\w.]*\.)?(\w+Error): (.*)$", line.strip())
        if m:
            cls = getattr(errors, m.group(1), None)
            if isinstance(cls, type) and issubclass(cls, DetcliError):
                return cls(m.group(2))
            return None
    return None


__all__ = [
    "CPU_PROCS_ENV",
    "cpu_processes",
    "process_count",
    "backend_for",
    "torchrun_env",
    "local_rank",
    "process_device",
    "init_from_env",
    "free_port",
    "launch_ddp",
]
