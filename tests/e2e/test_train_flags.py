"""Flag values no run can use, through the CLI: exit code 2, the flag named with what it allows, no traceback.

``--device mps`` where MPS is absent, device strings that do not parse, ``--imgsz`` beyond 4096 (and such sizes
in a preset or a run record), ``--seed`` outside NumPy's range, ``--data ""`` (an error, not the demo), and
``--batch 1`` / a 1-image training split where BatchNorm would see one value per channel.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tests.support.cli_subprocess import run_cli_forked

from detcli.data.demo import ensure_demo_dataset

TRAIN = ["train", "--preset", "nanodet-plus-m", "--epochs", "1", "--workers", "0"]


def _refused(cwd: Path, *args: str) -> str:
    """stderr of a command that must end with a message (exit 2), whitespace folded; nothing written."""
    out = run_cli_forked(*args, cwd=cwd)
    assert out.returncode == 2, out.stdout[-3000:] + out.stderr[-3000:]
    assert "Traceback" not in out.stdout + out.stderr
    return " ".join(out.stderr.split())


@pytest.mark.parametrize("args, expected", [
    (["--seed", str(2**64)], f"--seed {2**64}: a seed is an integer from 0 to 4294967295 (2**32 - 1"),
    (["--seed", "-1"], "--seed -1: a seed is an integer from 0 to 4294967295"),
    (["--imgsz", "100000"], "--imgsz 100000: the input size is 32 to 4096 px"),
    (["--data", ""], "--data '' is empty: give a dataset YAML or folder, or --data demo"),
    (["--device", "gpu0"], "--device 'gpu0': expected cpu, mps, a GPU id (0, cuda:0) or GPU ids (0,1)"),
    (["--device", "²"], "--device '²': expected cpu, mps"),  # a digit to str.isdigit, not to int()
    (["--device", "0,,1"], "--device '0,,1': expected cpu, mps"),
])
def test_unusable_flag_values_are_refused_before_a_run_folder(tmp_path, args, expected):
    text = _refused(tmp_path, *TRAIN, *args)
    assert expected in text, text
    assert not (tmp_path / "runs").exists()


def test_check_refuses_an_empty_data_too(tmp_path):
    assert "--data '' is empty" in _refused(tmp_path, *TRAIN, "--data", "", "--check")


def test_huge_input_size_in_a_preset_names_the_field_and_the_bound(tmp_path):
    text = _refused(tmp_path, *TRAIN, "--set", "input.size=[100000,100000]")
    assert "size [100000, 100000]: each side must be 32 to 4096 px" in text, text


@pytest.mark.parametrize("command", ["eval", "predict"])
def test_eval_and_predict_bound_imgsz_too(tmp_path, command):
    args = [command, "--imgsz", "100000"] + ([str(tmp_path)] if command == "predict" else [])
    text = _refused(tmp_path, *args)
    assert "Invalid value for '--imgsz'" in text and "4096" in text, text


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
def test_device_mps_without_mps(tmp_path):
    text = _refused(tmp_path, *TRAIN, "--device", "mps")
    assert "--device mps: Apple's MPS is not available" in text and "use --device " in text, text


def test_huge_sizes_and_seeds_in_a_run_record_are_refused_on_resume(tmp_path):
    run = tmp_path / "runs" / "train" / "run"
    run.mkdir(parents=True)
    start = {"preset": {}, "dataset": {}, "train_args": {"data": "demo", "imgsz": 100000, "seed": 2**64}}
    (run / "run.json").write_text(json.dumps({"command": "train", "start": start}))
    text = _refused(tmp_path, "train", "--resume", "runs/train/run")
    assert "runs/train/run/run.json: not a start record (start.train_args.imgsz: " in text, text
    assert "less than or equal to 4096" in text and "start.train_args.seed" in text, text


@pytest.fixture(scope="module")
def one_image_data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("one") / "demo"
    ensure_demo_dataset(root, num_train=1, num_val=2)
    return root / "demo.yaml"


def test_batch_of_one_at_a_1x1_feature_map_is_a_message(tmp_path, tiny_data):
    text = _refused(tmp_path, *TRAIN, "--data", str(tiny_data), "--batch", "1", "--imgsz", "64")
    assert "BatchNorm cannot train on a batch of 1 image of 64×64: its stride-64 feature map is 1×1, one value " \
           "per channel. Use --batch 2 or more per process with at least 2 training images, or a larger --imgsz" \
           in text, text


def test_one_image_training_split_is_a_message(tmp_path, one_image_data):
    text = _refused(tmp_path, *TRAIN, "--data", str(one_image_data), "--batch", "2", "--imgsz", "64")
    assert "one value per channel (the training split has 1 image)" in text, text
