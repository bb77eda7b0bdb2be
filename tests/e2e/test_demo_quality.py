"""The README's main job: `detcli train --preset nanodet-plus-m` on the demo data reaches AP50 >= 0.5.

9 to 18 minutes on 2 CPU cores as the machine's speed varies (bfloat16 where the CPU has it: the demo's
`amp: auto`), so it is marked slow: run it on purpose with `python -m pytest -m slow`.
"""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from detcli.config.loader import load_preset


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_demo_training_reaches_ap50(tmp_path: Path):
    env = {**os.environ, "DETCLI_HOME": str(tmp_path / "home")}
    out = subprocess.run([sys.executable, "-m", "detcli", "train", "--preset", "nanodet-plus-m"], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=1800)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "runs" / "train" / "train" / "results.csv").open()))
    assert len(rows) == load_preset("nanodet-plus-m")[0].demo_train().epochs == 8  # the demo schedule
    best_ap50 = max(float(r["metrics/AP50"]) for r in rows if r["metrics/AP50"])
    assert best_ap50 >= 0.5, best_ap50
