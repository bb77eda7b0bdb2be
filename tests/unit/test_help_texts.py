"""``--help`` of every command says what a user types: metavars, not typer's type placeholders; a ``--set``
example the command really uses; the output-folder flags train has (``--project``/``--name``/``--exist-ok``)
where a command writes a folder of results."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from typer.main import get_command
from typer.testing import CliRunner

from detcli.cli import app
from tests.support.cli_subprocess import run_cli_forked

COMMANDS = ["train", "eval", "predict", "export", "inspect-anchors", "presets"]
PLACEHOLDER = re.compile(r"\{[a-z_]+\}|<[a-z_]+(\[[a-z_, ]+\])?( range)?>")  # {source}, <list[str]>, <int range>


def help_text(*args: str) -> str:
    """``detcli ARGS --help`` in-process, at 100 columns, its wrapping undone (one space between words)."""
    out = CliRunner().invoke(app, [*args, "--help"], prog_name="detcli", env={"COLUMNS": "100"})
    assert out.exit_code == 0, out.output
    return " ".join(out.output.split())


def option_help(text: str, flag: str) -> str:
    """The help of ``flag`` in an unwrapped help text: from the flag to the next option."""
    start = text.index(f" {flag} ")
    return re.split(r" --?[a-z][a-z-]* ", text[start + len(flag) + 2:], maxsplit=1)[0]


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_help_names_values_by_metavars_only(command):
    text = help_text(*([command] if command else []))
    found = PLACEHOLDER.findall(text)
    assert not PLACEHOLDER.search(text), f"detcli {command} --help shows {found}: {text}"


def test_every_option_that_takes_a_value_shows_a_metavar():
    """Each option's first help column reads ``--flag METAVAR`` (flags excepted): the placeholder test above
    cannot pass by showing nothing."""
    group = get_command(app)
    for name in COMMANDS:
        for param in group.commands[name].params:
            if param.param_type_name == "option" and not param.is_flag:
                assert param.metavar and param.metavar.strip("[]").replace("=", "").isupper(), (name, param.name)


def test_usage_lines_show_arguments_as_words():
    assert "Usage: detcli predict [OPTIONS] SOURCE " in help_text("predict")
    assert "Arguments: SOURCE Image, folder, glob or video." in help_text("predict")
    assert "Usage: detcli presets [OPTIONS] [NAME] " in help_text("presets")
    assert "--set FIELD=VALUE" in help_text("train")


@pytest.mark.parametrize("command, field", [
    ("train", "train.optimizer.lr=0.002"),
    ("eval", "test.iou_thr=0.5"),
    ("predict", "test.iou_thr=0.5"),
    ("inspect-anchors", "model.assigner.pos_iou_thr=0.4"),
])
def test_set_help_gives_a_field_the_command_uses(command, field):
    text = help_text(command)
    help_of_set = option_help(text, "--set FIELD=VALUE")
    assert field in help_of_set, help_of_set
    if command != "train":
        assert "train." not in help_of_set


def test_inspect_examples_set_only_model_or_input_fields():
    text = help_text("inspect-anchors")
    examples = re.findall(r"--set ([a-z_.]+)=", text.split("Options:")[0])
    assert examples and all(f.startswith(("model.", "input.")) for f in examples), examples


@pytest.mark.parametrize("command", ["inspect-anchors", "predict"])
def test_result_folders_are_named_as_in_train(command):
    text = help_text(command)
    for flag in ("--project DIR", "--name NAME", "--exist-ok"):
        assert f" {flag} " in text, flag
    assert "auto-numbered" in option_help(text, "--name NAME")


# ------------------------------------------------------------------------ the flags do what the help says
def test_inspect_anchors_name_and_exist_ok(tmp_path: Path, tiny_data: Path):
    """RetinaNet's MaxIoU looks at no prediction: a statistics pass over two images, no picture, no network."""
    base = ["inspect-anchors", "-p", "retinanet-r18-fpn", "--data", str(tiny_data), "--images", "0", "--limit",
            "2", "--workers", "0", "--imgsz", "128"]
    for extra, folder in (([], "mine"), ([], "mine2"), (["--exist-ok"], "mine")):
        out = run_cli_forked(*base, "--project", "inspected", "--name", "mine", *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert (tmp_path / "inspected" / folder / "stats.json").is_file(), folder
    assert sorted(p.name for p in (tmp_path / "inspected").iterdir()) == ["mine", "mine2"]


def test_predict_exist_ok_writes_into_the_named_folder(tmp_path: Path, tiny_data: Path):
    from detcli.config.loader import load_preset
    from detcli.data.demo import CLASSES
    from detcli.checkpoints.io import FORMAT, save_checkpoint
    from detcli.models import build_model

    preset, _ = load_preset("nanodet-plus-m")
    torch.manual_seed(0)
    ckpt = tmp_path / "m.pt"
    save_checkpoint(ckpt, {"format": FORMAT, "epoch": 1, "ema": None, "preset": preset.model_dump(mode="json"),
                           "model": build_model(preset, len(CLASSES), pretrained=False).state_dict(),
                           "input_size": [64, 64], "class_names": list(CLASSES)})
    image = sorted((tiny_data.parent / "val").iterdir())[0]
    base = ["predict", str(image), "--weights", str(ckpt), "--no-save", "--name", "p"]
    for extra, folder in (([], "p"), ([], "p2"), (["--exist-ok"], "p")):
        out = run_cli_forked(*base, *extra, cwd=tmp_path)
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"Results saved to runs/predict/{folder}" in " ".join(out.stdout.split()), out.stdout
    assert sorted(p.name for p in (tmp_path / "runs" / "predict").iterdir()) == ["p", "p2"]
