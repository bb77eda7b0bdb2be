"""Evaluation and checkpoints meet broken data: a truncated val JPEG and a FIFO named like an image no longer end
a run (training validates, ``eval`` skips and counts), and the dataset paths a checkpoint records are checked
like a dataset YAML before anything they name is opened.

One tiny model is trained once (module fixture) on a demo copy whose val split holds a truncated JPEG and whose
train split holds a FIFO named like an image: the fixture itself is the training case.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch

from detcli.data.dataset_config import resolve_dataset
from detcli.data.recorded import recorded_dataset
from detcli.errors import DatasetError
from tests.support.cli_subprocess import run_cli_forked
from tests.support.voc_yolo_files import yolo_root

SECRET = "MARKER-91c2-never-shown"
TRUNCATED = "000002.jpg"


def run(*args: str, cwd: Path):
    return run_cli_forked(*args, cwd=cwd, timeout=300)


def assert_refused(out, *expected: str) -> None:
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    for e in expected:
        assert e in text, text
    assert "Traceback" not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr, out.stderr[-3000:]


@pytest.fixture(scope="module")
def broken(tiny_data: Path, tmp_path_factory) -> Path:
    """A copy of the tiny demo data: a truncated val JPEG, a FIFO named like a train image."""
    root = tmp_path_factory.mktemp("broken") / "data"
    shutil.copytree(tiny_data.parent, root)
    jpg = (root / "val" / TRUNCATED).read_bytes()
    (root / "val" / TRUNCATED).write_bytes(jpg[: len(jpg) // 2])
    first = sorted((root / "train").iterdir())[0]
    first.unlink()
    os.mkfifo(first)
    return root


@pytest.fixture(scope="module")
def trained(broken: Path, tmp_path_factory) -> tuple[Path, Path, object]:
    cwd = tmp_path_factory.mktemp("run")
    out = run("train", "--preset", "nanodet-plus-m", "--data", str(broken / "demo.yaml"), "--epochs", "1",
              "--batch", "2", "--imgsz", "64", "--workers", "0", cwd=cwd)
    return cwd, cwd / "runs" / "train" / "train" / "weights" / "best.pt", out


@pytest.mark.timeout(600)
def test_training_validates_past_a_truncated_val_image_and_a_fifo(trained):
    _, best, out = trained
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())
    assert "val 1/1: 1 of 4 image(s) could not be read" in text and TRUNCATED in text, text[-3000:]
    assert best.is_file() and best.with_name("last.pt").is_file()


def test_eval_skips_and_counts_the_unreadable_image(trained, tmp_path):
    cwd, best, _ = trained
    for workers in ("0", "1"):  # in the main process and in a DataLoader worker
        out = run("eval", "--weights", str(best), "--workers", workers, "--batch", "2", "--name", f"w{workers}",
                  cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        text = " ".join(out.stdout.split())
        assert "COCO bbox (1 of 4 images unreadable: scored with no detection, their boxes count as missed)" in text
        assert "DataLoader worker" not in out.stderr and "Traceback" not in out.stderr
        metrics = json.loads((tmp_path / "runs" / "eval" / f"w{workers}" / "metrics.json").read_text())
        assert metrics["num_images"] == 4 and [Path(p).name for p in metrics["unreadable_images"]] == [TRUNCATED]


def test_eval_takes_a_deeply_nested_info_field(trained, broken, tmp_path):
    _, best, _ = trained
    content = json.loads((broken / "annotations" / "instances_val.json").read_text())
    content["info"] = json.loads("[" * 700 + "]" * 700)  # COCOeval deep-copies `info`
    (tmp_path / "val.json").write_text(json.dumps(content))
    (tmp_path / "data.yaml").write_text(f"val:\n  ann_file: val.json\n  img_dir: {broken / 'val'}\n")
    out = run("eval", "--weights", str(best), "--data", "data.yaml", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


# ---------------------------------------------------------------------------------------------- recorded paths
def tampered(best: Path, tmp_path: Path, edit) -> Path:
    """A copy of ``best`` whose ``dataset.config`` (a dict) is changed by ``edit(config)``."""
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    config = ckpt["dataset"]["config"]
    edit(config)
    if config.get("drop"):
        del ckpt["dataset"]["config"]
    out = tmp_path / "tampered.pt"
    torch.save(ckpt, out)
    return out


def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir(exist_ok=True)
    (folder / "passwd").write_text(f"root:x:0:0:{SECRET}:/root:/bin/bash\n")
    os.mkfifo(folder / "val.json")  # were it opened, the command would block
    (folder / "secret.yaml").write_text(f"path: {SECRET}\nnames: [{SECRET}]\ntrain: x\nval: y\n")
    return folder


@pytest.mark.parametrize("case, expected", [
    ("passwd", "dataset.config.val: the dataset path recorded in the checkpoint is refused: ann_file "
               "{o}/passwd is not a COCO annotation file (.json); give --data"),
    ("fifo", "ann_file {o}/val.json does not exist or is not a regular file"),
    ("relative", "ann_file annotations/instances_val.json is not an absolute path"),
    ("yolo", "data_file {o}/passwd is not a dataset YAML (.yaml or .yml)"),
    ("yolo-other", "data_file {o}/secret.yaml does not read as a YOLO dataset with a val split"),
    ("voc", "image_sets: {o}/passwd is not in <VOC root>/ImageSets/Main/"),
    ("missing", "records no dataset (dataset.config); give --data"),
])
def test_eval_refuses_dataset_paths_a_checkpoint_should_not_decide(trained, tmp_path, case, expected):
    _, best, _ = trained
    o = outside(tmp_path)

    def edit(config):
        val = config["val"]
        if case == "passwd":
            val["ann_file"] = str(o / "passwd")
        elif case == "fifo":
            val["ann_file"] = str(o / "val.json")
        elif case == "relative":
            val["ann_file"] = "annotations/instances_val.json"
        elif case in ("yolo", "yolo-other"):
            config["val"] = {"format": "yolo", "data_file": str(o / ("passwd" if case == "yolo" else "secret.yaml")),
                             "images": [str(o)], "names": ["a"]}
        elif case == "voc":
            config["val"] = {"format": "voc", "image_sets": [str(o / "passwd")], "names": ["a"]}
        elif case == "missing":
            config["drop"] = True

    weights = tampered(best, tmp_path, edit)
    out = run("eval", "--weights", str(weights), "--workers", "0", cwd=tmp_path)
    assert_refused(out, str(weights), expected.format(o=o))


def test_a_recorded_yolo_split_must_be_what_its_yaml_gives(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    record = resolve_dataset(yaml).model_dump(mode="json")
    assert recorded_dataset(record, "checkpoint c.pt") == resolve_dataset(yaml)
    record["val"]["images"].append(str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetError, match=r"checkpoint c\.pt: dataset\.config\.val: .* now gives other val images "
                                           r"or names than the checkpoint records"):
        recorded_dataset(record, "checkpoint c.pt", hint="put the data back where it was")
    with pytest.raises(DatasetError, match=r"dataset\.config is not a dataset record \(val\.coco\.img_dir: Field "
                                           r"required"):
        recorded_dataset({"val": {"ann_file": "/a.json"}}, "checkpoint c.pt")
    with pytest.raises(DatasetError, match=r"dataset\.config: expected a mapping of splits, got list"):
        recorded_dataset([1], "checkpoint c.pt")
