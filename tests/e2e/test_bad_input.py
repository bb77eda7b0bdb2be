"""Bad input is a message, never a traceback; user text prints literally; images stay inside their folder.

CLI cases run ``python -m detcli`` in a subprocess (forked from a helper that has imported detcli already, see
cli_subprocess) and check the exit code (2), that the message names the file or field, and that no "Traceback"
appears. One tiny model is trained once (module fixture) on a demo copy whose category names are rich markup;
every eval case reuses it on a variant of that dataset.
"""
from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from detcli.app.train import TrainRequest, run_train_config
from detcli.config.loader import load_preset
from detcli.console import Reporter
from detcli.data.coco import CocoDetection
from detcli.data.coco_json import escapes_image_dir
from detcli.data.demo import ensure_demo_dataset
from detcli.errors import DatasetError, PresetError
from tests.support.cli_subprocess import run_cli_forked as run_cli
from tests.support.json_files import edit_json

MARKUP_NAMES = ("[/bold]", "[red]x")  # a MarkupError and a silent colour change, if rich read them


def assert_refused(out: subprocess.CompletedProcess, *expected: str) -> None:
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    for text in expected:
        assert text in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr, out.stderr


@pytest.fixture(scope="module")
def markup_data(tmp_path_factory) -> Path:
    """A tiny demo copy (8 train, 4 val) whose first two categories are named like rich markup."""
    root = tmp_path_factory.mktemp("bad") / "demo"
    ensure_demo_dataset(root, num_train=8, num_val=4)

    def rename(data):
        for cat, name in zip(data["categories"], MARKUP_NAMES):
            cat["name"] = name

    for split in ("train", "val"):
        edit_json(root / "annotations" / f"instances_{split}.json", rename)
    return root


@pytest.fixture(scope="module")
def trained(markup_data: Path, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    cwd = tmp_path_factory.mktemp("run")
    out = run_cli("train", "--preset", "nanodet-plus-m", "--data", str(markup_data / "demo.yaml"), "--epochs", "1",
                  "--batch", "2", "--imgsz", "64", "--workers", "0", cwd=cwd)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return cwd / "runs" / "train" / "train" / "weights" / "best.pt", out


def variant(markup_data: Path, tmp_path: Path, edit) -> Path:
    """A copy of the markup dataset changed by ``edit(root)``; returns its dataset YAML."""
    root = tmp_path / "data"
    shutil.copytree(markup_data, root)
    edit(root)
    return root / "demo.yaml"


def val_json(root: Path) -> Path:
    return root / "annotations" / "instances_val.json"


# ---------------------------------------------------------------------------------------------- 1. deep nesting
def test_deeply_nested_annotation_json_names_the_file(tmp_path: Path, markup_data: Path):
    (tmp_path / "deep.json").write_text("[" * 100_000)
    out = run_cli("train", "--preset", "nanodet-plus-m", "--epochs", "1", "--imgsz", "64", "--batch", "2",
                  "--train-ann", "deep.json", "--train-images", str(markup_data / "train"),
                  "--val-ann", str(val_json(markup_data)), "--val-images", str(markup_data / "val"), cwd=tmp_path)
    assert_refused(out, "deep.json", "nested too deeply")


def test_deep_but_parsable_extra_field_does_not_reach_the_evaluator(markup_data: Path, tmp_path: Path):
    """pycocotools deep-copies the categories: a 600-deep extra field there would be a RecursionError."""
    from detcli.evaluation.evaluator import CocoEvaluator

    ann_file = tmp_path / "val.json"
    ann_file.write_text(val_json(markup_data).read_text())
    edit_json(ann_file, lambda d: d["categories"][0].update(extra=json.loads("[" * 600 + "]" * 600)))
    ds = CocoDetection(ann_file, markup_data / "val", transform=None, filter_empty=False)
    assert CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names).evaluate().num_images == 4


def test_deeply_nested_yaml_names_the_file(tmp_path: Path):
    (tmp_path / "deep.yaml").write_text("base: nanodet-plus-m\nmodel: " + "[" * 100_000)
    assert_refused(run_cli("train", "--preset", "deep.yaml", cwd=tmp_path), "deep.yaml", "nested too deeply")
    (tmp_path / "data.yaml").write_text("val: " + "[" * 100_000)
    assert_refused(run_cli("train", "--preset", "nanodet-plus-m", "--data", "data.yaml", cwd=tmp_path),
                   "dataset file data.yaml", "nested too deeply")


# ---------------------------------------------------------------------------------------------- 2. markup
def test_markup_category_names_train_and_evaluate_literally(trained, tmp_path: Path):
    best, train = trained
    for name in MARKUP_NAMES:
        assert f"class {name}" in train.stdout  # dataset summary table
    ev = run_cli("eval", "--weights", str(best), "--imgsz", "64", "--workers", "0", cwd=tmp_path)
    assert ev.returncode == 0, ev.stderr[-3000:]
    table = ev.stdout[ev.stdout.index("per class"):]
    assert all(name in table for name in MARKUP_NAMES), table


@pytest.mark.parametrize("plain", [True, False])
def test_reporter_prints_user_text_literally(plain: bool, monkeypatch, capsys):
    monkeypatch.setenv("FORCE_COLOR", "1")  # the rich mode behaves as on a terminal: styles become ANSI codes
    buf = io.StringIO()
    rep = Reporter(force_plain=plain, file=buf)
    text = "[/bold] [red]x[/red] /d/[v1].jpg"
    rep.print(text)
    rep.info(text)
    rep.warn(text)
    rep.table(text, ["class", "n"], [[text, 1]])
    rep.key_values(text, {text: text})
    rep.epoch_row({text: 1.0})
    for _ in rep.progress(range(2), description=text):
        pass
    rep.error(text)
    out, err = buf.getvalue(), capsys.readouterr().err
    assert out.count(text) >= 6 and text in err, out + err
    assert ("WARNING" in out) and ("error:" in err)
    if not plain:  # detcli's own styling is kept: yellow WARNING, bold red "error:"
        assert "\x1b[33mWARNING" in out and "\x1b[1;31merror:" in err


# ---------------------------------------------------------------------------------------------- 3. non-UTF-8
def test_preset_that_is_not_utf8_names_the_file(tmp_path: Path):
    (tmp_path / "latin1.yaml").write_bytes("base: nanodet-plus-m\ndescription: caf\xe9\n".encode("latin-1"))
    assert_refused(run_cli("train", "--preset", "latin1.yaml", cwd=tmp_path), "latin1.yaml", "not UTF-8")


def test_set_on_a_checkpoint_preset_never_reads_the_checkpoint_as_yaml(trained, tmp_path: Path):
    best, _ = trained
    out = run_cli("eval", "--weights", str(best), "--set", "model.x=1", "--set", "test.score_thr=.nan", cwd=tmp_path)
    assert_refused(out, f"stored in {best}", "model.x (from --set): unknown field", "test.score_thr (from --set)")
    assert "UnicodeDecodeError" not in out.stderr


# ---------------------------------------------------------------------------------------------- 4. non-finite
def test_non_finite_set_value_is_refused(tmp_path: Path):
    out = run_cli("train", "--preset", "nanodet-plus-m", "--set", "train.optimizer.lr=.inf", cwd=tmp_path)
    assert_refused(out, "train.optimizer.lr (from --set)", "finite")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "field, value",
    [
        ("train.optimizer.lr", ".inf"),
        ("train.optimizer.lr", "1e999"),  # YAML reads it as a string; as a float it is inf
        ("train.warmup.ratio", ".nan"),
        ("train.ema.gamma", ".inf"),
        ("input.mean", "[.nan, 1, 2]"),
        ("augment.scale", "[0.5, .inf]"),
        ("model.loss.dfl_weight", "-.inf"),
        ("test.score_thr", ".nan"),
        ("demo.optimizer.lr", ".inf"),
    ],
)
def test_every_float_field_refuses_non_finite_numbers(field: str, value: str):
    with pytest.raises(PresetError, match=re.escape(field) + r"[.0-9]* \(from --set\): .*finite"):
        load_preset("nanodet-plus-m", [f"{field}={value}"])


def test_non_finite_number_in_a_preset_file_gives_its_line(tmp_path: Path):
    f = tmp_path / "p.yaml"
    f.write_text("base: nanodet-plus-m\ntrain:\n  optimizer:\n    lr: .nan\n")
    with pytest.raises(PresetError, match=r"train\.optimizer\.lr \(line 4\): .*finite"):
        load_preset(str(f))


# ---------------------------------------------------------------------------------------------- 5. demo schedule
def test_explicit_train_values_win_over_the_demo_schedule():
    overrides = ["train.batch=3", "train.val_interval=2", "train.warmup.steps=7", "train.optimizer.lr=0.002"]
    preset, _ = load_preset("nanodet-plus-m", overrides)
    assert preset.demo["batch"] == 8 and preset.demo["val_interval"] == 1 and preset.demo["warmup"]["steps"] == 100
    req = TrainRequest(preset="nanodet-plus-m", overrides=overrides, epochs=2, workers=0)
    cfg = run_train_config(preset, req, demo=True)
    assert (cfg.batch, cfg.val_interval, cfg.warmup.steps, cfg.epochs, cfg.workers) == (3, 2, 7, 2, 0)
    assert cfg.optimizer.lr == 0.002 and cfg.warmup.ratio == preset.train.warmup.ratio
    # what the user did not set still comes from the demo schedule
    assert run_train_config(preset, TrainRequest(preset="nanodet-plus-m"), demo=True).batch == 8
    req = TrainRequest(preset="nanodet-plus-m", overrides=["train.warmup.ratio=0.01"], batch=5)
    cfg = run_train_config(load_preset("nanodet-plus-m", req.overrides)[0], req, demo=True)
    assert (cfg.batch, cfg.warmup.steps, cfg.warmup.ratio) == (5, 100, 0.01)  # demo steps kept beside the user's ratio
    # on real data the demo schedule is not used at all
    cfg = run_train_config(preset, TrainRequest(preset="nanodet-plus-m", overrides=overrides), demo=False)
    assert (cfg.batch, cfg.val_interval, cfg.epochs) == (3, 2, preset.train.epochs)


# ---------------------------------------------------------------------------------------------- 6. missing image
def test_eval_says_which_val_images_are_missing(trained, markup_data: Path, tmp_path: Path):
    best, _ = trained
    data = variant(markup_data, tmp_path, lambda root: (root / "val" / "000001.jpg").unlink())
    out = run_cli("eval", "--weights", str(best), "--data", str(data), "--imgsz", "64", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING val: 1 of 4 image file(s) missing" in out.stdout and "000001.jpg" in out.stdout, out.stdout
    assert json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())["num_images"] == 3


# ---------------------------------------------------------------------------------------------- 7. worker errors
def test_corrupt_val_image_in_a_worker_is_a_message_only(trained, markup_data: Path, tmp_path: Path):
    best, _ = trained
    data = variant(markup_data, tmp_path, lambda root: (root / "val" / "000002.jpg").write_bytes(b"not a jpeg"))
    out = run_cli("eval", "--weights", str(best), "--data", str(data), "--imgsz", "64", "--workers", "1",
                  "--batch", "2", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]  # skipped and counted (tests/e2e/test_data_eval_robustness.py)
    assert "1 of 4 image(s) could not be read" in " ".join(out.stdout.split()) and "000002.jpg" in out.stdout
    assert "DataLoader worker" not in out.stderr and "Traceback" not in out.stderr, out.stderr


# ---------------------------------------------------------------------------------------------- 8. paths
def test_file_names_leaving_the_image_folder_are_refused_in_eval(trained, markup_data: Path, tmp_path: Path):
    best, _ = trained

    def escape(root: Path) -> None:
        def edit(data):
            data["images"][1]["file_name"] = "/etc/passwd"
            data["images"][2]["file_name"] = "../../../etc/passwd"

        edit_json(val_json(root), edit)

    data = variant(markup_data, tmp_path, escape)
    out = run_cli("eval", "--weights", str(best), "--data", str(data), "--imgsz", "64", "--workers", "0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "WARNING val: 2 image(s) refused unread" in out.stdout, out.stdout
    assert "/etc/passwd, ../../../etc/passwd" in out.stdout
    assert json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())["num_images"] == 2


def test_file_names_leaving_the_image_folder_are_counted_skips(tmp_path: Path):
    """Real, readable images outside the folder: served if the names were followed, refused instead."""
    img_dir = tmp_path / "data" / "imgs"
    img_dir.mkdir(parents=True)
    image = np.full((40, 50, 3), 127, dtype=np.uint8)
    for path in (img_dir / "in.jpg", tmp_path / "data" / "up.jpg", tmp_path / "abs.jpg"):
        cv2.imwrite(str(path), image)
    names = ["in.jpg", "../up.jpg", str(tmp_path / "abs.jpg"), "sub/../../up.jpg"]
    images = [{"id": i + 1, "file_name": n, "width": 50, "height": 40} for i, n in enumerate(names)]
    ann_file = tmp_path / "data" / "ann.json"
    ann_file.write_text(json.dumps({"images": images, "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    ds = CocoDetection(ann_file, img_dir, transform=None, filter_empty=False)
    summary = ds.summary()
    assert len(ds) == 1 and ds.image_info(0)["file_name"] == "in.jpg"
    assert summary.refused_images == 3 and summary.refused_examples == names[1:] and summary.missing_images == 0
    assert any("3 image(s) refused unread" in line for line in summary.problems())
    assert "refused: path outside folder" in _render(summary.to_table())

    edit_json(ann_file, lambda d: d["images"].pop(0))  # nothing left inside: an error naming the files
    with pytest.raises(DatasetError, match=r"none of the 3 images .*outside the image folder: \.\./up\.jpg"):
        CocoDetection(ann_file, img_dir, transform=None, filter_empty=False)


@pytest.mark.parametrize(
    "name, escapes",
    [
        ("a.jpg", False), ("sub/a.jpg", False), ("./a.jpg", False), ("sub/../a.jpg", False),
        ("/etc/passwd", True), ("../../../etc/passwd", True), ("sub/../../a.jpg", True),
        ("..\\a.jpg", True), ("C:\\imgs\\a.jpg", True), ("\\\\server\\share\\a.jpg", True),
    ],
)
def test_escapes_image_dir(name: str, escapes: bool):
    assert escapes_image_dir(name) is escapes


def _render(renderable) -> str:
    buf = io.StringIO()
    Reporter(force_plain=True, file=buf).print(renderable)
    return buf.getvalue()
