"""GhostNet backbone (Han et al., CVPR 2020) as NanoDet ships it, and the NanoDet-Plus preset built on it.

Expected shapes are those of the official unit test (RangiLyu/nanodet ``tests/test_models/test_backbone/
test_ghostnet.py``); parameter counts and MACs were counted on the official module (the golden fixture
``tests/golden/nanodet-plus-ghostnet.json`` records them, ``test_golden_parity.py`` checks them from there). The
ImageNet file is written here under the official key names taken from that fixture's spec, not from detcli's own
state dict.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from detcli.config.loader import load_preset
from detcli.config.schema import NanoDetPlusConfig
from detcli.errors import DetcliError, PresetError
from detcli.models import build_model
from tests.support.cli_subprocess import run_cli_forked
from detcli.models.backbones.ghostnet import (
    IMAGENET_FILE,
    GhostBottleneck,
    GhostNet,
    SqueezeExcite,
    load_imagenet_weights,
    make_divisible,
)
from detcli.models.complexity import conv_macs, conv_params, inference_params, total_params
from detcli.models.detectors.nanodet_plus import NanoDetPlus
from detcli.models.layers import DepthwiseConv2d
from detcli.models.necks.ghost_blocks import GhostBlocks
from tests.golden.weights import golden_state_dict

torch.set_num_threads(1)
PRESET = "nanodet-plus-ghostnet"
FIXTURE = Path(__file__).resolve().parents[1] / "golden" / f"{PRESET}.json"


def official_backbone_spec() -> list[tuple[str, list[int]]]:
    """The official GhostNet 1.0× state-dict keys and shapes (the fixture's ``backbone.*``, prefix removed)."""
    spec = json.loads(FIXTURE.read_text())["spec"]
    return [(k.removeprefix("backbone."), shape) for k, shape in spec if k.startswith("backbone.")]


def imagenet_file(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A stand-in for Huawei's ``state_dict_73.98.pth``: a bare state dict under the official key names, with the
    classifier that the backbone does not have (``conv_head``, ``classifier``)."""
    state = golden_state_dict(official_backbone_spec(), seed)
    state["conv_head.weight"] = torch.randn(1280, 960, 1, 1)
    state["conv_head.bias"] = torch.randn(1280)
    state["classifier.weight"] = torch.randn(1000, 1280)
    state["classifier.bias"] = torch.randn(1000)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return state


# ---------------------------------------------------------------- structure
def test_make_divisible_by_hand():
    assert [make_divisible(v) for v in (16, 12, 18, 54, 30, 84, 1)] == [16, 12, 20, 56, 32, 84, 4]
    assert make_divisible(10, 8) == 16  # 8 would be 20 % below 10


@pytest.mark.parametrize("width, channels", [
    (1.0, [16, 24, 24, 40, 40, 80, 112, 160, 160, 960]),
    (0.75, [12, 20, 20, 32, 32, 60, 84, 120, 120, 720]),
])
def test_every_stage_has_the_official_shape(width, channels):
    model = GhostNet(width, out_stages=tuple(range(10)), act="ReLU6").eval()
    with torch.no_grad():
        outs = model(torch.rand(1, 3, 64, 64))
    sides = [32, 16, 16, 8, 8, 4, 4, 2, 2, 2]  # strides 2, 4, 4, 8, 8, 16, 16, 32, 32, 32
    assert [tuple(o.shape) for o in outs] == [(1, c, s, s) for c, s in zip(channels, sides)]
    assert model.stage_channels == tuple(channels)


def test_default_stages_feed_strides_8_16_32():
    model = GhostNet().eval()
    assert model.out_channels == (40, 112, 960)
    with torch.no_grad():
        outs = model(torch.zeros(1, 3, 320, 320))
    assert [tuple(o.shape[1:]) for o in outs] == [(40, 40, 40), (112, 20, 20), (960, 10, 10)]
    with pytest.raises(ValueError, match="out_stages"):
        GhostNet(out_stages=(4, 10))


def test_squeeze_excite_by_hand():
    """mean over H, W → conv_reduce → ReLU → conv_expand → hard sigmoid (relu6(x + 3) / 6) → times the input."""
    se = SqueezeExcite(4)  # reduced: make_divisible(4 · 0.25) = 4
    with torch.no_grad():
        for conv in (se.conv_reduce, se.conv_expand):
            conv.weight.copy_(torch.eye(4).view(4, 4, 1, 1))
        se.conv_reduce.bias.fill_(-1.0)
        se.conv_expand.bias.zero_()
        x = torch.tensor([2.0, 0.5, -3.0, 10.0]).view(1, 4, 1, 1).expand(1, 4, 2, 2)
        gate = torch.tensor([4 / 6, 0.5, 0.5, 1.0])  # hard_sigmoid(relu([1, -0.5, -4, 9]))
        torch.testing.assert_close(se(x), x * gate.view(1, 4, 1, 1))
    # the SE keeps ReLU whatever the network's activation (official: built without it)
    acts = {type(m.act1) for m in GhostNet(act="LeakyReLU").modules() if isinstance(m, SqueezeExcite)}
    assert acts == {nn.ReLU}


def test_bottleneck_stride_two_and_identity_shortcut():
    down = GhostBottleneck(16, 48, 24, 3, act="ReLU", stride=2).eval()
    assert down.conv_dw.stride == (2, 2) and down.conv_dw.groups == 48 and down.se is None
    assert [type(m) for m in down.shortcut] == [DepthwiseConv2d, nn.BatchNorm2d, nn.Conv2d, nn.BatchNorm2d]
    x = torch.randn(1, 16, 15, 16)
    with torch.no_grad():
        assert down(x).shape == (1, 24, 8, 8)
    same = GhostBottleneck(24, 72, 24, 3, act="ReLU", se_ratio=0.25).eval()
    assert len(same.shortcut) == 0 and not hasattr(same, "conv_dw") and same.se is not None
    x = torch.randn(1, 24, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(same(x), same.ghost2(same.se(same.ghost1(x))) + x)


def test_ghostpan_reuses_the_ghostnet_blocks():
    assert isinstance(GhostBlocks(192, 96).blocks[0], GhostBottleneck)


def test_official_key_names_and_every_depthwise_conv_is_the_cpu_amp_one():
    backbone = GhostNet()
    assert [(k, list(v.shape)) for k, v in backbone.state_dict().items()] == official_backbone_spec()
    model = NanoDetPlus.from_config(NanoDetPlusConfig(type="nanodet_plus", backbone={"type": "ghostnet"}), 80)
    depthwise = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert depthwise and all(isinstance(m, DepthwiseConv2d) and m.groups == m.in_channels for m in depthwise)


def test_parameter_counts_and_macs_equal_the_official_module():
    """Counted on the official NanoDetPlus built from nanodet-plus-m_320.yml with the GhostNet backbone section."""
    model = NanoDetPlus.from_config(NanoDetPlusConfig(type="nanodet_plus", backbone={"type": "ghostnet"}), 80)
    assert (conv_params(model.backbone), total_params(model.backbone)) == (2_649_460, 2_671_428)
    assert inference_params(model) == {"conv": 3_090_740, "all": 3_121_732}  # README convention: 3.09 M
    assert total_params(model) == 6_283_512  # with the AGM
    assert conv_macs(model, 320) == 474_447_744  # 0.95 GFLOPs as NanoDet counts (2 × MACs)


# ---------------------------------------------------------------- ImageNet weights
def test_imagenet_weights_round_trip_under_the_official_key_names(tmp_path):
    state = imagenet_file(tmp_path / "ghostnet.pth")
    backbone = GhostNet()
    message = load_imagenet_weights(backbone, tmp_path / "ghostnet.pth")
    assert message == f"loaded ImageNet weights for GhostNet 1× from {tmp_path / 'ghostnet.pth'}"
    own = backbone.state_dict()
    assert all(torch.equal(own[k], state[k]) for k in own)  # every tensor from the file, the classifier skipped


def test_imagenet_weights_from_the_torch_hub_cache_or_a_clear_message(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    expected = tmp_path / "hub" / "checkpoints" / IMAGENET_FILE
    preset, _ = load_preset(PRESET)
    model = build_model(preset, 80)
    assert model.backbone_init_message == f"ImageNet weights not found at {expected}; backbone initialised randomly"
    state = imagenet_file(expected, seed=3)
    model = build_model(preset, 80)
    assert model.backbone_init_message == f"loaded ImageNet weights for GhostNet 1× from {expected}"
    assert torch.equal(model.backbone.blocks[6][4].se.conv_expand.weight, state["blocks.6.4.se.conv_expand.weight"])
    wide, _ = load_preset(PRESET, ["model.width=1.5x"])
    assert "no ImageNet checkpoint for GhostNet width 1.5×" in build_model(wide, 80).backbone_init_message


def test_imagenet_weights_errors_name_the_file(tmp_path):
    with pytest.raises(DetcliError, match="backbone weights file not found"):
        load_imagenet_weights(GhostNet(), tmp_path / "missing.pth")
    other = tmp_path / "shufflenet.pth"
    torch.save({"conv1.0.weight": torch.zeros(24, 3, 3, 3)}, other)
    with pytest.raises(DetcliError, match=f"{other} is not a GhostNet 1× checkpoint .* missing, e.g. conv_stem"):
        load_imagenet_weights(GhostNet(), other)
    wide = tmp_path / "wide.pth"
    imagenet_file(wide)
    with pytest.raises(DetcliError, match="shape mismatch at conv_stem.weight"):
        load_imagenet_weights(GhostNet(1.5), wide)


# ---------------------------------------------------------------- presets
def test_any_nanodet_plus_preset_can_name_the_backbone():
    preset, _ = load_preset("nanodet-plus-m", ["model.backbone.type=ghostnet"])
    assert isinstance(build_model(preset, 3, pretrained=False).backbone, GhostNet)
    own, _ = load_preset(PRESET)
    assert own.model.backbone.out_stages == (4, 6, 9) and own.model.backbone.act == "LeakyReLU"
    assert own.train == load_preset("nanodet-plus-m")[0].train  # NanoDet-Plus' recipe
    assert own.zoo.coco_ap is None and "No official" in own.reference


@pytest.mark.parametrize("override, expected", [
    ("model.backbone.out_stages=[3,4,9]", r"model.backbone.out_stages \(from --set\): .*\[3, 4, 9\]: one stage per"),
    ("model.backbone.type=mobilenet", r"model.backbone .*'mobilenet'.*'shufflenetv2', 'ghostnet'"),
    ("model.backbone.act=Swish", r"model.backbone.act \(from --set\): .*\(got 'Swish'\)"),
])
def test_bad_backbone_settings_are_preset_errors(override, expected):
    with pytest.raises(PresetError, match=expected):
        load_preset(PRESET, [override])


def test_bad_backbone_setting_through_the_cli(tmp_path):
    out = run_cli_forked("train", "--preset", PRESET, "--set", "model.backbone.out_stages=[4,6,8]", cwd=tmp_path)
    assert out.returncode == 2 and "out_stages" in out.stderr and "then 9" in out.stderr
    assert "Traceback" not in out.stdout + out.stderr


def test_the_ghostnet_preset_trains_from_the_hub_cache_weights(tmp_path, tiny_data):
    """A short run of the preset on the tiny data with ImageNet weights from a local torch hub cache: it finishes,
    says where the weights came from, and writes best.pt / last.pt; a wrong file in the cache is a message."""
    hub_file = tmp_path / "torch" / "hub" / "checkpoints" / IMAGENET_FILE
    imagenet_file(hub_file)
    train = run_cli_forked("train", "--preset", PRESET, "--data", str(tiny_data), "--epochs", "1", "--batch", "4",
                           "--imgsz", "96", "--workers", "0", "--set", "train.val_interval=1", cwd=tmp_path,
                           TORCH_HOME=str(tmp_path / "torch"))
    assert train.returncode == 0, train.stdout[-3000:] + train.stderr[-3000:]
    assert f"loaded ImageNet weights for GhostNet 1× from {hub_file}" in " ".join((train.stdout + train.stderr).split())
    weights = tmp_path / "runs" / "train" / "train" / "weights"
    assert (weights / "best.pt").is_file() and (weights / "last.pt").is_file()

    torch.save({"conv1.0.weight": torch.zeros(24, 3, 3, 3)}, hub_file)
    bad = run_cli_forked("train", "--preset", PRESET, "--data", str(tiny_data), "--epochs", "1", "--batch", "4",
                         "--imgsz", "96", "--workers", "0", "--name", "bad", cwd=tmp_path,
                         TORCH_HOME=str(tmp_path / "torch"))
    assert bad.returncode == 2 and "is not a GhostNet 1× checkpoint" in bad.stderr
    assert "Traceback" not in bad.stdout + bad.stderr
