"""An 'official' (bare state dict) checkpoint of a preset with varied, partly confident scores."""
from __future__ import annotations

import re
from pathlib import Path

import torch
from tests.golden.weights import calibrate_batchnorms_

from detcli.config.loader import load_preset
from detcli.models import build_model


def official_checkpoint(preset_path: Path, folder: Path) -> Path:
    """An 'official' (bare state dict) checkpoint with varied, partly confident class scores."""
    preset, _ = load_preset(preset_path)
    torch.manual_seed(0)
    model = build_model(preset, 80, pretrained=False)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "head." in name and p.ndim > 1:  # towers and predictors start at N(0, 0.01²): no spatial contrast
                p.add_(torch.randn(p.shape, generator=gen) / p[0].numel() ** 0.5)
            elif re.search(r"cls(\.\d+)?\.bias$", name):
                p.add_(torch.randn(p.shape, generator=gen) + 2.0)
    # BN statistics of what each BN sees (a fresh deep SiLU backbone + neck, RTMDet's, shrinks the features so
    # far that RTMDet-tiny/s predict 1e-9 px boxes)
    calibrate_batchnorms_(model, torch.randn(1, 3, 128, 128, generator=gen))
    path = folder / f"{preset_path.stem}.pth"
    torch.save({"state_dict": model.state_dict()}, path)
    return path
