"""Reading back the TensorBoard event file of a training run (``--tensorboard``)."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest


def check_event_file(run_dir: Path) -> None:
    """``run_dir/tensorboard`` holds one event file that TensorBoard reads back with the loss and lr scalars of every
    iteration of a run of 2 epochs × 2 iterations validated every epoch, its metrics and its pictures.
    (``tests/e2e/test_api_train.py`` trains such a run with ``tensorboard=True`` and calls this.)"""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = SimpleNamespace(run_dir=run_dir)
    events = list((run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars, images = acc.Tags()["scalars"], acc.Tags()["images"]
    assert {"train/loss", "train/loss_qfl", "lr/pg0", "metrics/AP50-95"} <= set(scalars), scalars
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [0, 1, 2, 3]  # 8 images / batch 4 × 2 epochs: one value per iteration
    assert losses[0].value == pytest.approx(sum(acc.Scalars(t)[0].value for t in scalars
                                                if t.startswith("train/") and t != "train/loss"), rel=1e-5)
    assert [e.step for e in acc.Scalars("metrics/AP50-95")] == [1, 3]  # each epoch's last iteration
    assert {"train_batch/0", "train_batch/1", "val_predictions", "plots/results"} <= set(images), images
    picture = acc.Images("train_batch/0")[0]
    assert picture.width > 0 and picture.height > 0
    assert (run.run_dir / "results.csv").is_file()  # results.csv stays the run's record
