"""Bad input is reported before torch, torchvision or OpenCV is imported (validate first, import late).

Those imports cost seconds (tens of seconds on a loaded machine), so a misspelt preset, a missing ``--data``,
source or checkpoint must not wait for them. Each case runs ``python -m detcli`` in a fresh interpreter through a
tiny wrapper that writes, at exit, which of the heavy modules ``sys.modules`` holds; no timing is measured
(``benchmarks/speed/cli_error_latency.py`` measures the time). A fresh interpreter is the point here:
``run_cli_forked``'s helper has imported torch already.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "cv2")

PROBE = """
import atexit, json, os, runpy, sys

def _record():
    with open(os.environ["DETCLI_IMPORT_PROBE"], "w") as f:
        json.dump(sorted(m for m in {heavy!r} if m in sys.modules), f)

atexit.register(_record)
sys.argv = ["detcli", *sys.argv[1:]]
runpy.run_module("detcli", run_name="__main__", alter_sys=True)
""".format(heavy=HEAVY)


def run_probed(args: list[str], cwd: Path) -> tuple[subprocess.CompletedProcess, list[str]]:
    """``detcli ARGS`` in a fresh interpreter in ``cwd``; its result and the heavy modules it imported."""
    record = cwd / "imported.json"
    env = {**os.environ, "DETCLI_HOME": str(cwd / "home"), "OMP_NUM_THREADS": "1",
           "DETCLI_IMPORT_PROBE": str(record)}
    out = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300, check=False)
    return out, json.loads(record.read_text())


ERROR_CASES = [
    (["train", "--preset", "nanodet-plsu-m"], "unknown preset 'nanodet-plsu-m'. Did you mean 'nanodet-plus-m'"),
    (["train", "-p", "nanodet-plus-m", "--data", "missing.yaml"], "dataset file missing.yaml does not exist"),
    (["train", "-p", "nanodet-plus-m", "--set", "model.widht=1.5x"], "did you mean 'model.width'"),
    (["train", "-p", "nanodet-plus-m", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
    (["predict", "missing.jpg"], "source not found: 'missing.jpg'"),
    (["predict", "here.jpg", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
    (["eval", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
    (["eval"], "no trained run found under runs/train"),
    (["eval", "--weights", "here.pt", "--data", "missing.yaml"], "dataset file missing.yaml does not exist"),
    (["export", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
    (["inspect-anchors", "-p", "retinanet-r18-fnp"], "unknown preset 'retinanet-r18-fnp'"),
    (["inspect-anchors", "-p", "retinanet-r18-fpn", "--data", "missing.yaml"], "missing.yaml does not exist"),
    (["inspect-anchors", "--weights", "missing.pt"], "--weights missing.pt: no such file"),
    (["presets", "rtmdet-z"], "unknown preset 'rtmdet-z'"),
]


@pytest.mark.parametrize("args, expected", ERROR_CASES, ids=[" ".join(a) for a, _ in ERROR_CASES])
def test_bad_input_is_reported_before_torch_and_opencv_load(tmp_path: Path, args, expected):
    (tmp_path / "here.jpg").write_bytes(b"")  # a source and a weights file that exist (never read)
    (tmp_path / "here.pt").write_bytes(b"")
    out, imported = run_probed(args, tmp_path)
    assert out.returncode == 2, out.stderr[-2000:]
    assert expected in out.stderr, out.stderr
    assert "Traceback" not in out.stderr + out.stdout
    assert imported == [], f"detcli {' '.join(args)} imported {imported} before reporting the error"


def test_the_probe_sees_the_imports_of_a_command_that_gets_past_its_checks(tmp_path: Path):
    """The control: a checkpoint that exists is read by torch, so torch is imported (the probe is not blind)."""
    (tmp_path / "here.jpg").write_bytes(b"")
    (tmp_path / "bad.pt").write_bytes(b"\x00not a checkpoint")
    out, imported = run_probed(["predict", "here.jpg", "--weights", "bad.pt"], tmp_path)
    assert out.returncode == 2 and "bad.pt" in out.stderr, out.stderr[-2000:]
    assert "torch" in imported
