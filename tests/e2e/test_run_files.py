"""What a run writes and prints: unwritable run folders, DataLoader workers, resume output, plain progress logs.

Checkpoint consistency (kills between the two writes, full disk, non-finite weights) is tested on the toy
trainer in test_engine.py.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from tests.support.cli_subprocess import run_cli_forked

from detcli.config.loader import load_preset
from detcli.console import Reporter
from detcli.data import loader as loader_mod
from detcli.data.loader import available_cpus, cap_workers
from detcli.engine.run_dir import new_run_dir
from detcli.errors import DetcliError

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- run folders
def test_run_folder_under_a_file_names_the_file(tmp_path):
    (tmp_path / "blocker").write_text("not a folder")
    with pytest.raises(DetcliError, match=r"cannot create the folder .*blocker/runs: .*blocker is a file, not a folder"):
        new_run_dir(tmp_path / "blocker" / "runs", "train")
    with pytest.raises(DetcliError, match=r"blocker is a file, not a folder"):
        new_run_dir(tmp_path, "blocker", exist_ok=True)
    assert new_run_dir(tmp_path, "blocker") == tmp_path / "blocker2"  # numbered past the file


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_run_folder_in_a_read_only_folder(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        with pytest.raises(DetcliError, match=r"cannot create the folder .*locked/runs: Permission denied"):
            new_run_dir(locked / "runs", "train")
    finally:
        locked.chmod(0o755)


def _detcli_checkpoint(path: Path) -> None:
    """A detcli checkpoint of an untrained nanodet-plus-m for the 5 demo classes (for eval)."""
    from detcli.models import build_model

    preset = load_preset("nanodet-plus-m")[0]
    model = build_model(preset, 5, pretrained=False)
    names = ["circle", "square", "triangle", "star", "ring"]
    torch.save({"format": "detcli-1", "epoch": 1, "model": model.state_dict(), "ema": None,
                "preset": preset.model_dump(mode="json"), "class_names": names, "cat_ids": [1, 2, 3, 4, 5],
                "dataset": None}, path)


def test_unwritable_project_is_a_message_for_train_eval_predict(tmp_path: Path, tiny_data: Path):
    (tmp_path / "blocker").write_text("not a folder")
    _detcli_checkpoint(tmp_path / "model.pt")
    val = str(tiny_data.parent / "val")
    commands = {
        "train": ["train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--imgsz", "64", "--batch", "2",
                  "--epochs", "1", "--workers", "0"],
        "eval": ["eval", "--weights", "model.pt", "--data", str(tiny_data), "--imgsz", "64", "--workers", "0"],
        "predict": ["predict", val, "--weights", "model.pt", "--imgsz", "64"],
    }
    for command, args in commands.items():
        out = run_cli_forked(*args, "--project", "blocker/runs", cwd=tmp_path)
        assert out.returncode == 2, (command, out.stderr[-3000:])
        assert "cannot create the folder blocker/runs: blocker is a file, not a folder" in out.stderr, out.stderr
        assert "Traceback" not in out.stderr + out.stdout, command
    assert {p.name for p in tmp_path.iterdir()} - {"home"} == {"blocker", "model.pt"}  # nothing else written


# ---------------------------------------------------------------------------------------------- workers
def test_workers_are_capped_by_the_cpus_of_the_process(monkeypatch):
    assert cap_workers(10, processes=1, cpus=2) == 2
    assert cap_workers(10, processes=2, cpus=2) == 1  # DDP: the CPUs are shared by the processes
    assert cap_workers(4, processes=4, cpus=2) == 0  # the main process loads the data
    assert cap_workers(1, processes=1, cpus=16) == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3}, raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    assert available_cpus() == 2 and cap_workers(10) == 2  # the affinity mask, not the machine
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    assert available_cpus() == 64  # where there is no affinity (macOS, Windows)


def _build(tiny_data: Path, resume: bool, workers: int, capsys) -> tuple[object, str]:
    from detcli.app.train import BuildSpec, build_parts
    from detcli.data.dataset_config import resolve_dataset
    from detcli.engine.session import ProcessInfo

    from detcli.run_spec import RunSpec

    preset = load_preset("nanodet-plus-m")[0]
    spec = BuildSpec(RunSpec(preset, [], [], imgsz=64), preset.train, resolve_dataset(str(tiny_data)), workers, None,
                     True, resume=resume)
    capsys.readouterr()
    parts = build_parts(spec, ProcessInfo(0, 0, 1, torch.device("cpu"), 2, 0))
    return parts, capsys.readouterr().out


def test_build_caps_workers_once_and_resume_does_not_mention_imagenet(tiny_data, monkeypatch, capsys):
    monkeypatch.setattr(loader_mod, "available_cpus", lambda: 2)
    monkeypatch.setenv("DETCLI_HOME", str(tiny_data.parent / "home"))  # no ImageNet file there
    parts, out = _build(tiny_data, resume=False, workers=10, capsys=capsys)
    assert parts.train_loader.num_workers == 2 and parts.val_loader.num_workers == 2
    assert out.count("train.workers 10: this machine gives the run 2 CPU(s); using 2 DataLoader worker(s)") == 1
    assert "backbone initialised randomly" in out  # a new run says so
    parts, out = _build(tiny_data, resume=True, workers=1, capsys=capsys)
    assert parts.train_loader.num_workers == 1 and "train.workers" not in out
    assert "ImageNet weights" not in out and "initialised randomly" not in out  # the weights come from last.pt


# ---------------------------------------------------------------------------------------------- plain progress
class FakeClock:
    def __init__(self, step: float):
        self.ticks, self.step = 0, step

    def __call__(self) -> float:
        return self.ticks * self.step

    def tick(self) -> None:
        self.ticks += 1


def _plain_lines(total: int | None, n: int, seconds_per_item: float, **postfix) -> list[str]:
    text = io.StringIO()
    reporter = Reporter(force_plain=True, file=text)
    items = range(n) if total is not None else (i for i in range(n))  # a generator has no len()
    bar = reporter.progress(items, total=total, description="val 1/8")
    clock = bar.clock = FakeClock(seconds_per_item)
    for _ in bar:
        clock.tick()
        if postfix:
            bar.update_postfix(postfix)
    return text.getvalue().splitlines()


def test_plain_progress_is_sparse_and_always_ends_with_the_last_item():
    # a short validation loop: one line, not one per batch
    assert _plain_lines(4, 4, 0.5) == ["val 1/8 4/4 2.0s"]
    # slow items: every 10%, with an ETA
    lines = _plain_lines(100, 100, 1.0, loss=0.5)
    assert len(lines) == 10 and lines[0] == "val 1/8 10/100 10.0s eta 1m30s loss 0.5"
    assert lines[-1] == "val 1/8 100/100 1m40s loss 0.5"
    # fast items: at most one line per 5 s, whatever 10% is
    lines = _plain_lines(1000, 1000, 0.01)
    assert [line.split()[2] for line in lines] == ["500/1000", "1000/1000"]
    # 10% of 7 is less than one item: still at most one line per item and per 5 s
    assert [line.split()[2] for line in _plain_lines(7, 7, 3.0)] == ["2/7", "4/7", "6/7", "7/7"]
    # no total (a video): by time only, and the count reached at the end
    assert [line.split()[2] for line in _plain_lines(None, 12, 2.0)] == ["3", "6", "9", "12"]
    # the iterable ends early: the count it reached is still printed
    assert _plain_lines(10, 3, 0.1)[-1] == "val 1/8 3/10 0.3s eta 0.7s"
