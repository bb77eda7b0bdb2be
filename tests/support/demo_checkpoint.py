"""A detcli checkpoint written in-process (no training), for tests of predict / eval outputs."""
from __future__ import annotations

from pathlib import Path

import torch


def write_confident_checkpoint(root: Path, name: str) -> tuple[Path, Path, Path]:
    """NanoDet-Plus-m for the 5 demo classes with class logits biased to 0 (scores near 0.5, so every image gets
    detections), trained size 64×64, the 4-image demo val split (made under ``root``) as its dataset.

    Returns:
        (checkpoint ``root/name``, val annotation file, val image folder).
    """
    from detcli.config.loader import load_preset
    from detcli.data.dataset_config import DatasetConfig
    from detcli.data.demo import CLASSES, ensure_demo_dataset
    from detcli.checkpoints.io import FORMAT, save_checkpoint
    from detcli.models import build_model

    demo = ensure_demo_dataset(root / "demo", num_train=8, num_val=4)
    val_ann, val_dir = demo / "annotations" / "instances_val.json", demo / "val"
    preset, _ = load_preset("nanodet-plus-m")
    torch.manual_seed(0)
    model = build_model(preset, len(CLASSES), pretrained=False)
    with torch.no_grad():
        for conv in model.head.gfl_cls:
            conv.bias[: len(CLASSES)] = 0.0
    path = root / name
    save_checkpoint(path, {
        "format": FORMAT, "epoch": 1, "model": model.state_dict(), "ema": None,
        "preset": preset.model_dump(mode="json"), "input_size": [64, 64],
        "class_names": list(CLASSES), "cat_ids": list(range(1, len(CLASSES) + 1)),
        "dataset": {"config": DatasetConfig.from_files(val_ann, val_dir).model_dump(mode="json")},
    })
    return path, val_ann, val_dir
