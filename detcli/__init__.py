"""detcli: an object-detection toolbox (NanoDet-Plus, RTMDet, RetinaNet, DeFCN) for the command line and Python.

The Python API (:mod:`detcli.api`) is reachable from here: ``detcli.load``, ``detcli.train``, ``detcli.Model``,
``detcli.Result``, … (imported on first use: ``import detcli`` loads no torch).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    import detcli.api as api

    if name in api.__all__:
        return getattr(api, name)
    raise AttributeError(f"module 'detcli' has no attribute {name!r}")
