"""Crafted and edited checkpoints: every kind is refused with a message, through every command, and none crashes.

Three families of bad file:

- **NumPy state that corrupts memory** when NumPy's own ``__setstate__`` runs it (a field past the item size, a
  negative field offset, the object flag over raw bytes, an object dtype over raw bytes), state that does not fit
  its data (too few bytes for the shape, a scalar's bytes), and structure bombs (a zip bomb, nesting 100 000
  deep, a container inside itself, a memo reference that was never stored). These run in subprocesses (forked
  from the CLI helper, or a fresh interpreter), so that a crash fails the test instead of killing pytest.
- **Edited detcli checkpoints**: each field of the ``detcli-1`` layout with a wrong type or value, NumPy scalars
  in typed and free-form fields, a missing ``dataset.config``, a ``last.pt`` with epoch −3.
- **What a user meets after a killed run**: ``eval`` without ``--weights`` names the ``last.pt`` and ``--resume``.

Through the CLI: exit code 2, the file and the field named, no "Traceback".
"""
from __future__ import annotations

import copy
import math
import pickle
import subprocess
import sys
import textwrap
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from detcli.checkpoints import io as ckpt_mod
from detcli.checkpoints.checks import MAX_DEPTH
from detcli.checkpoints.record import RunRecord
from detcli.config.loader import load_preset
from detcli.data.dataset_config import DatasetConfig
from detcli.errors import DetcliError
from detcli.inference.loading import load_for_inference
from detcli.models import build_model
from tests.support.cli_subprocess import run_cli_forked
from tests.support.official_pickles import HistoryBuffer, torch_zip, mmdet3_ckpt

_reconstruct = np.arange(1).__reduce__()[0]
_scalar = np.float64(0).__reduce__()[0]


# ---------------------------------------------------------------------------------------------- crafted NumPy state
class _Dtype:
    """Pickles as NumPy pickles a dtype: ``numpy.dtype(code, False, True)`` then BUILD with ``state``."""

    def __init__(self, code: str, state: tuple) -> None:
        self.code, self.state = code, state

    def __reduce__(self):
        return (np.dtype, (self.code, False, True), self.state)


class _Array:
    """Pickles as NumPy pickles an array: ``_reconstruct(ndarray, (0,), b"b")`` then BUILD with ``state``."""

    def __init__(self, state: tuple) -> None:
        self.state = state

    def __reduce__(self):
        return (_reconstruct, (np.ndarray, (0,), b"b"), self.state)


class _Scalar:
    def __init__(self, dtype: _Dtype, data: bytes) -> None:
        self.dtype, self.data = dtype, data

    def __reduce__(self):
        return (_scalar, (self.dtype, self.data))


class _Bytes:
    """``bytes(n)``: pickle protocol 2 writes ``b""`` as ``bytes()``; with an argument it allocates ``n`` bytes."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __reduce__(self):
        return (bytes, (self.n,))


F8 = _Dtype("f8", (3, "<", None, None, None, -1, -1, 0))
OBJECT = _Dtype("O8", (3, "|", None, None, None, -1, -1, 61))  # the object flag without NumPy's list pickling


def _struct(offset: int) -> _Dtype:
    """A one-field structured dtype of item size 8 whose float64 field starts at ``offset``."""
    return _Dtype("V8", (3, "|", None, ("a",), {"a": (F8, offset)}, 8, 1, 16))


NUMPY_KINDS = {
    "field-beyond-item-size": (_Array((1, (1,), _struct(1 << 20), False, b"\0" * 8)), "dtype 'V8'"),
    "negative-field-offset": (_Array((1, (1,), _struct(-(1 << 20)), False, b"\0" * 8)), "dtype 'V8'"),
    "object-flag-over-bytes": (
        _Array((1, (4,), _Dtype("V8", (3, "|", None, ("a",), {"a": (OBJECT, 0)}, 8, 1, 25)), False, b"A" * 32)),
        "dtype 'V8'"),
    "object-dtype-over-bytes": (_Array((1, (4,), OBJECT, False, b"A" * 32)), "dtype 'O8' (Python objects)"),
    "flags-on-a-float-dtype": (_Array((1, (1,), _Dtype("f8", (3, "<", None, None, None, -1, -1, 1)), False, b"\0" * 8)),
                               "no flags such as the object flag"),
    "data-shorter-than-shape": (_Array((1, (1 << 20,), F8, False, b"\0" * 8)), "given 8 bytes"),
    "scalar-of-one-byte": (_Scalar(F8, b"\0"), "instead of 8 bytes"),
    "bytes-of-a-gigabyte": (_Bytes(2**30), "a call bytes"),
}


def _crafted_numpy(kind: str, path: Path) -> Path:
    value, _ = NUMPY_KINDS[kind]
    torch.save({"state_dict": {"w": torch.ones(1)}, "meta": {"logged": value}}, path)
    return path


# ---------------------------------------------------------------------------------------------- structure bombs
def _unicode(text: str) -> bytes:
    raw = text.encode()
    return pickle.BINUNICODE + len(raw).to_bytes(4, "little") + raw


def deep_pickle(depth: int, detcli: bool = True) -> bytes:
    """``{"format": "detcli-1", "preset": {"a": {"a": …}}}`` nested ``depth`` dicts deep, written opcode by opcode
    (pickling it with ``pickle`` would itself recurse ``depth`` deep)."""
    nested = (pickle.EMPTY_DICT + _unicode("a")) * depth + pickle.EMPTY_DICT + pickle.SETITEM * depth
    head = _unicode("format") + _unicode("detcli-1") if detcli else b""
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + pickle.MARK + head + _unicode("preset") + nested
            + pickle.SETITEMS + pickle.STOP)


def self_holding_pickle() -> bytes:
    """``{"state_dict": x}`` where ``x`` is a list that holds itself."""
    return (pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _unicode("state_dict") + pickle.EMPTY_LIST + pickle.BINPUT
            + b"\x00" + pickle.BINGET + b"\x00" + pickle.APPEND + pickle.SETITEM + pickle.STOP)


def laughs_pickle(levels: int = 40) -> bytes:
    """``{"state_dict": {"0": [], "1": [l0, l0], "2": [l1, l1], …}}``, each list holding the previous one twice by
    memo reference: 41 small lists that written out are 2**levels values."""
    out = pickle.PROTO + b"\x02" + pickle.EMPTY_DICT + _unicode("state_dict") + pickle.EMPTY_DICT
    out += _unicode("0") + pickle.EMPTY_LIST + pickle.BINPUT + b"\0" + pickle.SETITEM
    for i in range(1, levels + 1):
        out += _unicode(str(i)) + pickle.EMPTY_LIST + pickle.MARK + pickle.BINGET + bytes([i - 1])
        out += pickle.BINGET + bytes([i - 1]) + pickle.APPENDS + pickle.BINPUT + bytes([i]) + pickle.SETITEM
    return out + pickle.SETITEM + pickle.STOP


def zip_bomb(path: Path, megabytes: int = 128) -> Path:
    """A small ``torch.save`` zip plus a deflated record of ``megabytes`` MiB of zeros (1/1000 of that on disk)."""
    torch_zip(path, pickle.dumps({"state_dict": {}}, protocol=2))
    zero = bytes(2**20)
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as record:
            for _ in range(megabytes):
                record.write(zero)
    return path


STRUCTURE_KINDS = {
    "zip-bomb": "zip bomb",
    "nested-100000-deep": f"deeper than {MAX_DEPTH} levels (at preset.a.a.a.a.a",
    "holds-itself": "state_dict[0] refers back to a container it is inside",
    "memo-never-stored": "its pickled data refers to data it never stored: KeyError 101",
    "billion-laughs": "refers to the same containers so often that it would hold more than 10,000,000 values",
}


def _crafted_structure(kind: str, path: Path) -> Path:
    if kind == "zip-bomb":
        return zip_bomb(path)
    if kind == "nested-100000-deep":
        torch_zip(path, deep_pickle(100_000))
    elif kind == "holds-itself":
        torch_zip(path, self_holding_pickle())
    elif kind == "billion-laughs":
        torch_zip(path, laughs_pickle())
    else:
        torch_zip(path, pickle.PROTO + b"\x02" + pickle.BINGET + bytes([101]) + pickle.STOP)
    return path


CRAFTED = {**{k: m for k, (_, m) in NUMPY_KINDS.items()}, **STRUCTURE_KINDS}


def craft(kind: str, path: Path) -> Path:
    return _crafted_numpy(kind, path) if kind in NUMPY_KINDS else _crafted_structure(kind, path)


# ---------------------------------------------------------------------------------------------- the payloads are live
def test_numpy_would_build_the_crafted_dtypes_and_arrays():
    """Unchecked, NumPy itself accepts the crafted states: fields outside the item, an object dtype over bytes."""
    outside = np.dtype("V8")
    outside.__setstate__(_struct(1 << 20).state[:4] + ({"a": (np.dtype("f8"), 1 << 20)},) + (8, 1, 16))
    assert outside.fields["a"][1] > outside.itemsize  # reading field "a" reads 1 MiB past the element
    before = np.dtype("V8")
    before.__setstate__((3, "|", None, ("a",), {"a": (np.dtype("f8"), -(1 << 20))}, 8, 1, 16))
    assert before.fields["a"][1] < 0


@pytest.mark.parametrize("kind", ["object-flag-over-bytes", "object-dtype-over-bytes"])
def test_the_object_kinds_crash_an_unchecked_reader(tmp_path: Path, kind: str):
    """``torch.load(weights_only=False)`` (NumPy's own unpickling) on them, then ``repr``: the interpreter dies."""
    path = _crafted_numpy(kind, tmp_path / "evil.pth")
    code = f"import torch; print(repr(torch.load({str(path)!r}, weights_only=False)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode < 0, (out.returncode, out.stdout[-500:], out.stderr[-500:])  # killed by a signal


# ---------------------------------------------------------------------------------------------- refused, no crash
def test_every_crafted_kind_is_refused_in_a_fresh_interpreter(tmp_path: Path):
    """Each kind through both readers in one fresh interpreter (a crash would end it with a signal)."""
    files = {kind: craft(kind, tmp_path / f"{kind}.pt") for kind in CRAFTED}
    code = textwrap.dedent(f"""
        from detcli.checkpoints.io import load_checkpoint, read_any_checkpoint
        from detcli.errors import DetcliError
        for kind, path in {({k: str(v) for k, v in files.items()})!r}.items():
            for read in (read_any_checkpoint, load_checkpoint):
                try:
                    value = read(path)
                except DetcliError as e:
                    print(kind, "|", str(e).replace(chr(10), " "))
                else:
                    print(kind, "| LOADED", repr(value)[:200])
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert out.returncode == 0, (out.returncode, out.stdout[-3000:], out.stderr[-3000:])
    lines = out.stdout.splitlines()
    for kind, message in CRAFTED.items():
        said = [line for line in lines if line.startswith(f"{kind} |")]
        assert len(said) == 2 and all(message in s and f"{kind}.pt" in s for s in said), (kind, said)


ENTRY_POINTS = ["predict", "eval", "export", "inspect-anchors", "train --weights"]


def _command(entry: str, weights: str, picture: Path, data: Path, official: bool = True) -> list[str]:
    """The command line of ``entry`` on ``weights``; an official file needs ``--preset`` (and a new run always)."""
    preset = ["--preset", "nanodet-plus-m"] if official else []
    return {
        "predict": ["predict", str(picture), "--weights", weights, *preset],
        "eval": ["eval", "--weights", weights, *preset, "--data", str(data)],
        "export": ["export", "--weights", weights, *preset, "--device", "cpu"],
        "inspect-anchors": ["inspect-anchors", "--weights", weights, *preset, "--data", str(data), "-o", "out"],
        "train --weights": ["train", "--preset", "nanodet-plus-m", "--data", str(data), "--epochs", "1",
                            "--weights", weights, "--device", "cpu", "--workers", "0"],
        "train --resume": ["train", "--resume", str(Path(weights).parent.parent), "--device", "cpu"],
    }[entry]


def _refused(out: subprocess.CompletedProcess, *expected: str) -> None:
    text = out.stdout + out.stderr
    assert out.returncode == 2, (out.returncode, out.stdout[-2000:], out.stderr[-2000:])  # a signal is negative
    assert "Traceback" not in text, text[-3000:]
    for part in expected:
        assert part in out.stderr, (part, out.stderr[-2000:])


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize("kind", list(CRAFTED))
def test_crafted_kinds_are_refused_by_every_command(tmp_path, tiny_data, image, kind, entry):
    craft(kind, tmp_path / "evil.pt")
    out = run_cli_forked(*_command(entry, "evil.pt", image, tiny_data), cwd=tmp_path)
    _refused(out, "evil.pt", CRAFTED[kind])
    assert "(101)" not in out.stderr  # the reason in words, not a bare number
    assert not (tmp_path / "runs").exists() and not (tmp_path / "out").exists()  # refused before any output


def test_plain_numpy_values_still_read(tmp_path: Path, official_names):
    """What NumPy writes for plain values reads back equal: arrays of every numeric kind and order, empty ones,
    scalars, a dtype; an MMEngine checkpoint with an empty log buffer."""
    values = {"f8": np.arange(6.0).reshape(2, 3), "fortran": np.asfortranarray(np.arange(6).reshape(2, 3)),
              "empty": np.zeros((0, 4), np.float32), "big-endian": np.arange(3, dtype=">i4"),
              "bool": np.array([True, False]), "c8": np.array([1 + 2j], np.complex64), "f2": np.float16(1.5),
              "i8": np.int64(3), "dtype": np.dtype("u2"), "in-a-tuple": (np.arange(2), [np.float32(1)])}
    torch.save(values, tmp_path / "values.pt")
    read = ckpt_mod.read_any_checkpoint(tmp_path / "values.pt")
    for key, value in values.items():
        got = read[key]
        if key == "in-a-tuple":
            assert type(got) is tuple and np.array_equal(got[0], value[0]) and got[1][0] == value[1][0]
        elif isinstance(value, np.ndarray):
            assert type(got) is np.ndarray and got.dtype == value.dtype and np.array_equal(got, value)
            assert got.flags.writeable and got.flags.f_contiguous == value.flags.f_contiguous
        else:
            assert type(got) is type(value) and got == value
    mm = mmdet3_ckpt(3, ["a", "b", "c"])
    empty = HistoryBuffer()
    empty._log_history, empty._count_history = np.array([]), np.array([], dtype=np.int64)
    mm["message_hub"]["log_scalars"]["lr"] = empty
    torch.save(mm, tmp_path / "mm.pth")
    buffer = ckpt_mod.read_any_checkpoint(tmp_path / "mm.pth")["message_hub"]["log_scalars"]["lr"]
    assert buffer._log_history.shape == (0,) and buffer._count_history.dtype == np.int64


def test_nesting_below_the_limit_reads_and_a_shared_container_is_not_a_cycle(tmp_path: Path):
    torch_zip(tmp_path / "deep.pt", deep_pickle(MAX_DEPTH - 5, detcli=False))
    assert "preset" in ckpt_mod.read_any_checkpoint(tmp_path / "deep.pt")
    shared = [1, 2]
    torch.save({"a": shared, "b": [shared, shared]}, tmp_path / "shared.pt")
    read = ckpt_mod.read_any_checkpoint(tmp_path / "shared.pt")
    assert read["a"] == [1, 2] and read["b"][0] is read["a"]


# ---------------------------------------------------------------------------------------------- a full detcli record
@pytest.fixture(scope="module")
def full_payload(tiny_data: Path) -> dict:
    """Every field of the ``detcli-1`` layout as the trainer writes it (last.pt of epoch 1 of 2), on the tiny demo
    data (nanodet-plus-m, 5 classes, trained at 64×64)."""
    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.demo import CLASSES
    from detcli.engine.ema import ModelEMA
    from detcli.engine.optim import build_optimizer
    from detcli.engine.seed import get_rng_state

    preset, _ = load_preset("nanodet-plus-m")
    data = resolve_dataset(str(tiny_data))
    names = list(CLASSES)
    torch.manual_seed(0)
    model = build_model(preset, len(names), pretrained=False)
    optimizer, _, _ = build_optimizer(model, preset.train.optimizer, 4)
    ema = ModelEMA(model, 0.9998, 2000.0)
    dumped = preset.model_dump(mode="json")
    dumped["train"]["epochs"] = 2
    return {
        "format": "detcli-1", "epoch": 1, "model": model.state_dict(), "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(), "scaler": None,
        "schedule_state": {"base_lr": 0.001, "epochs": 2, "iters_per_epoch": 2, "warmup": {}, "schedule": {}},
        "best_map": 0.01, "early_stopping": {"best_epoch": 1, "stale": 0, "stopped": False},
        "metrics": {"stats": {"AP50-95": 0.01}}, "train_time": 3.5, "preset": dumped, "input_size": [64, 64],
        "class_names": names, "cat_ids": [1, 2, 3, 4, 5],
        "dataset": {"config": data.model_dump(mode="json"), "imgsz": 64,
                    "train": {"ann_file": "a.json", "img_dir": "img", "images": 8, "fingerprint": "abc"}},
        "rng": {"per_rank": [get_rng_state([torch.Generator()])]},
        "train_args": {"argv": ["detcli", "train"], "data": str(tiny_data), "imgsz": 64, "seed": 0,
                       "device": "cpu", "weights": None},
        "versions": ckpt_mod.versions(), "date": "2026-12-03T00:00:00",
    }


def test_the_full_record_reads_with_its_types(tmp_path: Path, full_payload: dict):
    ckpt_mod.save_checkpoint(tmp_path / "last.pt", full_payload)
    record = ckpt_mod.load_checkpoint(tmp_path / "last.pt")
    assert record.epoch == 1 and record.trained_imgsz == 64 and record.early_stopping.best_epoch == 1
    assert record.model is not full_payload["model"] and record.model.keys() == full_payload["model"].keys()
    assert record["dataset"]["config"] == full_payload["dataset"]["config"]  # as the file stores it
    assert record.get("scaler", "none") == "none" and "scaler" in record and "missing" not in record
    assert torch.equal(record.rng.per_rank[0].torch, full_payload["rng"]["per_rank"][0]["torch"])


def test_the_layout_the_trainer_writes_is_the_record(tmp_path: Path):
    """The checkpoint payload on a small model: every key it writes is a declared field, and it validates."""
    from detcli.engine.ema import ModelEMA
    from detcli.engine.hooks.checkpoint import checkpoint_payload
    from detcli.engine.schedule import LRSchedule
    from detcli.engine.seed import get_rng_state
    from detcli.run_spec import RunSpec

    preset, _ = load_preset("nanodet-plus-m")
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    cfg = preset.train
    fake = types.SimpleNamespace(
        model=model, ema=ModelEMA(model, 0.9, 10.0), optimizer=optimizer, scaler=torch.amp.GradScaler("cuda",
        enabled=False), schedule=LRSchedule(cfg.warmup, cfg.schedule, 0.001, cfg.epochs, 4), cfg=cfg,
        state=types.SimpleNamespace(best_map=-1.0, best_epoch=0, stale_validations=0, stopped_early=False,
                                    train_time=1.0),
        train_args={"argv": ["detcli"]}, spec=RunSpec(preset, ["a"], [1], imgsz=64, dataset={"config": {}}),
    )
    payload = checkpoint_payload(fake, 1, [get_rng_state([torch.Generator()])], None)
    assert set(payload) <= set(RunRecord.model_fields), set(payload) - set(RunRecord.model_fields)
    record = RunRecord.read(payload, "last.pt")
    assert record.trained_imgsz == 64 and record.optimizer.param_groups[0].params == [0, 1]


# ---------------------------------------------------------------------------------------------- edited records
def _deep(depth: int) -> dict:
    node: dict = {}
    for _ in range(depth):
        node = {"a": node}
    return node


def _rng_edit(part: str, value):
    def edit(p: dict) -> None:
        p["rng"]["per_rank"][0][part] = value
    return edit


def _set(field: str, value):
    def edit(p: dict) -> None:
        where, *rest = field.split(".")
        target = p
        for key in [where, *rest][:-1]:
            target = target[key]
        last = [where, *rest][-1]
        if value is _DELETE:
            del target[last]
        else:
            target[last] = value
    return edit


_DELETE = object()

# (edit, what the message says): each a case of the "edited detcli checkpoints"
EDITS = {
    "input_size-string": (_set("input_size", "320"), "input_size: must be a list, got '320'"),
    "input_size-huge": (_set("input_size", [100_000, 64]), "input_size[0]: must be ≤ 4096, got 100000"),
    "input_size-one-side": (_set("input_size", [64]), "input_size: must have at least 2 item(s)"),
    "input_size-numpy": (_set("input_size", [np.int64(64), np.int64(64)]),
                         "input_size[0]: must be an integer, got numpy.int64"),
    "train_args-string": (_set("train_args", "fast"), "train_args: must be a mapping, got 'fast'"),
    "train_args-imgsz": (_set("train_args.imgsz", "big"), "train_args.imgsz"),
    "train_args-seed": (_set("train_args.seed", -1), "train_args.seed"),
    "dataset-int": (_set("dataset", 5), "dataset: must be a mapping, got 5"),
    "dataset-config-list": (_set("dataset.config", [1]), "dataset.config: must be a mapping"),
    "dataset-images": (_set("dataset.train.images", "eight"), "dataset.train.images: must be an integer"),
    "ema-list": (_set("ema", [1]), "ema: must be a mapping"),
    "ema-module": (_set("ema.module", {"w": 1}), "ema.module: must be a state dict: 'w' is 1, not a tensor"),
    "ema-updates": (_set("ema.updates", -1), "ema.updates: must be ≥ 0, got -1"),
    "epoch-negative": (_set("epoch", -3), "epoch: must be ≥ 0, got -3"),
    "epoch-string": (_set("epoch", "3"), "epoch: must be an integer, got '3'"),
    "epoch-float": (_set("epoch", 1.5), "epoch: must be an integer, got 1.5"),
    "epoch-numpy": (_set("epoch", np.int64(1)), "epoch: must be an integer, got numpy.int64 1"),
    "best_map-string": (_set("best_map", "high"), "best_map: must be a number, got 'high'"),
    "best_map-nan": (_set("best_map", math.nan), "best_map: must be a finite number, got nan"),
    "best_map-above-one": (_set("best_map", 5.0), "best_map: must be ≤ 1.0, got 5.0"),
    "optimizer-string": (_set("optimizer", "adamw"), "optimizer: must be a mapping, got 'adamw'"),
    "optimizer-groups": (_set("optimizer.param_groups", [{"lr": 1}]), "optimizer.param_groups[0].params: is missing"),
    "rng-string": (_set("rng", "seed"), "rng: must be a mapping, got 'seed'"),
    "rng-python": (_rng_edit("python", [3, [0] * 3, None]), "rng.per_rank[0].python: must be Python's random state"),
    "rng-numpy-position": (_rng_edit("numpy", ["MT19937", torch.zeros(624, dtype=torch.int64), 10_000, 0, 0.0]),
                           "rng.per_rank[0].numpy: must be NumPy's random state"),
    "rng-torch-size": (_rng_edit("torch", torch.zeros(3, dtype=torch.uint8)),
                       "rng.per_rank[0].torch: must be a generator state"),
    "schedule_state-string": (_set("schedule_state", "cosine"), "schedule_state: must be a mapping, got 'cosine'"),
    "early_stopping-list": (_set("early_stopping", [0]), "early_stopping: must be a mapping"),
    "early_stopping-stopped": (_set("early_stopping.stopped", "yes"),
                               "early_stopping.stopped: must be true or false, got 'yes'"),
    "class_names-ints": (_set("class_names", [1, 2, 3, 4, 5]), "class_names[0]: must be a string, got 1"),
    "cat_ids-count": (_set("cat_ids", [1, 2]), "cat_ids: must hold one id per class name: 2 ids for 5 names"),
    "model-string": (_set("model", "weights"), "model: must be a state dict (tensor names → tensors), got 'weights'"),
    "scaler-string": (_set("scaler", {"scale": "x"}), "scaler.scale"),
    "last-without-dataset": (_set("dataset", _DELETE), "a last.pt (it has optimizer state) without dataset"),
    "last-without-epoch": (_set("epoch", None), "a last.pt (it has optimizer state) without epoch"),
    "preset-nested-100000-deep": (None, f"deeper than {MAX_DEPTH} levels (at preset.a.a.a.a.a"),
}


def _edited(payload: dict, case: str, path: Path) -> Path:
    edit, _ = EDITS[case]
    if edit is None:  # torch.save would recurse as deep as the preset: the pickle is written by hand
        torch_zip(path, deep_pickle(100_000))
        return path
    edited = copy.deepcopy(payload)
    edit(edited)
    ckpt_mod.save_checkpoint(path, edited)
    return path


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_fields_name_the_file_and_the_field(tmp_path: Path, full_payload: dict, case: str):
    path = _edited(full_payload, case, tmp_path / "last.pt")
    with pytest.raises(DetcliError) as err:
        ckpt_mod.load_checkpoint(path)
    assert str(path) in str(err.value) and EDITS[case][1] in str(err.value), str(err.value)
    with pytest.raises(DetcliError, match="last.pt") as err:  # the same through the inference loader
        load_for_inference(path, None, [], torch.device("cpu"))
    assert EDITS[case][1] in str(err.value)


# each edit through one command (in turn), as a user runs it
COMMANDS = ["predict", "eval", "export", "inspect-anchors", "train --weights", "train --resume"]


@pytest.mark.parametrize("case", list(EDITS))
def test_edited_checkpoints_give_exit_2_through_the_cli(tmp_path, tiny_data, image, full_payload, case):
    command = COMMANDS[list(EDITS).index(case) % len(COMMANDS)]
    last = tmp_path / "runs" / "train" / "x" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    _edited(full_payload, case, last)
    out = run_cli_forked(*_command(command, "runs/train/x/weights/last.pt", image, tiny_data, official=False),
                         cwd=tmp_path)
    _refused(out, "last.pt", EDITS[case][1])
    assert sorted(p.name for p in (tmp_path / "runs" / "train").iterdir()) == ["x"]  # no new run folder


def test_the_unedited_record_predicts_with_numpy_scalars_where_numbers_may_be(tmp_path, image, full_payload):
    """The baseline of the edits runs. NumPy scalars in free-form or lax fields (metrics, the preset, train_args)
    read as their numbers, and the trained size comes from the one read (the second ``torch.load``, without the
    allow-list, that made them a traceback is gone)."""
    payload = copy.deepcopy(full_payload)
    payload["metrics"] = {"stats": {"AP50-95": np.float64(0.25)}}
    payload["preset"]["test"]["score_thr"] = np.float64(0.05)
    payload["train_args"]["seed"] = np.int64(3)
    ckpt_mod.save_checkpoint(tmp_path / "best.pt", payload)
    out = run_cli_forked("predict", str(image), "--weights", "best.pt", "--conf", "0.0", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    loaded = load_for_inference(tmp_path / "best.pt", None, [], torch.device("cpu"))
    (tmp_path / "best.pt").unlink()  # the size is what the first read found
    assert loaded.spec.trained_imgsz == 64 and loaded.spec.imgsz == 64


def test_a_missing_dataset_config_is_a_message_for_eval(tmp_path, full_payload):
    payload = copy.deepcopy(full_payload)
    del payload["dataset"]["config"]
    ckpt_mod.save_checkpoint(tmp_path / "best.pt", payload)
    out = run_cli_forked("eval", "--weights", "best.pt", cwd=tmp_path)
    _refused(out, "best.pt", "dataset.config", "--data")


def test_a_last_pt_with_a_negative_epoch_does_not_resume(tmp_path, full_payload):
    """It used to resume and run epochs −2…3; now it is refused before the run folder is touched."""
    last = tmp_path / "runs" / "train" / "x" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    ckpt_mod.save_checkpoint(last, {**full_payload, "epoch": -3})
    out = run_cli_forked("train", "--resume", "runs/train/x", "--device", "cpu", "--workers", "0", cwd=tmp_path)
    _refused(out, "last.pt", "epoch: must be ≥ 0, got -3")
    assert sorted(p.name for p in (tmp_path / "runs" / "train" / "x").iterdir()) == ["weights"]


def test_a_resumed_state_of_another_model_is_a_message(tmp_path, full_payload):
    """Types right, contents wrong: an EMA of other tensors, an optimizer of another parameter count."""
    from detcli.engine.trainer import Trainer

    record = RunRecord.read({**full_payload, "ema": {**full_payload["ema"], "module": {"w": torch.ones(1)}}}, "x.pt")
    preset, _ = load_preset("nanodet-plus-m")
    trainer = types.SimpleNamespace(resume_from=Path("x.pt"), reporter=None, class_names=record.class_names,
                                    model=build_model(preset, 5, pretrained=False))
    with pytest.raises(DetcliError, match="x.pt: ema.module holds other tensors than the model"):
        Trainer._restore_training_state(trainer, record)
    other = torch.optim.SGD([torch.nn.Parameter(torch.ones(1))])
    trainer.optimizer = other
    record = RunRecord.read(full_payload, "x.pt")
    with pytest.raises(DetcliError, match="x.pt: optimizer does not fit this run"):
        Trainer._restore_training_state(trainer, record)


# ---------------------------------------------------------------------------------------------- after a killed run
@pytest.mark.parametrize("command", ["eval", "predict"])
def test_without_weights_a_run_with_only_last_pt_is_named(tmp_path, image, full_payload, command):
    last = tmp_path / "runs" / "train" / "killed" / "weights" / "last.pt"
    last.parent.mkdir(parents=True)
    ckpt_mod.save_checkpoint(last, full_payload)
    out = run_cli_forked(*(["eval"] if command == "eval" else ["predict", str(image)]), cwd=tmp_path)
    _refused(out, "runs/train/killed/weights/last.pt", "detcli train --resume runs/train/killed",
             "--weights runs/train/killed/weights/last.pt")
    assert "no trained run found" not in out.stderr


def test_dataset_config_of_the_record_is_typed_but_its_paths_are_left_to_recorded_dataset(full_payload):
    """``dataset.config`` is a mapping here; ``detcli.data.recorded`` validates it as a dataset when it is used."""
    record = RunRecord.read(full_payload, "best.pt")
    assert DatasetConfig.model_validate(record.dataset.config).val is not None
    assert RunRecord.read({**full_payload, "dataset": {"config": None}}, "best.pt").dataset.config is None


def test_a_zip_whose_directory_cannot_be_read_is_not_given_to_torch(tmp_path: Path):
    """Its record sizes cannot be checked, so torch does not read it either."""
    path = tmp_path / "damaged.pt"
    torch.save({"w": torch.ones(2)}, path)
    data = bytearray(path.read_bytes())
    first = data.index(b"PK\x01\x02")  # the directory's first entry
    data[first:first + 4] = b"PK\x09\x09"
    path.write_bytes(bytes(data))
    assert zipfile.is_zipfile(path)
    with pytest.raises(DetcliError, match="damaged.pt: not a readable checkpoint .its zip directory is damaged"):
        ckpt_mod.read_any_checkpoint(path)
