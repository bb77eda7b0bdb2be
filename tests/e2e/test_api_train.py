"""``detcli.api.train.train``: training from Python, with the CLI's presets, overrides, run folder and messages."""
from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

from detcli.api.train import TrainRun, train
from detcli.checkpoints.io import load_checkpoint
from detcli.config.loader import load_preset
from detcli.engine.hooks import HookBase
from detcli.errors import DetcliError, PresetError
from tests.support.tensorboard_events import check_event_file

torch.set_num_threads(1)
DEMO_NAMES = ["circle", "square", "triangle", "star", "ring"]


class Recorder(HookBase):
    """Records every stage it sees, with what ``trainer.state`` says there."""

    def __init__(self) -> None:
        self.seen: list[tuple] = []

    def before_train(self, trainer):
        self.seen.append(("before_train", trainer.state.start_epoch))

    def before_epoch(self, trainer):
        self.seen.append(("before_epoch", trainer.state.epoch))

    def after_step(self, trainer):
        s = trainer.state
        assert math.isfinite(s.total) and s.lr > 0 and set(s.losses) >= {"loss_qfl", "loss_dfl"}
        self.seen.append(("after_step", s.epoch, s.iteration))

    def after_epoch(self, trainer):
        s = trainer.state
        self.seen.append(("after_epoch", s.epoch, s.result is not None, s.row["epoch"]))

    def after_train(self, trainer):
        self.seen.append(("after_train", trainer.state.summary["epoch"]))


def test_train_through_the_api_leaves_the_run_folder_and_a_train_run(tmp_path: Path, tiny_data: Path):
    """One run, TensorBoard on when the package is there (its event file is read back by test_tensorboard's
    :func:`check_event_file`), off otherwise (no folder)."""
    tensorboard = importlib.util.find_spec("tensorboard") is not None
    preset = load_preset("nanodet-plus-m")[0]  # a Preset object, overrides applied on top as with --set
    hook = Recorder()
    run = train(preset, tiny_data, epochs=2, batch=4, imgsz=64, workers=0, project=tmp_path / "runs", name="api",
                overrides=["train.val_interval=1"], hooks=[hook], tensorboard=tensorboard, quiet=True)

    assert isinstance(run, TrainRun) and run.run_dir == tmp_path / "runs" / "api"
    assert hook.seen == [
        ("before_train", 0),
        ("before_epoch", 0), ("after_step", 0, 0), ("after_step", 0, 1), ("after_epoch", 0, True, 1),
        ("before_epoch", 1), ("after_step", 1, 0), ("after_step", 1, 1), ("after_epoch", 1, True, 2),
        ("after_train", 2),
    ]
    assert run.metrics["epoch"] == 2 and not run.metrics["stopped_early"]
    assert {"train/loss_qfl", "lr/pg0", "metrics/AP50-95", "best/AP50-95"} <= set(run.metrics)
    names = {p.name for p in run.run_dir.iterdir()}
    assert {"weights", "results.csv", "results.png", "run.json", "preset.yaml", "metrics.json", "labels.jpg",
            "train_batch0.jpg"} <= names, names
    assert run.last == run.run_dir / "weights" / "last.pt" and run.last.is_file()
    if tensorboard:
        check_event_file(run.run_dir)
    assert (run.best is not None) == (run.metrics["best/epoch"] is not None)
    last = load_checkpoint(run.last)
    assert last["epoch"] == 2 and last["class_names"] == DEMO_NAMES and last["input_size"] == [64, 64]
    assert last["preset"]["train"]["val_interval"] == 1 and last["dataset"]["imgsz"] == 64
    assert json.loads((run.run_dir / "metrics.json").read_text())["row"]["epoch"] == 2
    assert len((run.run_dir / "results.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs


@pytest.mark.parametrize("kwargs, error, message", [
    ({"preset": "no-such-preset"}, PresetError, "no-such-preset"),
    ({}, DetcliError, "give a preset"),
    ({"preset": "nanodet-plus-m", "imgsz": 8}, DetcliError, "--imgsz 8"),
    ({"preset": "nanodet-plus-m", "overrides": ["train.epochs=0"]}, PresetError, "train.epochs"),
    ({"preset": "nanodet-plus-m", "data": "missing.yaml"}, DetcliError, "missing.yaml"),
])
def test_api_errors_are_detcli_errors_never_system_exit(tmp_path, monkeypatch, kwargs, error, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=message.replace(".", r"\.")):
        train(**kwargs, project=tmp_path / "runs", quiet=True)
    assert not (tmp_path / "runs").exists()
