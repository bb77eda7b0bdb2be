"""``detcli presets``: the table of built-in presets, its figures against a count of the models, and the resolved
YAML that ``detcli train -p`` takes back unchanged."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from detcli.app.presets import FAMILIES, preset_rows, resolved_yaml
from detcli.config.loader import builtin_presets, load_preset
from detcli.models import build_model, detector_class
from detcli.models.complexity import reported_gflops, reported_params
from tests.support.cli_subprocess import run_cli_forked

BUILTIN = sorted(builtin_presets())


@pytest.mark.parametrize("name", BUILTIN)
def test_zoo_figures_are_a_count_of_the_model(name):
    """The stored params/GFLOPs are what the train summary counts for the model with 80 classes (on the meta
    device: no memory, no compute), and the AP is the one the preset's reference cites."""
    preset, _ = load_preset(name)
    zoo = preset.zoo
    assert zoo is not None and None not in (zoo.params, zoo.gflops)
    with torch.device("meta"):
        model = build_model(preset, 80, pretrained=False).eval()
    w, h = preset.input.size
    assert reported_params(model)[0] == zoo.params
    assert round(reported_gflops(model, (h, w))[0], 2) == zoo.gflops
    if zoo.coco_ap is None:  # a recipe without a published result (nanodet-plus-ghostnet) says so
        assert "No official" in preset.reference
    else:
        assert f"AP {zoo.coco_ap:.1f}" in preset.reference  # the published figure, cited in prose beside it
    assert type(model) is detector_class(preset)


def test_zoo_figures_follow_each_family_convention():
    rows = {r.name: r for r in preset_rows()}
    assert list(rows) == [r.name for r in preset_rows()] and set(rows) == set(BUILTIN)
    assert [r.family for r in rows.values()] == sorted((r.family for r in rows.values()),
                                                       key=list(FAMILIES.values()).index)
    assert rows["nanodet-plus-m"].params == 1_174_768  # NanoDet's README: 1.17 M, Conv2d weights and biases
    assert rows["nanodet-plus-m"].params_counted == "Conv2d weights and biases, as NanoDet's README counts"
    assert rows["nanodet-plus-m"].gflops_counted == "2×MACs" and rows["nanodet-plus-m"].gflops == 0.90
    assert rows["rtmdet-tiny"].gflops_counted == "MACs, as MMDetection counts" and rows["rtmdet-tiny"].gflops == 8.04
    assert rows["rtmdet-x"].params == 94_855_572 and rows["rtmdet-x"].coco_ap == 52.8
    assert rows["retinanet-r50-fpn"].input_size == (1333, 800)


def test_a_preset_built_on_another_does_not_inherit_its_figures(tmp_path: Path):
    mine = tmp_path / "wide.yaml"
    mine.write_text("base: nanodet-plus-m\nmodel:\n  width: '1.5x'\n")
    assert load_preset(mine)[0].zoo is None
    assert load_preset("nanodet-plus-m-416")[0].zoo.coco_ap == 30.4  # built on nanodet-plus-m (27.0): its own


@pytest.mark.parametrize("name", BUILTIN)
def test_resolved_yaml_loads_back_to_the_same_preset(tmp_path: Path, name):
    text = resolved_yaml(name)
    assert text.startswith(f"# detcli preset {name} (built in), resolved")
    data = yaml.safe_load(text)
    assert "base" not in data and data["train"]["patience"] is None and "warmup" in data["train"]  # defaults filled
    copy = tmp_path / "copy.yaml"
    copy.write_text(text)
    assert load_preset(copy)[0] == load_preset(name)[0]


def test_presets_command_lists_every_preset_and_prints_one(tmp_path: Path):
    table = run_cli_forked("presets", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    for row in preset_rows():
        line = next(l for l in lines if l.split() and l.split()[0] == row.name)
        ap = "–" if row.coco_ap is None else f"{row.coco_ap:.1f}"
        assert row.family in line and f"{row.params / 1e6:.2f} M" in line and ap in line
    assert "RTMDet        params: every parameter, as MMDetection counts; GFLOPs: MACs, as MMDetection counts" \
        in table.stdout
    assert "NanoDet-Plus  params: Conv2d weights and biases, as NanoDet's README counts; GFLOPs: 2×MACs" in table.stdout

    one = run_cli_forked("presets", "rtmdet-s", "--set", "train.epochs=7", cwd=tmp_path)
    assert one.returncode == 0, one.stderr
    (tmp_path / "mine.yaml").write_text(one.stdout)
    again = run_cli_forked("presets", "mine.yaml", cwd=tmp_path)  # a YAML path works as well as a name
    mine = load_preset(tmp_path / "mine.yaml")[0]
    assert mine.train.epochs == 7 and mine.name == "rtmdet-s"
    assert again.returncode == 0 and "# detcli preset rtmdet-s (mine.yaml)" in again.stdout
    assert yaml.safe_load(again.stdout) == yaml.safe_load(one.stdout)


@pytest.mark.parametrize("args, expected", [
    (["presets", "rtmdet-z"], "unknown preset 'rtmdet-z'. Did you mean 'rtmdet-x'"),
    (["presets", "--set", "train.epochs=3"], "--set changes one preset: give its NAME"),
    (["presets", "nanodet-plus-m", "--set", "train.epoch=3"], "did you mean 'train.epochs'"),
])
def test_presets_command_errors_are_messages(tmp_path: Path, args, expected):
    out = run_cli_forked(*args, cwd=tmp_path)
    assert out.returncode == 2 and expected in out.stderr and "Traceback" not in out.stderr + out.stdout


def test_help_points_to_detcli_presets(tmp_path: Path):
    top = run_cli_forked("--help", cwd=tmp_path)
    text = " ".join(top.stdout.split())
    assert "NanoDet-Plus, RTMDet, RetinaNet and DeFCN presets (`detcli presets` lists them)" in text
    for cmd in ("train", "eval", "predict", "export", "inspect-anchors"):
        help_text = " ".join(run_cli_forked(cmd, "--help", cwd=tmp_path).stdout.split())
        assert "`detcli presets` lists them" in help_text, cmd
