"""rtmdet-tiny through every command on tiny demo data at a small input, as a user runs them.

train (the RTMDet pipeline with its stage switch, the flat-cosine schedule with the batch-scaled lr) → eval →
predict → export (ONNX, parity-checked) → inspect-anchors on the checkpoint's own predictions.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support.cli_subprocess import run_cli_forked


def test_rtmdet_tiny_end_to_end(tmp_path: Path, tiny_data: Path):
    pytest.importorskip("onnxruntime")
    train = run_cli_forked("train", "-p", "rtmdet-tiny", "--data", str(tiny_data), "--epochs", "2", "--batch", "4",
                    "--imgsz", "160", "--workers", "0", "--set", "train.val_interval=1", cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "lr 0.004 × 4/256" in train.stdout  # scaled with the batch, and said so
    assert "the training data pipeline switches stage (augment.switch)" in train.stdout  # last 20 epochs: all 2
    best = tmp_path / "runs" / "train" / "train" / "weights" / "best.pt"
    assert best.is_file()

    ev = run_cli_forked("eval", "--weights", str(best), "--workers", "0", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    metrics = json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())
    assert metrics["imgsz"] == [160, 160] and "AP50" in metrics["stats"]

    pr = run_cli_forked("predict", str(tiny_data.parent / "val"), "--weights", str(best), cwd=tmp_path)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert json.loads((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text()) is not None

    ex = run_cli_forked("export", "--weights", str(best), cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr[-3000:]
    meta = json.loads(best.with_suffix(".onnx").with_name("best.onnx.json").read_text())
    assert meta["parity"]["passed"] is True

    ins = run_cli_forked("inspect-anchors", "--weights", str(best), "--limit", "8", "--images", "1", "-o", "ins",
                         cwd=tmp_path)
    assert ins.returncode == 0, ins.stderr[-3000:]
    stats = json.loads((tmp_path / "ins" / "stats.json").read_text())
    assert stats["preset"] == "rtmdet-tiny" and stats["trained"] and stats["gts"] > 0
    assert stats["assignment_on"].startswith("the head's own predictions")
    assert len(stats["pictures"]) == 1 and (tmp_path / "ins" / stats["pictures"][0]["file"]).is_file()
