"""Ctrl-C: a real SIGINT to a training process prints what was kept and the ``--resume`` command, exit 130, no
traceback; an interrupted command of any kind says so (typer alone would exit 130 silently)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from detcli import cli
from detcli.interrupt import TrainingInterrupted


def _start_training(tiny_data: Path, cwd: Path) -> subprocess.Popen:
    """``detcli train`` on the tiny demo copy, long enough to be interrupted (stdout, stderr: files in cwd)."""
    args = [sys.executable, "-m", "detcli", "train", "--preset", "nanodet-plus-m", "--data", str(tiny_data),
            "--imgsz", "64", "--batch", "2", "--epochs", "200", "--workers", "0", "--name", "run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DETCLI_HOME": str(cwd / "home")}
    # SIGINT back to its default in the child: a suite started from a background job (``.ci/run &``) inherits
    # SIGINT ignored, and Python keeps an ignored SIGINT ignored, so the interrupt would never arrive
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=open(cwd / "out.txt", "w"),
                            stderr=open(cwd / "err.txt", "w"),
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _interrupt_when(proc: subprocess.Popen, ready: Path, cwd: Path, limit: float = 600) -> tuple[int, str]:
    """SIGINT once ``ready`` exists (polled; no timing is asserted); returns (exit code, stderr)."""
    deadline = time.monotonic() + limit
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run ended before {ready.name} appeared:\n{(cwd / 'err.txt').read_text()[-3000:]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=300)
    return code, (cwd / "err.txt").read_text()


def test_sigint_during_training_prints_the_resume_command(tiny_data: Path, tmp_path: Path):
    proc = _start_training(tiny_data, tmp_path)
    code, err = _interrupt_when(proc, tmp_path / "runs" / "train" / "run" / "weights" / "last.pt", tmp_path)
    out = (tmp_path / "out.txt").read_text()
    assert code == 130, err[-3000:]
    assert "Traceback" not in err + out and "KeyboardInterrupt" not in err + out, err[-3000:]
    assert "interrupted: training stopped; the epoch in progress is lost, the checkpoints already written are " \
           "intact (runs/train/run/weights/last.pt)" in err, err
    assert err.rstrip().endswith("Continue the run with: detcli train --resume runs/train/run"), err


def test_sigint_before_the_first_checkpoint_says_what_to_do(tiny_data: Path, tmp_path: Path):
    proc = _start_training(tiny_data, tmp_path)
    run = tmp_path / "runs" / "train" / "run"
    code, err = _interrupt_when(proc, run / "train_batch0.jpg", tmp_path)  # drawn at the first iteration
    assert code == 130 and "Traceback" not in err, err[-3000:]
    if (run / "weights" / "last.pt").exists():  # the first epoch ended in between
        assert "detcli train --resume runs/train/run" in err, err
    else:
        assert "training stopped before its first checkpoint (runs/train/run holds no weights/last.pt yet); the " \
               "run's settings are recorded, so it starts again from epoch 1 with: detcli train --resume " \
               "runs/train/run" in err, err


def test_the_message_names_the_run_folder_and_the_command(tmp_path: Path):
    run = tmp_path / "runs/train/my run"  # no start record: nothing to resume
    argv = ["/x/detcli", "train", "-p", "nanodet-plus-m", "--data", "my data.yaml"]
    assert str(TrainingInterrupted(run, argv)).endswith(
        "start the run again: detcli train -p nanodet-plus-m --data 'my data.yaml'")


def test_ctrl_c_in_any_command_is_said_once_with_exit_130(monkeypatch, capsys):
    import detcli.app.presets as presets_app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(presets_app, "presets_command", interrupted)
    monkeypatch.setattr(sys, "argv", ["detcli", "presets"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130
    assert capsys.readouterr().err.strip() == "interrupted: files already written are intact"
    monkeypatch.setenv("RANK", "1")  # under torchrun every rank gets SIGINT: only rank 0 speaks
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130 and capsys.readouterr().err == ""
