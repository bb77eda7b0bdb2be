"""Draw-by-draw parity of the RTMDet pipelines with MMDetection 3.3.0 (benchmarks/parity/rtmdet_pipeline_parity.py).

Set ``MMDET_SRC`` (or ``MMDET_REPO``) to the folder holding ``mmdet/``, ``mmengine/`` and mmcv-lite's ``mmcv/``,
and ``MMDET_PYTHON`` to an interpreter that has mmengine's dependencies (default: this one).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = os.environ.get("MMDET_SRC") or os.environ.get("MMDET_REPO")
REPO = Path(__file__).resolve().parents[2]
MODULE = "benchmarks.parity.rtmdet_pipeline_parity"


@pytest.mark.parity
@pytest.mark.skipif(not SRC, reason="MMDET_SRC not set (unpacked mmdet 3.x wheel)")
def test_rtmdet_pipelines_match_mmdetection():
    python = os.environ.get("MMDET_PYTHON", sys.executable)
    proc = subprocess.run([python, "-m", MODULE, "--samples", "60"], cwd=REPO, env={**os.environ, "MMDET_SRC": SRC},
                          capture_output=True, text=True, timeout=600)
    report = "\n".join(line for line in proc.stdout.splitlines() if line.startswith(("[", "PARITY", "mmdet")))
    assert proc.returncode == 0 and "PARITY OK" in proc.stdout, report + proc.stderr[-3000:]
    assert report.count("[ok]") == 4, report
