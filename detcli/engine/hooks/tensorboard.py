"""TensorBoard logging of a run (``detcli train --tensorboard``, ``train.tensorboard: true``): event files under
``<run_dir>/tensorboard/``, read with ``tensorboard --logdir <run_dir>/tensorboard``. ``results.csv`` stays the
run's own record. Needs the optional extra: ``pip install "detcli[tensorboard]"``.

Logged on rank 0, the global step being the iteration of the whole run (``epoch × iterations per epoch + it``):

* ``train/<loss term>``, ``train/loss`` (their sum) and ``lr/pg0`` every iteration;
* ``metrics/<COCO stat>`` (AP50-95, AP50, …) after every validation, at the epoch's last step;
* ``train_batch/<i>``: the first training batches as the network gets them (the ``train_batch<i>.jpg`` mosaics);
* ``val_predictions``: after every validation, the predictions of the validated weights (EMA when present) on
  the first validation batch, boxes and class names drawn;
* at the end, the pictures of the last validation (PR/F1/P/R curves, confusion matrix) and ``results.png``.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from detcli.engine.hooks.base import HookBase
from detcli.errors import DetcliError

INSTALL = 'pip install "detcli[tensorboard]"'
PREDICTION_IMAGES = 4  # images of the first validation batch drawn with their predictions


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``; a :class:`DetcliError` naming the extra when the
    ``tensorboard`` package is missing (checked before a run folder is made)."""
    try:
        importlib.import_module("tensorboard")
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise DetcliError(f"--tensorboard (train.tensorboard) needs the tensorboard package, which is not "
                          f"installed ({e}); install it with: {INSTALL}, or train without --tensorboard") from None
    return SummaryWriter


class TensorBoardHook(HookBase):
    """Writes the run's scalars and images as TensorBoard events (``log_dir``: ``<run_dir>/tensorboard``)."""

    def __init__(self, log_dir: Path | None = None) -> None:
        self.log_dir = log_dir
        self.writer: Any = None
        self.failed = False

    def before_train(self, trainer: Any) -> None:
        writer_cls = require_tensorboard()  # every rank: a missing package stops them all alike
        self.reporter = trainer.reporter
        if trainer.rank == 0:
            self.log_dir = Path(self.log_dir or trainer.run_dir / "tensorboard")
            start = self._step(trainer, trainer.state.start_epoch, 0)  # a resumed run drops the lost epoch's events
            self.writer = writer_cls(log_dir=str(self.log_dir), purge_step=start if start else None)

    @staticmethod
    def _step(trainer: Any, epoch: int, it: int) -> int:
        return epoch * trainer.iters_per_epoch + it

    def before_step(self, trainer: Any) -> None:
        s = trainer.state
        if self.writer is None or s.epoch != 0 or s.iteration >= 3:
            return
        inp = trainer.spec.preset.input
        self._image(f"train_batch/{s.iteration}", lambda: _mosaic(s.batch, inp, trainer.class_names), 0)

    def after_step(self, trainer: Any) -> None:
        if self.writer is None:
            return
        s = trainer.state
        step = self._step(trainer, s.epoch, s.iteration)
        for name, value in s.losses.items():
            self.writer.add_scalar(f"train/{name}", value, step)
        self.writer.add_scalar("train/loss", s.total, step)
        self.writer.add_scalar("lr/pg0", s.lr, step)

    def after_epoch(self, trainer: Any) -> None:
        s = trainer.state
        if self.writer is None or s.result is None:
            return
        step = self._step(trainer, s.epoch + 1, 0) - 1  # the epoch's last iteration
        for name, value in s.result.stats.items():
            self.writer.add_scalar(f"metrics/{name}", value, step)
        self._image("val_predictions", lambda: _predictions(trainer), step)
        self.writer.flush()

    def after_train(self, trainer: Any) -> None:
        if self.writer is None:
            return
        step = self._step(trainer, trainer.state.epoch + 1, 0) - 1
        pictures = [trainer.run_dir / "results.png"] + [p for h in trainer.hooks for p in getattr(h, "written", [])]
        for path in pictures:
            if Path(path).suffix in (".png", ".jpg") and Path(path).is_file():
                self._image(f"plots/{Path(path).stem}", lambda p=path: _read_bgr(p), step)
        self.writer.close()
        self.writer = None

    def _image(self, tag: str, draw: Any, step: int) -> None:
        """``draw()`` (H, W, 3) BGR uint8 as image ``tag``; a picture that fails is one warning, never a stop."""
        try:
            bgr = draw()
        except Exception as e:  # noqa: BLE001 - a picture must never stop a training run
            if not self.failed:
                self.reporter.warn(f"TensorBoard: could not draw {tag} ({type(e).__name__}: {e}); training goes on "
                                   "(further picture failures of this run are not reported)")
            self.failed = True
            return
        if bgr is not None:
            self.writer.add_image(tag, np.ascontiguousarray(bgr[:, :, ::-1]), step, dataformats="HWC")


def _mosaic(batch: Any, inp: Any, class_names: list[str]) -> np.ndarray:
    from detcli.plots.batches import batch_mosaic

    return batch_mosaic(batch, inp.mean, inp.std, inp.channel_order, class_names)


@torch.no_grad()
def _predictions(trainer: Any) -> np.ndarray | None:
    """The validated weights' detections on the first validation images, drawn as a mosaic (BGR uint8)."""
    from detcli.structures import Target

    if trainer.val_loader is None:
        return None
    module = trainer.ema.module if trainer.ema is not None else trainer.model
    batch = next(iter(trainer.val_loader))
    n = min(PREDICTION_IMAGES, len(batch.metas))
    was_training = module.training
    module.eval()
    try:
        dets = module.predict(batch.images[:n].to(trainer.device), batch.metas[:n])
    finally:
        module.train(was_training)
    drawn = type(batch)(images=batch.images[:n], metas=batch.metas[:n],
                        targets=[Target(boxes=d.boxes.cpu(), labels=d.labels.cpu()) for d in dets])
    return _mosaic(drawn, trainer.spec.preset.input, trainer.class_names)


def _read_bgr(path: Path) -> np.ndarray | None:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_COLOR)


__all__ = ["TensorBoardHook", "require_tensorboard", "INSTALL"]
