"""Reading a checkpoint never runs code from it; malformed or mismatched weights give a clear message.

Three kinds of crafted file (a protocol-4 dotted-name escape, a ``__reduce__`` payload, a TorchScript archive
whose ``__setstate__`` acts) each try to create a marker file. They go through every command that reads
weights, in a subprocess as a user runs them: ``eval/predict/train --weights`` and plain ``eval``/``predict``
(the file as the latest run's ``best.pt``); each kind once in a fresh interpreter (``python -m detcli``), the
other commands in processes forked from a helper that has imported detcli already (cli_subprocess). Official-like
files are built with stand-in classes pickled under the official module names (nothing from NanoDet, MMEngine or
Lightning is imported).
"""
from __future__ import annotations

import json
import os
import pickle
import types
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Tuple

import numpy as np
import pytest
import torch

from detcli.checkpoints import io as ckpt_mod
from detcli.config.loader import load_preset
from detcli.data.coco_names import COCO80
from detcli.errors import DetcliError
from detcli.inference.loading import load_for_inference, load_weights_into
from detcli.models import build_model
from tests.support.cli_subprocess import run_cli, run_cli_forked
from tests.support.official_pickles import AttributeDict, CfgNode, torch_zip, _weights, mmdet3_ckpt

REFUSED = "refused because it contains code"
NOT_RUN = "nothing in it was run"


# ---------------------------------------------------------------------------------------------- crafted files
def _short_str(text: str) -> bytes:
    raw = text.encode()
    return pickle.SHORT_BINUNICODE + bytes([len(raw)]) + raw


def dotted_escape_pickle(marker: Path) -> bytes:
    """Protocol 4: STACK_GLOBAL ``numpy.dtypes`` + ``__builtins__.get`` resolves to the builtins' ``get``;
    ``get("eval")`` then runs the code."""
    code = f"open({str(marker)!r}, 'w').close()"
    return (pickle.PROTO + b"\x04" + _short_str("numpy.dtypes") + _short_str("__builtins__.get") + pickle.STACK_GLOBAL
            + _short_str("eval") + pickle.TUPLE1 + pickle.REDUCE
            + _short_str(code) + pickle.TUPLE1 + pickle.REDUCE + pickle.STOP)


class _SystemCall:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Scripted(torch.nn.Module):
    """TorchScript module whose ``__setstate__`` (run by ``torch.jit.load``) creates the file ``marker``."""

    def __init__(self, marker: str) -> None:
        super().__init__()
        self.marker = marker

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 1

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.marker, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.marker = state[0]
        created = torch.from_file(self.marker, shared=True, size=1)  # creates the file
        self.training = state[1] and created.numel() == 1


def craft(kind: str, path: Path, marker: Path) -> Path:
    if kind == "dotted-name":
        torch_zip(path, dotted_escape_pickle(marker))
    elif kind == "reduce":
        torch.save({"state_dict": {"w": torch.ones(1)}, "hp": _SystemCall(f"touch {marker}")}, path)
    else:
        torch.jit.script(_Scripted(str(marker))).save(str(path))
    return path


KINDS = ["dotted-name", "reduce", "torchscript"]


@pytest.mark.parametrize("kind", KINDS)
def test_crafted_files_do_run_code_when_loaded_unsafely(tmp_path: Path, kind: str):
    """The payloads are live: an unrestricted loader runs them (so the refusals below mean something)."""
    marker = tmp_path / "marker"
    path = craft(kind, tmp_path / "evil.pt", marker)
    if kind == "dotted-name":
        with zipfile.ZipFile(path) as z:
            pickle.loads(z.read(next(n for n in z.namelist() if n.endswith("/data.pkl"))))
    elif kind == "reduce":
        torch.load(path, weights_only=False)
    else:
        torch.jit.load(str(path))
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
def test_crafted_files_are_refused_in_process(tmp_path: Path, kind: str):
    marker = tmp_path / "marker"
    path = craft(kind, tmp_path / "evil.pt", marker)
    for read in (ckpt_mod.read_any_checkpoint, ckpt_mod.load_checkpoint):
        with pytest.raises(ckpt_mod.CheckpointRefused, match=REFUSED) as err:
            read(path)
        assert NOT_RUN in str(err.value)
    expected = {"dotted-name": "numpy.dtypes.__builtins__.get", "reduce": "posix.system", "torchscript": "TorchScript"}
    assert expected[kind] in str(err.value)
    assert not marker.exists()


ENTRY_POINTS = ["eval --weights", "predict --weights", "train --weights", "eval (latest run)", "predict (latest run)"]
# the pairs run in a fresh interpreter: each kind once, each through another command
FRESH = {("dotted-name", "eval --weights"), ("reduce", "predict (latest run)"), ("torchscript", "train --weights")}


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", KINDS)
def test_crafted_files_are_refused_by_every_command(tmp_path: Path, tiny_data: Path, image: Path, kind, entry):
    marker = tmp_path / "marker"
    if "latest run" in entry:
        best = tmp_path / "runs" / "train" / "x" / "weights" / "best.pt"
        best.parent.mkdir(parents=True)
        craft(kind, best, marker)
        args = ["eval"] if entry.startswith("eval") else ["predict", str(image)]
    else:
        craft(kind, tmp_path / "evil.pt", marker)
        args = {
            "eval --weights": ["eval", "--weights", "evil.pt"],
            "predict --weights": ["predict", str(image), "--weights", "evil.pt"],
            "train --weights": ["train", "--preset", "nanodet-plus-m", "--data", str(tiny_data), "--epochs", "1",
                                "--weights", "evil.pt", "--device", "cpu", "--workers", "0"],
        }[entry]
    out = (run_cli if (kind, entry) in FRESH else run_cli_forked)(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert REFUSED in out.stderr and NOT_RUN in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    assert not marker.exists()
    if "latest run" in entry:
        assert "weights runs/train/x/weights/best.pt (latest run)" in out.stdout
    if entry == "train --weights":
        assert not (tmp_path / "runs").exists()  # refused before a run folder is made


# ---------------------------------------------------------------------------------------------- malformed files
MALFORMED = {
    "format-int": ({"format": 5, "model": {"w": torch.ones(1)}}, "unknown checkpoint format 5"),
    "format-none": ({"format": None, "model": {"w": torch.ones(1)}}, "unknown checkpoint format None"),
    "int-keys": ({0: torch.ones(1), 1: torch.ones(2)}, "not tensor names"),
    "detcli-without-keys": ({"format": "detcli-1", "epoch": 3}, "detcli checkpoint without"),
}


@pytest.mark.parametrize("command", ["eval", "predict", "train"])
@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_checkpoints_give_a_clear_error(tmp_path: Path, tiny_data: Path, image: Path, case, command):
    payload, expected = MALFORMED[case]
    torch.save(payload, tmp_path / "bad.pt")
    preset = ["--preset", "nanodet-plus-m"] if case == "int-keys" or command == "train" else []
    args = {
        "eval": ["eval", "--weights", "bad.pt", *preset],
        "predict": ["predict", str(image), "--weights", "bad.pt", *preset],
        "train": ["train", *preset, "--data", str(tiny_data), "--epochs", "1", "--weights", "bad.pt",
                  "--device", "cpu", "--workers", "0"],
    }[command]
    out = run_cli_forked(*args, cwd=tmp_path)
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    assert expected in out.stderr and "bad.pt" in out.stderr, out.stderr
    assert "Traceback" not in out.stdout + out.stderr


# ---------------------------------------------------------------------------------------------- official files
def nanodet_lightning_ckpt(classes: int, class_names: list[str] | None) -> dict:
    sd = _weights("nanodet-plus-m", classes)
    cfg = CfgNode({"model": {"arch": {"name": "NanoDetPlus"}}, "save_dir": "workspace"})
    if class_names is not None:
        cfg["class_names"] = class_names
    return {
        "epoch": 299, "global_step": 1000, "pytorch-lightning_version": "1.9.5",
        "state_dict": OrderedDict([*((f"model.{k}", v) for k, v in sd.items()),
                                   *((f"avg_model.{k}", v) for k, v in sd.items())]),
        "hyper_parameters": AttributeDict(cfg=cfg),
        "callbacks": {"ModelCheckpoint{}": {"best_model_score": torch.tensor(0.3), "dirpath": "workspace"}},
        "optimizer_states": [], "lr_schedulers": [],
    }


def test_official_checkpoints_read_as_data(tmp_path: Path, official_names):
    torch.save(nanodet_lightning_ckpt(3, ["a", "b", "c"]), tmp_path / "nano.ckpt")
    torch.save(mmdet3_ckpt(3, ["a", "b", "c"]), tmp_path / "mm.pth")
    globals_named = set(torch.serialization.get_unsafe_globals_in_checkpoint(tmp_path / "nano.ckpt"))
    assert {"nanodet.util.yacs.CfgNode", "pytorch_lightning.utilities.parsing.AttributeDict"} <= globals_named

    nano = ckpt_mod.read_any_checkpoint(tmp_path / "nano.ckpt")
    cfg = nano["hyper_parameters"]["cfg"]
    assert type(cfg) is OrderedDict and cfg["class_names"] == ["a", "b", "c"] and cfg["model"]["arch"]["name"]
    mm = ckpt_mod.read_any_checkpoint(tmp_path / "mm.pth")
    buffer = mm["message_hub"]["log_scalars"]["loss"]
    assert isinstance(buffer, ckpt_mod.ForeignObject) and np.array_equal(buffer._log_history, [0.5, 0.25])
    assert mm["message_hub"]["runtime_info"]["best_score"] == 0.36 and mm["meta"]["dataset_meta"]["classes"][0] == "a"


def test_an_unlisted_class_is_refused(tmp_path: Path):
    torch.save({"state_dict": {"w": torch.ones(1)}, "args": types.SimpleNamespace(lr=0.1)}, tmp_path / "ns.pth")
    with pytest.raises(ckpt_mod.CheckpointRefused, match="types.SimpleNamespace"):
        ckpt_mod.read_any_checkpoint(tmp_path / "ns.pth")


@pytest.mark.parametrize(
    "names, expected, cat_ids",
    [
        (["cat", "dog", "bird"], ["cat", "dog", "bird"], [1, 2, 3]),
        (None, ["class0", "class1", "class2"], [1, 2, 3]),
    ],
)
def test_official_class_names_become_the_labels(tmp_path: Path, official_names, names, expected, cat_ids):
    torch.save(mmdet3_ckpt(3, names), tmp_path / "mm.pth")
    set_count = [] if names else ["model.num_classes=3"]  # without names the count must be given
    loaded = load_for_inference(tmp_path / "mm.pth", "retinanet-r18-fpn", set_count, torch.device("cpu"))
    assert loaded.class_names == expected and loaded.cat_ids == cat_ids and loaded.model.num_classes == 3


def test_nanodet_coco_names_read_as_coco(tmp_path: Path, official_names):
    underscored = [n.replace(" ", "_") for n in COCO80]  # as NanoDet's configs write them
    torch.save(nanodet_lightning_ckpt(80, underscored), tmp_path / "nano.ckpt")
    loaded = load_for_inference(tmp_path / "nano.ckpt", "nanodet-plus-m", [], torch.device("cpu"))
    assert loaded.class_names == COCO80 and loaded.cat_ids[:3] == [1, 2, 3] and loaded.cat_ids[-1] == 90
    torch.save(nanodet_lightning_ckpt(2, ["ripe", "unripe"]), tmp_path / "fruit.ckpt")
    loaded = load_for_inference(tmp_path / "fruit.ckpt", "nanodet-plus-m", [], torch.device("cpu"))
    assert loaded.class_names == ["ripe", "unripe"] and loaded.model.num_classes == 2


def test_mmdet2_classes_are_read():
    from detcli.models.convert import mmdet_class_names

    assert mmdet_class_names({"meta": {"CLASSES": ("a", "b")}, "state_dict": {}}) == ["a", "b"]
    assert mmdet_class_names({"meta": {"CLASSES": None}}) is None and mmdet_class_names([1]) is None


# ---------------------------------------------------------------------------------------------- class counts
@pytest.mark.parametrize("family, preset", [("nanodet", "nanodet-plus-m"), ("mmdet", "retinanet-r18-fpn")])
def test_class_count_mismatch_names_both_counts_and_the_fix(tmp_path: Path, image: Path, family, preset):
    ckpt = nanodet_lightning_ckpt(3, None) if family == "nanodet" else mmdet3_ckpt(3, None)
    ckpt.pop("hyper_parameters", None)
    ckpt.pop("message_hub", None)
    torch.save(ckpt, tmp_path / "three.pth")
    out = run_cli_forked("predict", str(image), "--preset", preset, "--weights", "three.pth", "--imgsz", "160",
                         cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    message = out.stderr
    assert "the weights are for 3 classes, this model for 80" in message, message
    assert "--set model.num_classes=3" in message and "train --weights" in message  # whole, not cut at 300
    ok = run_cli_forked("predict", str(image), "--preset", preset, "--weights", "three.pth", "--set",
                        "model.num_classes=3", "--imgsz", "160", "--conf", "0.0", "--name", "ok", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert ok.stdout.count("weights three.pth") == 1  # one line names the weights
    records = json.loads((tmp_path / "runs" / "predict" / "ok" / "predictions.json").read_text())
    assert records and {r["category"] for r in records} <= {"class0", "class1", "class2"}


def test_detcli_checkpoint_with_another_head_is_a_message(tmp_path: Path):
    sd = _weights("nanodet-plus-m", 3)
    preset = load_preset("nanodet-plus-m")[0].model_dump(mode="json")
    payload = {"format": "detcli-1", "preset": preset, "model": sd, "class_names": ["a", "b"], "cat_ids": [1, 2]}
    torch.save(payload, tmp_path / "best.pt")
    with pytest.raises(DetcliError, match="weights are for 3 classes but the checkpoint lists 2 class names"):
        load_for_inference(tmp_path / "best.pt", None, [], torch.device("cpu"))


def test_fine_tuning_on_another_class_count_says_what_starts_fresh(tmp_path: Path, official_names):
    torch.save(mmdet3_ckpt(3, ["a", "b", "c"]), tmp_path / "mm.pth")
    model = build_model(load_preset("retinanet-r18-fpn")[0], 5, pretrained=False)
    text = load_weights_into(model, tmp_path / "mm.pth")
    assert "the weights are for 3 classes, the data has 5" in text and "2 head tensors" in text
    assert torch.equal(model.state_dict()["neck.lateral_convs.0.conv.weight"],
                       mmdet3_ckpt(3, None)["state_dict"]["neck.lateral_convs.0.conv.weight"])
