"""Mixed precision on CPU: depthwise convs stay float32 under bfloat16 autocast, and ``train.amp: auto`` (on
only with AMX, where bfloat16 was measured to pay)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from detcli.config.loader import load_preset
from detcli.config.schema import TrainConfig
from detcli.engine import amp as amp_mod
from detcli.engine.amp import amp_decision, amp_enabled, amp_note, amp_warning, cpu_bfloat16
from detcli.models import build_model
from detcli.models.layers import DepthwiseConv2d


def test_depthwise_conv_runs_in_float32_under_cpu_autocast():
    torch.manual_seed(0)
    dw = DepthwiseConv2d(6, 5, stride=2)
    plain = nn.Conv2d(6, 6, 5, 2, 2, groups=6, bias=False)
    assert list(dw.state_dict()) == list(plain.state_dict()) and dw.weight.shape == plain.weight.shape
    plain.load_state_dict(dw.state_dict())
    x = torch.randn(2, 6, 16, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = dw(x)
        y_plain = plain(x)
        y_bf16_in = dw(x.bfloat16())  # a bf16 input from a previous autocast conv is cast up
    assert y.dtype == torch.float32 and y_bf16_in.dtype == torch.float32 and y_plain.dtype == torch.bfloat16
    assert y.shape == (2, 6, 8, 8)
    torch.testing.assert_close(y, plain(x), rtol=0, atol=0)  # exactly the fp32 conv
    y.sum().backward()
    assert x.grad is not None and dw.weight.grad is not None and dw.weight.grad.dtype == torch.float32
    assert torch.equal(dw(x), plain(x))  # outside autocast: a plain conv


@pytest.mark.parametrize("name", ["nanodet-plus-m", "rtmdet-tiny"])
def test_every_depthwise_conv_of_the_lightweight_families_uses_the_policy(name):
    model = build_model(load_preset(name)[0], 80, pretrained=False)
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert grouped and all(type(m) is DepthwiseConv2d for m in grouped)
    x = torch.randn(2, 3, 128, 128)
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = model.loss(x, [_one_box(), _one_box()], [None, None], 0)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()


def _one_box():
    from detcli.structures import Target

    return Target(boxes=torch.tensor([[8.0, 8.0, 40.0, 48.0]]), labels=torch.tensor([1]))


def test_amp_true_and_false_are_obeyed_and_other_devices_never_autocast():
    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert amp_enabled(True, cpu) and not amp_enabled(False, cpu) and not amp_enabled(False, cuda)
    assert amp_enabled("auto", cuda) and amp_decision("auto", cuda) == (True, "CUDA")
    assert not amp_enabled(True, torch.device("mps")) and not amp_enabled("auto", torch.device("mps"))
    assert amp_warning(True, False, torch.device("mps")).endswith("training in fp32 on mps")


@pytest.mark.parametrize("kind, on, reason", [
    ("amx", True, "this CPU has AMX, where bfloat16 trains about 1.6× faster than fp32"),
    ("native", False, "this CPU has native bfloat16 but no AMX, where bfloat16 trained only about 1.1× faster "
                      "(AVX512-BF16); --amp turns it on"),
    ("none", False, "no native bfloat16 on this CPU"),
])
def test_amp_auto_on_cpu_takes_bfloat16_only_where_it_was_measured_to_pay(monkeypatch, kind, on, reason):
    cpu = torch.device("cpu")
    monkeypatch.setattr(amp_mod, "cpu_bfloat16", lambda: kind)
    assert amp_decision("auto", cpu) == (on, reason)
    assert amp_note("auto", on, cpu) == f"{'on (bfloat16)' if on else 'off'} (auto: {reason})"
    assert amp_note(True, True, cpu) == "on (bfloat16)" and amp_note(False, False, cpu) == "off"
    assert amp_enabled(True, cpu)  # asked for: on everywhere, warned only where bfloat16 is emulated
    assert (amp_warning(True, True, cpu) is not None) is (kind == "none")
    assert amp_warning("auto", on, cpu) is None  # auto never warns


@pytest.mark.parametrize("caps, mkldnn, kind", [
    ({"amx_bf16": True, "avx512_bf16": True}, True, "amx"),  # an Intel Xeon with AMX (Sapphire Rapids on)
    ({"amx_bf16": False, "avx512_bf16": True}, True, "native"),  # an AMD EPYC (Zen 4)
    ({"avx512_bf16": False}, True, "native"),  # Arm with BF16: oneDNN has it, no x86 flag says so
    ({"avx2": True}, False, "none"),
])
def test_cpu_bfloat16_reads_the_cpu_capabilities(monkeypatch, caps, mkldnn, kind):
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: caps, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: mkldnn)
    assert cpu_bfloat16() == kind


def test_amp_field_takes_auto_and_refuses_other_words():
    base = load_preset("nanodet-plus-m")[0].train.model_dump()
    assert TrainConfig.model_validate({**base, "amp": "auto"}).amp == "auto"
    with pytest.raises(ValueError, match="amp"):
        TrainConfig.model_validate({**base, "amp": "sometimes"})
    assert load_preset("nanodet-plus-m")[0].demo_train().amp == "auto"
    assert load_preset("nanodet-plus-m")[0].train.amp is False  # the official recipe: fp32
