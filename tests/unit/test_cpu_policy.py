"""The OpenMP wait policy on a shared CPU: PASSIVE when the load is above the process' CPUs, said in the run's
header; the idle machine and the user's own setting are left alone. The load is faked, never made."""
from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest
from rich.console import Console

from detcli import cpus
from detcli.console import Reporter


@pytest.fixture
def machine(monkeypatch):
    """A 2-CPU process whose 1-minute load the test sets; torch not loaded yet, as at ``detcli`` start-up."""
    state = {"load": 0.0}
    monkeypatch.setattr(cpus, "load_average", lambda: state["load"])
    monkeypatch.setattr(cpus, "available_cpus", lambda: 2)
    monkeypatch.setattr(cpus, "torch_loaded", lambda: False)
    monkeypatch.setattr(cpus, "wait_policy_note", None)
    return state


@pytest.mark.parametrize("load, policy", [(0.3, None), (2.0, None), (2.5, "PASSIVE"), (10.0, "PASSIVE")])
def test_passive_only_when_the_load_is_above_the_cpus(machine, load, policy):
    machine["load"] = load
    env: dict[str, str] = {}
    note = cpus.choose_wait_policy(env)
    assert env.get("OMP_WAIT_POLICY") == policy
    assert (note is not None) is (policy is not None) and cpus.wait_policy_note == note
    if note:
        assert f"1-minute load {load:.1f} on the 2 CPU(s)" in note
        assert "OMP_WAIT_POLICY=PASSIVE" in note and "OMP_WAIT_POLICY=ACTIVE" in note  # what it did, how to undo


def test_the_users_setting_wins_and_a_loaded_torch_is_left_alone(machine, monkeypatch):
    machine["load"] = 10.0
    env = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert cpus.choose_wait_policy(env) is None and env == {"OMP_WAIT_POLICY": "ACTIVE"}
    monkeypatch.setattr(cpus, "torch_loaded", lambda: True)  # libgomp has read the variable: too late to say
    env = {}
    assert cpus.choose_wait_policy(env) is None and env == {}
    monkeypatch.setattr(cpus, "load_average", lambda: None)  # no load average (Windows)
    monkeypatch.setattr(cpus, "torch_loaded", lambda: False)
    assert cpus.choose_wait_policy(env) is None and env == {}


def test_the_run_header_says_so(machine):
    machine["load"] = 5.0
    cpus.choose_wait_policy({})
    buf = io.StringIO()
    Reporter(console=Console(file=buf, width=80, force_terminal=True, color_system=None)).header("train", "cpu")
    lines = buf.getvalue().splitlines()
    assert lines[0].startswith("detcli ") and "OMP_WAIT_POLICY=ACTIVE" in buf.getvalue()
    assert "1-minute load 5.0" in buf.getvalue()


def test_main_chooses_before_torch_is_imported(tmp_path):
    """A fresh interpreter: ``detcli.cli.main`` sets the variable with torch not yet imported (libgomp reads it
    once, when torch loads it), and leaves the user's own value."""
    script = (
        "import os, sys\n"
        "os.getloadavg = lambda: (99.0, 99.0, 99.0)\n"
        "sys.argv = ['detcli', '--help']\n"
        "from detcli.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('policy', os.environ.get('OMP_WAIT_POLICY'), 'torch' in sys.modules, file=sys.stderr)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert "policy PASSIVE False" in out.stderr, out.stderr
    out = subprocess.run([sys.executable, "-c", script], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert "policy ACTIVE False" in out.stderr, out.stderr
