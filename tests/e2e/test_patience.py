"""``--patience``: a run whose val AP50-95 stops improving ends early, says so, and leaves a finished run folder.

The run is real and deterministic without patching anything: ``test.score_thr=1.0`` keeps every detection out
(scores are sigmoids, never above 1), so every validation scores AP50-95 = 0 on the demo data. The first
validation is the best so far (best.pt); the second does not improve, and patience 1 stops the run there.
The preset comes from ``detcli presets … > p.yaml``: the resolved YAML trains unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from detcli.api.train import train
from detcli.checkpoints.io import load_checkpoint
from detcli.data.demo import ensure_demo_dataset
from detcli.inference.loading import load_for_inference
from tests.support.cli_subprocess import run_cli_forked


def test_patience_stops_a_run_that_does_not_improve(tmp_path: Path, capsys):
    root = tmp_path / "demo"
    ensure_demo_dataset(root, num_train=4, num_val=2)
    printed = run_cli_forked("presets", "nanodet-plus-m", "--set", "test.score_thr=1.0", cwd=tmp_path)
    assert printed.returncode == 0, printed.stderr
    (tmp_path / "p.yaml").write_text(printed.stdout)

    trained = train(tmp_path / "p.yaml", root / "demo.yaml", epochs=5, batch=2, imgsz=64, workers=0, patience=1,
                    overrides=["train.val_interval=1"], project=tmp_path / "runs" / "train")  # the library's run
    out = capsys.readouterr().out
    assert "early stopping after 1 validation(s) without a better AP50-95" in out
    assert "Stopped early at epoch 2/5: AP50-95 has not improved for 1 validation(s) (train.patience 1). " \
           "Best AP50-95 0.0000 at epoch 1" in " ".join(out.split())
    run = tmp_path / "runs" / "train" / "train"
    assert trained.run_dir == run and trained.best == run / "weights" / "best.pt" and trained.metrics["stopped_early"]
    rows = (run / "results.csv").read_text().strip().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["1", "2"]  # one row per epoch that ran
    assert not (run / "tensorboard").exists()  # TensorBoard is off by default (train.tensorboard: false)
    best, last = load_checkpoint(run / "weights" / "best.pt"), load_checkpoint(run / "weights" / "last.pt")
    assert best["epoch"] == 1 and last["epoch"] == 2 and last["best_map"] == 0.0
    assert last["early_stopping"] == {"best_epoch": 1, "stale": 1, "stopped": True}
    assert last["preset"]["train"]["patience"] == 1
    load_for_inference(run / "weights" / "best.pt", None, [], torch.device("cpu"))  # a valid model to run
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["row"]["epoch"] == 2 and metrics["row"]["stopped_early"] is True
    assert metrics["row"]["best/epoch"] == 1 and metrics["metrics"]["num_detections"] == 0

    before = (run / "weights" / "best.pt").read_bytes(), (run / "weights" / "last.pt").read_bytes()
    again = run_cli_forked("train", "--resume", cwd=tmp_path)
    assert again.returncode == 2, again.stdout[-2000:]
    assert "the run is finished: it stopped early at epoch 2/5" in " ".join(again.stderr.split())
    assert "Traceback" not in again.stderr
    assert ((run / "weights" / "best.pt").read_bytes(), (run / "weights" / "last.pt").read_bytes()) == before
