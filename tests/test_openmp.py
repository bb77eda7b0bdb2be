"""The detcli process makes idle OpenMP threads sleep (OMP_WAIT_POLICY=PASSIVE) unless the user chose."""
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _policy_after(code: str, **env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    base["PYTHONPATH"] = os.pathsep.join([str(REPO), base.get("PYTHONPATH", "")])
    out = subprocess.run([sys.executable, "-c", code + "; import os; print(os.environ.get('OMP_WAIT_POLICY'))"],
                         env={**base, **env}, capture_output=True, text=True, check=True)
    return out.stdout.strip().splitlines()[-1]


def test_the_cli_sets_passive_before_torch_loads():
    assert _policy_after("import detcli.cli") == "PASSIVE"
    assert _policy_after("from detcli.cli import main") == "PASSIVE"  # the console script's import


def test_a_policy_the_user_set_wins():
    assert _policy_after("import detcli.cli", OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"


def test_nothing_is_set_once_torch_is_loaded():
    assert _policy_after("import torch, detcli.cli") == "None"
