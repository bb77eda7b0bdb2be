"""TensorBoard logging (``--tensorboard``, ``train.tensorboard``): an event file that TensorBoard reads back with
the loss and lr scalars and images, and a clear message naming the extra when the package is missing."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from detcli.api.train import train
from detcli.errors import DetcliError

torch.set_num_threads(1)


def test_a_tiny_run_writes_scalars_and_images_tensorboard_reads_back(tmp_path: Path, tiny_data: Path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = train("nanodet-plus-m", tiny_data, epochs=1, batch=4, imgsz=64, workers=0, project=tmp_path / "runs",
                tensorboard=True, quiet=True)
    events = list((run.run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert len(events) == 1
    acc = EventAccumulator(str(run.run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars, images = acc.Tags()["scalars"], acc.Tags()["images"]
    assert {"train/loss", "train/loss_qfl", "lr/pg0", "metrics/AP50-95"} <= set(scalars), scalars
    losses = acc.Scalars("train/loss")
    assert [e.step for e in losses] == [0, 1]  # 8 images / batch 4: one value per iteration
    assert losses[0].value == pytest.approx(sum(acc.Scalars(t)[0].value for t in scalars
                                                if t.startswith("train/") and t != "train/loss"), rel=1e-5)
    assert [e.step for e in acc.Scalars("metrics/AP50-95")] == [1]  # the epoch's last iteration
    assert {"train_batch/0", "train_batch/1", "val_predictions", "plots/results"} <= set(images), images
    picture = acc.Images("train_batch/0")[0]
    assert picture.width > 0 and picture.height > 0
    assert (run.run_dir / "results.csv").is_file()  # results.csv stays the run's record


def test_without_tensorboard_no_event_file(tmp_path: Path, tiny_data: Path):
    """Off by default (``train.tensorboard: false``): no tensorboard folder, and the package is not needed."""
    run = train("nanodet-plus-m", tiny_data, epochs=1, batch=8, imgsz=64, workers=0, project=tmp_path / "runs",
                overrides=["train.val_interval=5"], quiet=True)
    assert not (run.run_dir / "tensorboard").exists() and run.last.is_file()


@pytest.fixture
def no_tensorboard(monkeypatch):
    """The ``tensorboard`` package hidden, as where it is not installed."""
    for name in [m for m in sys.modules if m == "tensorboard" or m.startswith("tensorboard.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard → ImportError


def test_missing_package_is_a_message_naming_the_extra_before_a_run_folder(tmp_path, tiny_data, no_tensorboard):
    with pytest.raises(DetcliError, match=r'pip install "detcli\[tensorboard\]"'):
        train("nanodet-plus-m", tiny_data, epochs=1, project=tmp_path / "runs", tensorboard=True, quiet=True)
    with pytest.raises(DetcliError, match=r"train\.tensorboard\) needs the tensorboard package"):  # the preset field
        train("nanodet-plus-m", tiny_data, epochs=1, project=tmp_path / "runs", overrides=["train.tensorboard=true"],
              quiet=True)
    assert not (tmp_path / "runs").exists()  # nothing made


def test_missing_package_through_the_cli_exits_2(tmp_path, tiny_data, no_tensorboard, monkeypatch, capsys):
    from detcli.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["detcli", "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data),
                                      "--epochs", "1", "--tensorboard", "--device", "cpu"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and 'pip install "detcli[tensorboard]"' in " ".join(err.split())
    assert "Traceback" not in err and not (tmp_path / "runs").exists()
