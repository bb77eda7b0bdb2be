"""DistributedDataParallel around a detector's training graph.

DDP only synchronises gradients of what runs through its ``forward``; a detector's training graph is
``Detector.loss``, so :class:`TrainingGraph` exposes ``loss`` as ``forward`` and that module is wrapped.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from detcli.models.base import Detector
from detcli.structures import Batch


class TrainingGraph(nn.Module):
    """``forward(images, targets, metas, epoch) = detector.loss(...)``: the module DDP wraps."""

    def __init__(self, detector: Detector) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: Tensor, targets: list, metas: list, epoch: int) -> dict[str, Tensor]:
        return self.detector.loss(images, targets, metas, epoch)


def unused_parameters(detector: Detector, batch: Batch, epoch: int) -> list[str]:
    """Names of trainable parameters that get no gradient from one training step on ``batch``.

    A dry run: buffers (BN statistics) and gradients are put back afterwards. The caller saves and restores
    random states around it. Used once before DDP wrapping to choose ``find_unused_parameters``.
    """
    buffers = {name: b.detach().clone() for name, b in detector.named_buffers()}
    grads = {name: p.grad for name, p in detector.named_parameters()}
    for p in detector.parameters():
        p.grad = None
    try:
        losses = detector.loss(batch.images, batch.targets, batch.metas, epoch)
        sum(losses.values()).backward()
        return [n for n, p in detector.named_parameters() if p.requires_grad and p.grad is None]
    finally:
        with torch.no_grad():
            for name, b in detector.named_buffers():
                b.copy_(buffers[name])
        for name, p in detector.named_parameters():
            p.grad = grads[name]


def wrap_ddp(detector: Detector, device: torch.device, find_unused: bool) -> DistributedDataParallel:
    """DDP over :class:`TrainingGraph` (parameters of rank 0 are broadcast to every rank here)."""
    ids: Any = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(
        TrainingGraph(detector), device_ids=ids, output_device=ids[0] if ids else None,
        find_unused_parameters=find_unused,
    )


__all__ = ["TrainingGraph", "unused_parameters", "wrap_ddp"]
