"""Presets: the shipped ones validate and keep the official recipe; bad ones fail early and say where."""
from pathlib import Path

import pytest

from detcli.config.loader import builtin_presets, load_preset
from detcli.config.schema import Preset
from detcli.errors import PresetError
from detcli.models import resolve_num_classes

NANODET = ["nanodet-plus-m", "nanodet-plus-m-416", "nanodet-plus-m-1.5x", "nanodet-plus-m-1.5x-416"]


def test_builtin_presets_are_shipped_and_valid():
    names = builtin_presets()
    for name in NANODET:
        assert name in names
        preset, path = load_preset(name)
        assert isinstance(preset, Preset) and preset.name == name and path.is_file()


@pytest.mark.parametrize(
    "name, width, size, neck",
    [("nanodet-plus-m", "1.0x", (320, 320), 96), ("nanodet-plus-m-416", "1.0x", (416, 416), 96),
     ("nanodet-plus-m-1.5x", "1.5x", (320, 320), 128), ("nanodet-plus-m-1.5x-416", "1.5x", (416, 416), 128)],
)
def test_nanodet_presets_carry_the_official_recipe(name, width, size, neck):
    p, _ = load_preset(name)
    assert (p.model.width, tuple(p.input.size), p.model.neck_channels) == (width, size, neck)
    assert p.model.aux_channels == 2 * neck and p.model.detach_epoch == 10 and p.model.reg_max == 7
    assert p.input.channel_order == "bgr" and not p.input.keep_ratio
    assert p.input.mean == (103.53, 116.28, 123.675) and p.input.std == (57.375, 57.12, 58.395)
    t = p.train
    assert (t.optimizer.type, t.optimizer.lr, t.optimizer.weight_decay) == ("adamw", 0.001, 0.05)
    assert (t.warmup.steps, t.warmup.ratio, t.schedule.type, t.schedule.eta_min) == (500, 0.0001, "cosine", 5e-05)
    assert (t.epochs, t.batch, t.grad_clip, t.ema.decay) == (300, 96, 35, 0.9998)
    assert (p.test.score_thr, p.test.iou_thr, p.test.max_det) == (0.05, 0.6, 100)
    assert not p.data.filter_empty
    demo = p.demo_train()
    assert demo.epochs < t.epochs and demo.optimizer == t.optimizer and demo.grad_clip == t.grad_clip


def test_unknown_key_names_file_path_and_closest_name(tmp_path: Path):
    f = tmp_path / "mine.yaml"
    f.write_text("base: nanodet-plus-m\nmodel:\n  widht: '1.5x'\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(f))
    msg = str(e.value)
    assert str(f) in msg and "model.widht" in msg and "did you mean 'model.width'" in msg and "line 3" in msg


def test_wrong_type_and_out_of_range(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text("base: nanodet-plus-m\ntrain:\n  optimizer:\n    lr: -0.1\n  epochs: many\n")
    with pytest.raises(PresetError) as e:
        load_preset(str(f))
    msg = str(e.value)
    assert "train.optimizer.lr (line 4)" in msg and "greater than 0" in msg
    assert "train.epochs (line 5)" in msg and "integer" in msg


def test_set_overrides_are_validated_at_once():
    p, _ = load_preset("nanodet-plus-m", ["train.optimizer.lr=0.002", "model.detach_epoch=3", "input.size=[416,416]"])
    assert p.train.optimizer.lr == 0.002 and p.model.detach_epoch == 3 and p.input.size == (416, 416)
    with pytest.raises(PresetError, match=r"model.head_kernel \(from --set\).*3 or 5"):
        load_preset("nanodet-plus-m", ["model.head_kernel=7"])
    with pytest.raises(PresetError, match="did you mean 'train.epochs'"):
        load_preset("nanodet-plus-m", ["train.epoch=3"])
    with pytest.raises(PresetError, match="expected path.to.field=value"):
        load_preset("nanodet-plus-m", ["train.epochs"])


def test_demo_overrides_are_validated_when_the_preset_loads(tmp_path: Path):
    f = tmp_path / "demo.yaml"
    f.write_text("base: nanodet-plus-m\ndemo:\n  epochs: 0\n")
    with pytest.raises(PresetError, match="epochs"):
        load_preset(str(f))


def test_family_mismatch_and_unknown_preset():
    with pytest.raises(PresetError, match="does not fit model.type"):
        load_preset("nanodet-plus-m", ["augment={type: resize_flip}"])
    with pytest.raises(PresetError, match="Did you mean 'nanodet-plus-m'"):
        load_preset("nanodet-plus-n")
    with pytest.raises(PresetError, match="not found"):
        load_preset("no/such/file.yaml")


def test_bad_yaml_names_the_file(tmp_path: Path):
    f = tmp_path / "broken.yaml"
    f.write_text("model: [unclosed\n")
    with pytest.raises(PresetError, match=r"broken\.yaml: invalid YAML at line 2"):
        load_preset(str(f))


def test_class_count_must_agree_with_the_dataset():
    p, _ = load_preset("nanodet-plus-m")
    assert resolve_num_classes(p, 5) == 5  # unset: taken from the dataset
    p, _ = load_preset("nanodet-plus-m", ["model.num_classes=80"])
    assert resolve_num_classes(p, 80) == 80
    with pytest.raises(PresetError, match="model.num_classes is 80 but the dataset has 5"):
        resolve_num_classes(p, 5)
