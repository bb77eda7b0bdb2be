"""Golden weights written as the official tools save them, so tests load them through the real ``--weights`` path."""
from __future__ import annotations

from pathlib import Path

import torch


def write_official_checkpoint(doc: dict, state: dict[str, torch.Tensor], directory: Path) -> tuple[Path, dict]:
    """``state`` in the official checkpoint format of the fixture's family (the file and what it holds).

    Args:
        doc: a golden fixture's ``.json`` (``family``, ``preset``, ``source``).
        state: the official state dict (official key names).
        directory: where the file goes (``<preset>.ckpt`` for NanoDet's Lightning checkpoints, ``.pth`` else).
    """
    if doc["family"] == "nanodet":  # Lightning checkpoint of the official trainer
        path = directory / f"{doc['preset']}.ckpt"
        ckpt = {"epoch": 0, "global_step": 0, "pytorch-lightning_version": "1.9.5",
                "state_dict": {f"model.{k}": v for k, v in state.items()}}
    elif doc["family"] == "defcn":  # cvpods DefaultCheckpointer
        path = directory / f"{doc['preset']}.pth"
        ckpt = {"model": state, "iteration": 270000}
    else:  # MMEngine checkpoint
        path = directory / f"{doc['preset']}.pth"
        ckpt = {"meta": {"mmdet_version": doc["source"].get("mmdet", "3.3.0"), "epoch": 12, "iter": 0},
                "state_dict": state}
    torch.save(ckpt, path)
    return path, ckpt
