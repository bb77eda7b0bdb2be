"""defcn-r50-fpn through every command on tiny demo data at a small input, as a user runs them.

train (POTO + aux, multi-scale short sides scaled with --imgsz) → eval without and with --nms → predict →
export (end to end, no NMS node in the ONNX graph, parity-checked) → inspect-anchors (one POTO positive per GT
plus the auxiliary ones).
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from detcli.data.demo import ensure_demo_dataset
from detcli.evaluation.duplicates import duplicate_stats
from tests.support.cli_subprocess import run_cli_forked


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("defcn") / "demo"
    ensure_demo_dataset(root, num_train=6, num_val=3)
    return root / "demo.yaml"


@pytest.mark.slow  # R-50 through every command, ~2 min; DeFCN's export/contract/golden cases run by default
def test_defcn_end_to_end(tmp_path: Path, tiny_data: Path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    train = run_cli_forked("train", "-p", "defcn-r50-fpn", "--data", str(tiny_data), "--epochs", "1", "--batch", "3",
                    "--imgsz", "128", "--workers", "0", cwd=tmp_path)
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert "lr 0.01 × 3/16" in train.stdout  # SGD 0.01 at batch 16, scaled and said so
    assert "R-50.pkl" in train.stdout + train.stderr  # no MSRA file here: said, random init
    best = tmp_path / "runs" / "train" / "train" / "weights" / "best.pt"
    assert best.is_file()

    found = {}
    for flag, name in (("--no-nms", "plain"), ("--nms", "nms")):
        ev = run_cli_forked("eval", "--weights", str(best), "--workers", "0", "--conf", "0.0", "--iou", "0.3", flag,
                            "--name", name, cwd=tmp_path)
        assert ev.returncode == 0, ev.stderr[-3000:]
        metrics = json.loads((tmp_path / "runs" / "eval" / name / "metrics.json").read_text())
        assert "AP50" in metrics["stats"] and metrics["nms"] == ("class_aware" if flag == "--nms" else "none")
        found[name] = json.loads((tmp_path / "runs" / "eval" / name / "predictions.json").read_text())
        assert metrics["duplicates"] == duplicate_stats(found[name]).to_dict()  # eval reports them (0.3, 0.7)
    # a barely trained dense head: its 100 best boxes overlap; with --nms (IoU 0.3) no same-class pair above 0.3 is left
    assert duplicate_stats(found["plain"], -1.0, 0.3).pairs > 0
    assert duplicate_stats(found["nms"], -1.0, 0.3).pairs == 0

    pr = run_cli_forked("predict", str(tiny_data.parent / "val"), "--weights", str(best), "--conf", "0.0",
                        cwd=tmp_path)
    assert pr.returncode == 0, pr.stderr[-3000:]
    assert isinstance(json.loads((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text()), list)

    ex = run_cli_forked("export", "--weights", str(best), cwd=tmp_path)
    assert ex.returncode == 0, ex.stderr[-3000:]
    meta = json.loads(best.with_name("best.onnx.json").read_text())
    assert meta["parity"]["passed"] is True
    ops = {node.op_type for node in onnx.load(str(best.with_suffix(".onnx"))).graph.node}
    assert "NonMaxSuppression" not in ops and "TopK" in ops  # end to end without NMS

    ins = run_cli_forked("inspect-anchors", "--weights", str(best), "--images", "1", "-o", "ins", cwd=tmp_path)
    assert ins.returncode == 0, ins.stderr[-3000:]
    stats = json.loads((tmp_path / "ins" / "stats.json").read_text())
    assert stats["preset"] == "defcn-r50-fpn" and stats["gts"] > 0
    assert stats["positives_per_gt"]["min"] == stats["positives_per_gt"]["max"] == 1  # POTO: one each
    assert stats["auxiliary_positives_per_gt"]["max"] >= 1
    assert (tmp_path / "ins" / stats["pictures"][0]["file"]).is_file()
