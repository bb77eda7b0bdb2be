"""A toy detector, dataset and training config for trainer tests that need no real network."""
from __future__ import annotations

import contextlib
import io
import random

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from detcli.config.schema import EMAConfig, OptimizerConfig, ScheduleConfig, TrainConfig, WarmupConfig
from detcli.data.collate import collate
from detcli.data.loader import build_dataloader
from detcli.models.base import Detector
from detcli.structures import Detections, ImageMeta


CAT_IDS = [1, 3]


NAMES = ["a", "b"]


class ToyDetector(Detector):
    """Conv + BN + linear classifier of "which classes are present"; predicts one fixed box per class."""

    strides = (1,)
    num_classes = 2

    def __init__(self, spare: bool = False, nan_from_epoch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.cls = nn.Linear(4, 2)
        self.spare = nn.Linear(2, 2) if spare else None  # never used by the loss
        self.nan_from_epoch = nan_from_epoch

    def forward(self, images):
        return self.cls(F.relu(self.bn(self.conv(images))).mean((2, 3)))

    def loss(self, images, targets, metas, epoch):
        logits = self(images)
        present = torch.stack([torch.bincount(t.labels, minlength=2).clamp(max=1) for t in targets]).float()
        loss_cls = F.binary_cross_entropy_with_logits(logits, present)
        if self.nan_from_epoch is not None and epoch >= self.nan_from_epoch:
            loss_cls = loss_cls * float("nan")
        return {"loss_cls": loss_cls, "loss_reg": 0.01 * self.conv.weight.pow(2).sum()}

    def _unused(self, *args, **kwargs):
        raise AssertionError("the engine only calls loss and predict")

    priors = decode_boxes = encode_boxes = decode_scores = assign = _unused

    def predict(self, images, metas, cfg=None):  # the Predictor contract (detcli.inference.predictor)
        scores = self(images).sigmoid()
        box = torch.tensor([[2.0, 2.0, 10.0, 10.0]], device=images.device)
        return [Detections(box.repeat(2, 1), s, torch.arange(2, device=images.device)) for s in scores]


class ToyDataset(torch.utils.data.Dataset):
    """8 random 16×16 images, one box each; loading draws from Python, NumPy and torch RNGs."""

    def __init__(self, n: int = 8):
        self.n = n
        self.cat_ids, self.class_names = list(CAT_IDS), list(NAMES)
        self._coco = None

    def __len__(self):
        return self.n

    def __getitem__(self, idx):
        img = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(idx))
        if torch.rand(()) < 0.5:
            img = img.flip(-1)
        img = img + float(np.random.normal(0, 0.1)) + random.random() * 0.01
        meta = ImageMeta(idx + 1, f"{idx}.jpg", (16, 16), (16, 16), np.eye(3).tolist())
        return {"img": img, "boxes": torch.tensor([[2.0, 2.0, 10.0, 10.0]]), "labels": torch.tensor([idx % 2]), "meta": meta}

    @property
    def coco(self):
        if self._coco is None:
            from pycocotools.coco import COCO

            api = COCO()
            api.dataset = {
                "images": [{"id": i + 1, "file_name": f"{i}.jpg", "width": 16, "height": 16} for i in range(self.n)],
                "annotations": [
                    {"id": i + 1, "image_id": i + 1, "category_id": CAT_IDS[i % 2], "bbox": [2, 2, 8, 8],
                     "area": 64.0, "iscrowd": 0}
                    for i in range(self.n)
                ],
                "categories": [{"id": c, "name": n} for c, n in zip(CAT_IDS, NAMES)],
            }
            with contextlib.redirect_stdout(io.StringIO()):
                api.createIndex()
            self._coco = api
        return self._coco


class _Bar:
    def __init__(self, iterable):
        self.iterable, self.postfix = iterable, {}

    def __iter__(self):
        return iter(self.iterable)

    def update_postfix(self, values):
        self.postfix = dict(values)


class RecordingReporter:
    """Test double of detcli.console.Reporter."""

    def __init__(self):
        self.lines, self.rows, self.tables = [], [], []

    def info(self, msg):
        self.lines.append(msg)

    warn = info

    def print(self, renderable=""):
        pass

    def progress(self, iterable, total=None, description="", run=None):
        return _Bar(iterable)

    def epoch_row(self, metrics):
        self.rows.append(dict(metrics))

    def table(self, title, columns, rows):
        self.tables.append((title, columns, rows))


def train_cfg(epochs: int = 2) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, batch=2, workers=0,
        optimizer=OptimizerConfig(type="adamw", lr=0.01, weight_decay=0.05, norm_decay=False),
        warmup=WarmupConfig(steps=6, ratio=0.1),  # 4 iterations per epoch: spills into epoch 2 (capped below 3 epochs)
        schedule=ScheduleConfig(type="cosine", eta_min=0.001),
        grad_clip=1.0, ema=EMAConfig(decay=0.9, gamma=4.0), val_interval=1,
    )


def loaders(distributed: bool = False, batch: int = 2):
    train_ds, val_ds = ToyDataset(), ToyDataset()
    train = build_dataloader(train_ds, batch, 0, True, True, 7, distributed, collate)
    val = build_dataloader(val_ds, 4, 0, False, False, 7, distributed, collate)
    return train, val, val_ds
