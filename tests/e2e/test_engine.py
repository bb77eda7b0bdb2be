"""Training engine: schedule, EMA, optimizer groups, checkpoints, run folders, trainer (resume, NaN, DDP).

The trainer tests use a toy detector (1 conv + BN + linear) on 8 random 16×16 images whose loading draws
from the Python, NumPy and torch random generators, so an exact resume has to restore all of them.
The DDP test spawns 2 CPU processes on gloo through ``DETCLI_DDP_CPU_PROCS=2`` (as a user would on CPU).
"""
from __future__ import annotations

import hashlib
import math
import random
import re

import numpy as np
import pytest
import torch
from torch import nn

from detcli.checkpoints import io as ckpt_mod
from detcli.checkpoints.io import inference_weights, load_checkpoint, save_checkpoint
from detcli.config.loader import load_preset
from detcli.config.schema import OptimizerConfig, ScheduleConfig, WarmupConfig
from detcli.config.schema import TestConfig as EvalConfig  # aliased: pytest would try to collect Test*
from detcli.engine.ddp import unused_parameters
from detcli.engine.ema import ModelEMA
from detcli.engine.launch import _as_detcli_error
from detcli.engine.optim import build_optimizer
from detcli.engine.run_dir import ResultsCSV, latest_run, new_run_dir
from detcli.engine.schedule import LRSchedule, warmup_steps
from detcli.engine.seed import seed_everything
from detcli.engine.session import ProcessInfo, TrainParts, TrainSetup, launch_training
from detcli.engine.trainer import Trainer
from detcli.errors import DetcliError, NonFiniteLossError
from detcli.evaluation.evaluate import evaluate
from detcli.inference.device import parse_device
from detcli.structures import Detections
from tests.support.toy_training import CAT_IDS, NAMES, RecordingReporter, ToyDetector, loaders, train_cfg

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------- schedule
def _sched(warmup=(0, 0.001), kind="step", epochs=12, iters=4, base=1.0, **kw) -> LRSchedule:
    return LRSchedule(WarmupConfig(steps=warmup[0], ratio=warmup[1]), ScheduleConfig(type=kind, **kw), base, epochs, iters)


def test_warmup_is_linear_in_the_global_iteration():
    s = _sched(warmup=(10, 0.1), kind="step", iters=4)  # no milestones: only the warmup acts
    assert s.lr_at(0, 0) == pytest.approx(0.1)  # ratio · lr at iteration 0
    assert s.lr_at(0, 2) == pytest.approx(1 - 0.8 * 0.9)  # 0.28
    assert s.lr_at(1, 1) == pytest.approx(0.55)  # global iteration 5 = half way
    assert s.lr_at(2, 1) == pytest.approx(0.91)  # iteration 9
    assert s.lr_at(2, 2) == 1.0  # iteration 10: warmup over
    assert s.lr_at(5, 3) == 1.0


def test_warmup_is_capped_at_half_of_a_short_run():
    assert warmup_steps(500, 2000) == 500 and warmup_steps(500, 60) == 30 and warmup_steps(500, 1) == 0
    s = _sched(warmup=(500, 0.001), kind="step", epochs=3, iters=20)  # a 60-iteration fine-tune
    assert s.warmup_steps == 30 and s.warmup_capped
    assert s.lr_at(0, 15) == pytest.approx(1 - 0.5 * 0.999)  # half way through the shortened warmup
    assert s.lr_at(1, 9) < 1.0 and s.lr_at(1, 10) == 1.0  # the lr is reached at iteration 30
    assert s.warmup_note() == "warmup 30 iterations from 0.001·lr (train.warmup.steps 500 capped at 50% of the run's 60 iterations)"
    long = _sched(warmup=(10, 0.1), iters=4)  # 48 iterations: untouched
    assert long.warmup_steps == 10 and not long.warmup_capped and long.warmup_note() == "warmup 10 iterations from 0.1·lr"


def test_cosine_per_epoch_matches_hand_values_and_torch():
    s = _sched(kind="cosine", epochs=10, base=0.01, eta_min=0.001)
    assert s.lr_at(0, 3) == pytest.approx(0.01)
    assert s.lr_at(5, 0) == pytest.approx(0.001 + 0.009 * 0.5)  # cos(π/2) = 0
    assert s.lr_at(9, 0) == pytest.approx(0.001 + 0.009 * (1 + math.cos(0.9 * math.pi)) / 2)
    assert s.epoch_lr(10) == pytest.approx(0.001)  # T_max reached
    # torch's CosineAnnealingLR(T_max=10, eta_min) stepped once per epoch gives the same curve
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.01)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10, eta_min=0.001)
    for epoch in range(10):
        assert s.lr_at(epoch, 0) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        torch_sched.step()


def test_flat_then_cosine_per_iteration_as_rtmdet():
    """RTMDet: LinearLR(1e-5, 1000 iters) × (flat until epoch 150, then CosineAnnealingLR(begin=150, end=300,
    eta_min=5 % lr, convert_to_iter_based)). Here 10 epochs of 4 iterations, flat half, warmup 6 iterations:
    hand values, and torch's CosineAnnealingLR(T_max=20 iterations) stepped every iteration from epoch 5 on."""
    s = _sched(warmup=(6, 1e-5), kind="cosine", epochs=10, iters=4, base=0.004, eta_min=0.0002, flat_fraction=0.5,
               per_iteration=True)
    assert s.lr_at(0, 0) == pytest.approx(0.004 * 1e-5)
    assert s.lr_at(0, 3) == pytest.approx(0.004 * (1 - 0.5 * (1 - 1e-5)))  # half way through the warmup
    assert s.lr_at(1, 2) == pytest.approx(0.004) and s.lr_at(4, 3) == pytest.approx(0.004)  # flat
    assert s.lr_at(7, 2) == pytest.approx(0.0002 + 0.0038 * (1 + math.cos(math.pi * 10 / 20)) / 2)  # 10 of 20 its
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.004)
    torch_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.0002)
    for epoch in range(5, 10):
        for it in range(4):
            assert s.lr_at(epoch, it) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
            opt.step()
            torch_sched.step()
    # a checkpoint written before these fields existed resumes without a "schedule differs" warning
    old = s.state_dict()
    old["schedule"] = {k: v for k, v in old["schedule"].items() if k not in ("flat_fraction", "per_iteration")}
    plain = _sched(warmup=(6, 1e-5), kind="cosine", epochs=10, iters=4, base=0.004, eta_min=0.0002)
    assert plain.differences(old) == []


def test_step_milestones_and_warmup_multiply():
    s = _sched(warmup=(500, 0.001), kind="step", epochs=12, iters=1000, base=0.01, milestones=[8, 11], gamma=0.1)
    assert s.lr_at(0, 0) == pytest.approx(0.01 * 0.001)  # mmdet LinearLR start_factor
    assert s.lr_at(0, 250) == pytest.approx(0.01 * (1 - 0.5 * 0.999))
    assert s.lr_at(7, 999) == pytest.approx(0.01)
    assert s.lr_at(8, 0) == pytest.approx(0.001)  # milestone 8: the 9th epoch is decayed
    assert s.lr_at(10, 5) == pytest.approx(0.001)
    assert s.lr_at(11, 0) == pytest.approx(0.0001)


def test_ema_averages_a_shared_module_once():
    """A conv shared by two levels (RTMDet's head) appears twice in the state dict; one update, one average."""
    from detcli.engine.ema import ModelEMA

    shared = nn.Conv2d(1, 1, 1, bias=False)
    model = nn.ModuleDict({"a": shared, "b": nn.Sequential(shared), "c": nn.Conv2d(1, 1, 1, bias=False)})
    assert len(model.state_dict()) == 3
    ema = ModelEMA(model, decay=0.5, gamma=1e-9)  # d = 0.5·exp(−2e9) + 0.5 = 0.5: averaging twice would give 0.75
    with torch.no_grad():
        start = {k: v.clone() for k, v in ema.module.state_dict().items()}
        shared.weight.add_(1.0)
        model["c"].weight.add_(1.0)
    d = ema.update(model)
    assert d == 0.5
    for key in ("a.weight", "b.0.weight", "c.weight"):
        assert torch.allclose(ema.module.state_dict()[key], start[key] + d), key


def test_schedule_step_keeps_relative_group_lr():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.5}], lr=1.0)
    s = _sched(warmup=(10, 0.1), iters=10)
    assert s.step(opt, 0, 5) == pytest.approx(0.55)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.55, 0.275])
    s.step(opt, 3, 0)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1.0, 0.5])


# ---------------------------------------------------------------------------------------------- EMA
class _OneWeight(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([1.0]))
        self.register_buffer("stat", torch.tensor([10.0]))
        self.register_buffer("count", torch.tensor(0, dtype=torch.long))


def test_ema_two_steps_by_hand():
    model = _OneWeight()
    ema = ModelEMA(model, decay=0.9, gamma=2.0)
    # step 1: d = 0.9·exp(−(1+1)/2) + 0.1 = 0.43109149...
    with torch.no_grad():
        model.w.fill_(3.0), model.stat.fill_(20.0), model.count.fill_(7)
    d1 = ema.update(model)
    assert d1 == pytest.approx(0.9 * 0.36787944117 + 0.1)
    assert ema.module.w.item() == pytest.approx(1.0 * (1 - d1) + 3.0 * d1)  # 1.86218...
    assert ema.module.stat.item() == pytest.approx(10.0 * (1 - d1) + 20.0 * d1)
    assert ema.module.count.item() == 7  # integer buffers are copied
    # step 2: d = 0.9·exp(−3/2) + 0.1 = 0.30081714...
    with torch.no_grad():
        model.w.fill_(5.0), model.stat.fill_(0.0)
    d2 = ema.update(model)
    assert d2 == pytest.approx(0.9 * 0.22313016015 + 0.1)
    w1 = 1.0 * (1 - d1) + 3.0 * d1
    assert ema.module.w.item() == pytest.approx(w1 * (1 - d2) + 5.0 * d2, rel=1e-6)  # 2.80609...
    assert ema.module.w.item() == pytest.approx(2.806091, abs=1e-5)
    assert not ema.module.w.requires_grad
    # the counter travels with the state
    other = ModelEMA(_OneWeight(), decay=0.9, gamma=2.0)
    other.load_state_dict(ema.state_dict())
    assert other.updates == 2 and other.module.w.item() == ema.module.w.item()


# ---------------------------------------------------------------------------------------------- optimizer
class _GroupsNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.gn = nn.GroupNorm(2, 4)
        self.fc = nn.Linear(4, 2)
        self.frozen = nn.Conv2d(4, 4, 1)
        self.frozen.requires_grad_(False)
        self.tied = nn.Linear(4, 2)
        self.tied.weight = self.fc.weight  # shared parameter


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_optimizer_groups_exclusions_and_no_duplicates():
    net = _GroupsNet()
    cfg = OptimizerConfig(type="adamw", lr=0.001, weight_decay=0.05, norm_decay=False, bias_decay=False)
    opt, lr, _ = build_optimizer(net, cfg, batch=8)
    decay, no_decay = opt.param_groups
    assert _ids(decay["params"]) == _ids([net.conv.weight, net.fc.weight])
    assert _ids(no_decay["params"]) == _ids([net.conv.bias, net.bn.weight, net.bn.bias, net.gn.weight, net.gn.bias,
                                             net.fc.bias, net.tied.bias])
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    every = [id(p) for g in opt.param_groups for p in g["params"]]
    assert len(every) == len(set(every))  # the tied weight appears once
    assert id(net.frozen.weight) not in every and id(net.frozen.bias) not in every
    assert lr == 0.001 and isinstance(opt, torch.optim.AdamW)

    # bias_decay only: norm parameters decay, conv/linear biases do not
    cfg2 = cfg.model_copy(update={"norm_decay": True})
    opt2, _, _ = build_optimizer(net, cfg2, batch=8)
    assert _ids(opt2.param_groups[1]["params"]) == _ids([net.conv.bias, net.fc.bias, net.tied.bias])


def test_optimizer_everything_decays_by_default_and_lr_scaling_note():
    net = _GroupsNet()
    cfg = OptimizerConfig(type="sgd", lr=0.01, weight_decay=1e-4, momentum=0.9, base_batch=16)
    opt, lr, note = build_optimizer(net, cfg, batch=4)
    assert len(opt.param_groups) == 1  # NanoDet / RetinaNet: every parameter decays
    assert len(opt.param_groups[0]["params"]) == 9  # 11 tensors − 2 frozen; the tied weight once
    assert lr == pytest.approx(0.0025)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.0025) and opt.param_groups[0]["initial_lr"] == opt.param_groups[0]["lr"]
    assert "lr 0.01 × 4/16 = 0.0025 (linear scaling from batch 16)" in note
    _, lr_fixed, note_fixed = build_optimizer(net, cfg.model_copy(update={"base_batch": None}), batch=4)
    assert lr_fixed == 0.01 and "not scaled" in note_fixed


# ---------------------------------------------------------------------------------------------- checkpoints
def test_atomic_save_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "weights" / "last.pt"
    save_checkpoint(path, {"format": "detcli-1", "epoch": 1, "w": torch.ones(3)})
    before = path.read_bytes()

    def failing_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.torch, "save", failing_save)
    with pytest.raises(DetcliError, match=r"cannot write .*last\.pt: disk full"):
        save_checkpoint(path, {"format": "detcli-1", "epoch": 2})
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.pt"]  # no temporary left behind
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1


def test_load_checkpoint_errors_are_clear(tmp_path):
    with pytest.raises(DetcliError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    save_checkpoint(corrupt, {"format": "detcli-1", "w": torch.ones(1000)})
    corrupt.write_bytes(corrupt.read_bytes()[:200])  # truncated
    with pytest.raises(DetcliError, match="corrupt"):
        load_checkpoint(corrupt)
    plain = tmp_path / "plain.pt"
    torch.save({"state_dict": {"w": torch.ones(1)}}, plain)
    with pytest.raises(DetcliError, match="not a detcli checkpoint"):
        load_checkpoint(plain)


def test_read_any_checkpoint_runs_no_code_from_the_file(tmp_path):
    path = tmp_path / "foreign.ckpt"
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "hp": _Trap(), "arr": np.arange(2)}, path)
    with pytest.raises(DetcliError):
        load_checkpoint(path)
    with pytest.raises(ckpt_mod.CheckpointRefused, match=r"contains code: it refers to \S*_spring"):
        ckpt_mod.read_any_checkpoint(path)  # a call the file asks for is refused, never run
    assert _TRAPPED == []
    torch.save({"state_dict": {"w": torch.arange(3.0)}, "arr": np.arange(2)}, path)
    raw = ckpt_mod.read_any_checkpoint(path)
    assert torch.equal(raw["state_dict"]["w"], torch.arange(3.0)) and np.array_equal(raw["arr"], np.arange(2))


_TRAPPED: list = []


def _spring(msg):  # what a malicious pickle would run
    _TRAPPED.append(msg)


class _Trap:
    def __reduce__(self):
        return (_spring, ("would have run",))


# ---------------------------------------------------------------------------------------------- run folders
def test_run_dir_numbering_and_latest(tmp_path):
    project = tmp_path / "runs" / "train"
    assert new_run_dir(project, "train") == project / "train"
    assert new_run_dir(project, "train") == project / "train2"
    assert new_run_dir(project, "train") == project / "train3"
    assert new_run_dir(project, "train", exist_ok=True) == project / "train"
    assert latest_run(project) is None
    for name, t in (("train", 100), ("train3", 300), ("train2", 200)):
        last = project / name / "weights" / "last.pt"
        last.parent.mkdir(parents=True)
        last.write_bytes(b"x")
        import os

        os.utime(last, (t, t))
    assert latest_run(project) == project / "train3"


def test_results_csv_append_truncate_and_new_columns(tmp_path):
    csv_file = ResultsCSV(tmp_path / "results.csv")
    for e in (1, 2, 3):
        csv_file.append({"epoch": e, "time": 1.5 * e, "train/loss": 0.5 / e, "metrics/AP50-95": None})
    csv_file.truncate(2)
    cols, rows = csv_file.read()
    assert cols == ["epoch", "time", "train/loss", "metrics/AP50-95"]
    assert [r["epoch"] for r in rows] == ["1", "2"] and rows[1]["metrics/AP50-95"] == ""
    csv_file.append({"epoch": 3, "time": 4.5, "train/loss": 0.1, "metrics/AP50-95": float("nan"), "lr/pg0": 0.01})
    cols, rows = csv_file.read()
    assert cols[-1] == "lr/pg0" and rows[2]["metrics/AP50-95"] == "nan" and rows[0]["lr/pg0"] == ""


def test_parse_device_and_worker_errors(monkeypatch):
    assert parse_device("cpu") == ("cpu", [])
    with monkeypatch.context() as m:  # what a machine without CUDA answers, on any machine
        m.setattr(torch.cuda, "is_available", lambda: False)
        assert parse_device(None) == ("cpu", [])
        with pytest.raises(DetcliError, match="CUDA is not available"):
            parse_device("0,1")
    with pytest.raises(DetcliError, match="expected cpu"):
        parse_device("gpu0")
    with pytest.raises(DetcliError, match="twice"):
        parse_device("1,1")
    err = _as_detcli_error("Traceback ...\n  File x\ndetcli.errors.NonFiniteLossError: non-finite loss at epoch 2/2\n")
    assert isinstance(err, NonFiniteLossError) and str(err) == "non-finite loss at epoch 2/2"
    assert _as_detcli_error("Traceback\nValueError: boom") is None


# ---------------------------------------------------------------------------------------------- toy detector
@pytest.fixture(scope="module")
def preset():
    return load_preset("nanodet-plus-m")[0]


def _trainer(preset, run_dir, model_seed, resume_from=None, model=None, cls=Trainer, epochs=2):
    seed_everything(model_seed)
    model = model or ToyDetector()
    seed_everything(0)
    train, val, val_ds = loaders()
    return cls(preset, train_cfg(epochs), model, train, val, val_ds, run_dir, RecordingReporter(),
               torch.device("cpu"), 0, False, resume_from, {"argv": ["detcli", "train"]}, {"config": {"k": 1}})


class _Interrupted(Exception):
    pass


class StopAfterFirstEpoch(Trainer):
    def _end_epoch(self, epoch, *args):
        super()._end_epoch(epoch, *args)
        if epoch == 0:
            raise _Interrupted


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_resume_continues_exactly(tmp_path, preset):
    straight = _trainer(preset, new_run_dir(tmp_path, "a"), model_seed=1, epochs=3)
    final = straight.fit()
    assert straight.schedule.warmup_steps == 6  # the resume below lands in the middle of the warmup
    interrupted = _trainer(preset, new_run_dir(tmp_path, "b"), model_seed=1, cls=StopAfterFirstEpoch, epochs=3)
    with pytest.raises(_Interrupted):
        interrupted.fit()
    last = tmp_path / "b" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 1
    torch.manual_seed(1234), np.random.seed(5), random.seed(9)  # the RNGs move on before the resume
    resumed = _trainer(preset, tmp_path / "b", model_seed=99, resume_from=last, epochs=3)  # init loaded over
    final_resumed = resumed.fit()

    assert _state_equal(straight.model.state_dict(), resumed.model.state_dict())
    assert _state_equal(straight.ema.module.state_dict(), resumed.ema.module.state_dict())
    assert straight.ema.updates == resumed.ema.updates == 12
    a, b = load_checkpoint(tmp_path / "a" / "weights" / "last.pt"), load_checkpoint(last)
    assert a["epoch"] == b["epoch"] == 3
    assert torch.equal(a["optimizer"]["state"][0]["exp_avg"], b["optimizer"]["state"][0]["exp_avg"])
    drop_time = lambda r: {k: repr(v) for k, v in r.items() if k not in ("time", "run_dir")}  # noqa: E731
    assert drop_time(final) == drop_time(final_resumed)
    _, rows_a = ResultsCSV(tmp_path / "a" / "results.csv").read()
    _, rows_b = ResultsCSV(tmp_path / "b" / "results.csv").read()
    assert [drop_time(r) for r in rows_a] == [drop_time(r) for r in rows_b] and len(rows_b) == 3
    # the run folder: manifest with the resume recorded, resolved preset, best.pt holding the EMA weights
    import json

    manifest = json.loads((tmp_path / "b" / "run.json").read_text())
    assert manifest["resumes"][0]["from_epoch"] == 1 and manifest["world_size"] == 1
    assert (tmp_path / "b" / "preset.yaml").read_text().count("epochs: 3\n") == 1
    best = load_checkpoint(tmp_path / "a" / "weights" / "best.pt")
    assert best["optimizer"] is None and best["ema"] is None and best["best_map"] == a["best_map"] >= 0
    assert best["class_names"] == NAMES and best["cat_ids"] == CAT_IDS and best["dataset"]["config"] == {"k": 1}
    assert best["epoch"] in (1, 2, 3)  # the EMA weights of its epoch: those of last.pt exactly when it is the last
    assert _state_equal(best["model"], inference_weights(a)) == (best["epoch"] == 3)


def test_evaluate_matches_a_hand_scored_case(preset):
    """Perfect scores on the right class → AP 1.0; the other class' box at lower score is a false positive."""

    class Oracle(ToyDetector):
        def predict(self, images, metas, cfg=None):
            out = []
            for meta in metas:
                label = (meta.image_id - 1) % 2
                scores = torch.tensor([0.9, 0.1]) if label == 0 else torch.tensor([0.1, 0.9])
                out.append(Detections(torch.tensor([[2.0, 2.0, 10.0, 10.0]] * 2), scores, torch.arange(2)))
            return out

    _, val, val_ds = loaders()
    result = evaluate(Oracle(), val, val_ds, torch.device("cpu"), EvalConfig(), RecordingReporter())
    assert result.stats["AP50-95"] == pytest.approx(1.0) and result.num_images == 8 and result.num_detections == 16


def test_non_finite_loss_stops_and_keeps_checkpoints(tmp_path, preset):
    seen = {}

    class Recording(Trainer):
        def _end_epoch(self, epoch, *args):
            super()._end_epoch(epoch, *args)
            seen["best"] = hashlib.sha256(self.best_path.read_bytes()).hexdigest()
            seen["last"] = hashlib.sha256(self.last_path.read_bytes()).hexdigest()

    run = new_run_dir(tmp_path, "nan")
    trainer = _trainer(preset, run, model_seed=1, model=ToyDetector(nan_from_epoch=1), cls=Recording)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2/2, iteration 1/4: loss_cls=nan, loss_reg=") as e:
        trainer.fit()
    assert "still holds epoch 1" in str(e.value)
    assert hashlib.sha256((run / "weights" / "best.pt").read_bytes()).hexdigest() == seen["best"]
    assert hashlib.sha256((run / "weights" / "last.pt").read_bytes()).hexdigest() == seen["last"]
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 1
    assert sorted(p.name for p in (run / "weights").iterdir()) == ["best.pt", "last.pt"]


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("where", ["model", "EMA"])
def test_non_finite_weights_are_never_saved(tmp_path, preset, where):
    seen = {}

    class NaNInSecondEpoch(Trainer):
        def train_one_epoch(self, epoch):
            out = super().train_one_epoch(epoch)
            if epoch == 1:  # the loss stayed finite, the weights did not (e.g. an inf gradient in the last step)
                module = self.model if where == "model" else self.ema.module
                with torch.no_grad():
                    module.cls.weight[0, 0] = float("nan")
            return out

        def _end_epoch(self, epoch, *args):
            super()._end_epoch(epoch, *args)
            seen["best"], seen["last"] = _digest(self.best_path), _digest(self.last_path)

    run = new_run_dir(tmp_path, "nan")
    trainer = _trainer(preset, run, model_seed=1, cls=NaNInSecondEpoch)
    with pytest.raises(DetcliError, match=rf"non-finite weights after epoch 2/2 \({where}: cls\.weight\)") as e:
        trainer.fit()
    assert "still holds epoch 1 and best.pt is unchanged" in str(e.value)
    assert _digest(run / "weights" / "best.pt") == seen["best"] and _digest(run / "weights" / "last.pt") == seen["last"]
    assert load_checkpoint(run / "weights" / "last.pt")["epoch"] == 1
    assert len(ResultsCSV(run / "results.csv").read()[1]) == 1  # stopped before epoch 2's validation and row


def test_warmup_longer_than_the_run_is_capped_and_said(tmp_path, preset):
    trainer = _trainer(preset, new_run_dir(tmp_path, "short"), model_seed=1, epochs=1)  # warmup 6 > 4 iterations
    trainer.fit()
    assert trainer.schedule.warmup_steps == 2  # half of the 4 iterations
    lines = "\n".join(trainer.reporter.lines)
    assert "train.warmup.steps 6 is longer than half of this run (1 epochs × 4 iterations)" in lines
    assert "warmup 2 iterations from 0.1·lr (train.warmup.steps 6 capped at 50% of the run's 4 iterations)" in lines


class _Killed(BaseException):
    """What the process sees of a SIGKILL: nothing more runs (not an Exception: no handler catches it)."""


def _scripted_ap(aps):
    class ScriptedAP(Trainer):
        """Validation AP50-95 given per epoch, so which epoch improves is known."""

        def validate(self, epoch):
            result = super().validate(epoch)
            result.stats["AP50-95"] = aps[epoch]
            return result

    return ScriptedAP


@pytest.mark.parametrize(
    "epochs, aps, failing, how",
    [
        (3, [0.1, 0.2, 0.15], 1, "killed"),  # between best.pt and last.pt of epoch 2
        (3, [0.1, 0.2, 0.15], 1, "disk full"),
        (2, [0.1, 0.2], 0, "killed"),  # during the final epoch's first checkpoint write
        (2, [0.1, 0.2], 0, "disk full"),
    ],
)
def test_interrupted_checkpoint_writes_leave_consistent_files(tmp_path, preset, monkeypatch, epochs, aps, failing, how):
    """Whatever stops epoch 2 between or during its checkpoint writes, the best AP that last.pt records is held by
    best.pt, and after --resume best.pt holds the best epoch and agrees with last.pt."""
    import errno

    from detcli.engine.hooks import checkpoint as trainer_mod  # where last.pt and best.pt are written
    from detcli.fileio import atomic_write

    run = new_run_dir(tmp_path, "run")
    weights = run / "weights"
    writes = []
    real_save = trainer_mod.save_checkpoint

    def save(path, payload):
        if payload["epoch"] == 2 and len(writes) == failing:
            if how == "killed":  # a kill in the middle of torch.save leaves the temporary file behind
                (path.parent / f".{path.name}.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half a zip")
                raise _Killed

            def no_space(f):
                raise OSError(errno.ENOSPC, "No space left on device")

            atomic_write(path, no_space)
        if payload["epoch"] == 2:
            writes.append(path.name)
        return real_save(path, payload)

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save)
    cls = _scripted_ap(aps)
    with pytest.raises(_Killed if how == "killed" else DetcliError) as e:
        _trainer(preset, run, model_seed=1, cls=cls, epochs=epochs).fit()
    if how == "disk full":
        if failing:  # best.pt of epoch 2 is on disk, last.pt is not
            failed, kept = "last.pt", f"{weights / 'best.pt'} holds epoch 2 (the best so far), "
        else:
            failed, kept = "best.pt", ""
        assert re.search(rf"cannot write .*{failed}: No space left on device", str(e.value))
        assert f"Training stopped at epoch 2/{epochs}: {kept}{weights / 'last.pt'} still holds epoch 1" in str(e.value)
        assert f"detcli train --resume {run}" in str(e.value)
    last, best = load_checkpoint(weights / "last.pt"), load_checkpoint(weights / "best.pt")
    assert last["epoch"] == 1 and best["best_map"] >= last["best_map"] == 0.1  # what last.pt claims is on disk

    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    resumed = _trainer(preset, run, model_seed=5, cls=cls, epochs=epochs, resume_from=weights / "last.pt")
    resumed.fit()
    last, best = load_checkpoint(weights / "last.pt"), load_checkpoint(weights / "best.pt")
    assert last["epoch"] == epochs and best["epoch"] == 2  # epoch 2 was repeated and best.pt rewritten
    assert best["best_map"] == last["best_map"] == best["metrics"]["stats"]["AP50-95"] == 0.2
    assert sorted(p.name for p in weights.iterdir()) == ["best.pt", "last.pt"]  # the temporary is gone
    if how == "killed":
        assert any("removed 1 temporary file(s)" in line for line in resumed.reporter.lines)

    # a finished run is refused untouched, temporaries included
    from detcli.app.train import TrainRequest, train_command

    stray = weights / ".last.pt.stray.tmp"
    stray.write_bytes(b"x")
    before = {p.name: _digest(p) for p in weights.iterdir()}
    with pytest.raises(DetcliError, match="already finished"):
        train_command(TrainRequest(preset=None, resume=str(run), force_plain=True))
    assert {p.name: _digest(p) for p in weights.iterdir()} == before


def test_full_disk_on_resume_is_a_message_and_keeps_the_run(tmp_path, preset, monkeypatch):
    import errno

    from detcli import fileio

    run = new_run_dir(tmp_path, "run")
    with pytest.raises(_Interrupted):
        _trainer(preset, run, model_seed=1, cls=StopAfterFirstEpoch).fit()
    before = {p.relative_to(run): _digest(p) for p in run.rglob("*") if p.is_file()}

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(fileio.tempfile, "mkstemp", full)
    with pytest.raises(DetcliError, match=r"cannot write .*preset\.yaml: No space left on device"):
        _trainer(preset, run, model_seed=1, resume_from=run / "weights" / "last.pt").fit()
    assert {p.relative_to(run): _digest(p) for p in run.rglob("*") if p.is_file()} == before


def test_unused_parameter_probe_restores_buffers():
    torch.manual_seed(0)
    model = ToyDetector(spare=True).train()
    train, _, _ = loaders()
    batch = next(iter(train))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert unused_parameters(model, batch, 0) == ["spare.weight", "spare.bias"]
    assert _state_equal(before, model.state_dict())
    assert all(p.grad is None for p in model.parameters())


# ---------------------------------------------------------------------------------------------- DDP on CPU
def build_toy_parts(info: ProcessInfo) -> TrainParts:
    """``TrainSetup.build`` for the DDP test (module level: it crosses torch.multiprocessing.spawn)."""
    torch.manual_seed(3)
    train, val, val_ds = loaders(distributed=info.world_size > 1, batch=info.batch_per_process)
    return TrainParts(ToyDetector(spare=True), train, val, val_ds, {"config": {"ddp": True}})


def test_ddp_two_cpu_processes(tmp_path, preset, monkeypatch):
    monkeypatch.setenv("DETCLI_DDP_CPU_PROCS", "2")
    run = new_run_dir(tmp_path, "ddp")
    cfg = train_cfg(epochs=1).model_copy(update={"batch": 4})
    setup = TrainSetup(preset, cfg, build_toy_parts, run, device="cpu", seed=0, force_plain=True,
                       train_args={"argv": ["detcli", "train", "--device", "cpu"]})
    row = launch_training(setup)  # 2 gloo processes; the spare parameter needs find_unused_parameters
    ckpt = load_checkpoint(run / "weights" / "last.pt")
    assert ckpt["epoch"] == 1 and len(ckpt["rng"]["per_rank"]) == 2
    assert ckpt["ema"]["updates"] == 2  # 8 images / (2 per process × 2 processes)
    assert row is not None and row["epoch"] == 1 and math.isfinite(row["train/loss_cls"])
    import json

    assert json.loads((run / "run.json").read_text())["world_size"] == 2
    assert len(ResultsCSV(run / "results.csv").read()[1]) == 1


def test_validation_interval_and_every_epoch_at_the_end():
    """val_interval 10 over 30 epochs, and every epoch in the last 5 (RTMDet's dynamic interval)."""
    from types import SimpleNamespace

    from detcli.config.schema import OptimizerConfig, TrainConfig
    from detcli.engine.trainer import Trainer

    def due(**kw) -> list[int]:
        cfg = TrainConfig(epochs=30, batch=2, optimizer=OptimizerConfig(type="adamw", lr=0.001),
                          schedule=ScheduleConfig(type="cosine"), **kw)
        fake = SimpleNamespace(val_loader=object(), cfg=cfg)
        return [e + 1 for e in range(30) if Trainer._validation_due(fake, e)]

    assert due(val_interval=10) == [10, 20, 30]
    assert due(val_interval=10, val_every_epoch_last=5) == [10, 20, 26, 27, 28, 29, 30]


def test_cosine_final_lr_scales_with_the_batch():
    """RTMDet: lr 0.004 and eta_min 0.0002 at batch 256; at batch 16 both are 1/16, so the lr still decays."""
    from detcli.engine.schedule import scaled_schedule

    cfg = ScheduleConfig(type="cosine", eta_min=0.0002, flat_fraction=0.5, per_iteration=True)
    scaled = scaled_schedule(cfg, 0.004, 0.004 * 16 / 256)
    assert scaled.eta_min == pytest.approx(0.0002 / 16) and scaled.flat_fraction == 0.5
    s = LRSchedule(WarmupConfig(), scaled, 0.004 / 16, 10, 4)
    assert s.lr_at(9, 3) < s.lr_at(5, 0) == pytest.approx(0.004 / 16)


def _fit_amp(tmp_path, preset, amp, name):
    """One epoch of the toy detector with ``amp``; returns the trainer, its reporter and, per forward,
    (autocast on, the conv's output dtype)."""
    seen = []

    class Spy(ToyDetector):
        def forward(self, images):
            seen.append((torch.is_autocast_enabled("cpu"), self.conv(images).dtype))
            return super().forward(images)

    seed_everything(1)
    model = Spy()
    seed_everything(0)
    train, val, val_ds = loaders()
    rep = RecordingReporter()
    trainer = Trainer(preset, train_cfg(1), model, train, val, val_ds, new_run_dir(tmp_path, name), rep,
                      torch.device("cpu"), 0, amp, None, {"argv": ["detcli", "train"]}, {"config": {}})
    trainer.fit()
    return trainer, rep, seen


def test_amp_on_cpu_trains_in_bfloat16_without_loss_scaling(tmp_path, preset):
    trainer, rep, seen = _fit_amp(tmp_path, preset, True, "amp")
    training = [s for s in seen if s[0]]
    assert len(training) == 4 and all(conv == torch.bfloat16 for _, conv in training)  # 4 iterations
    assert all(not enabled and conv == torch.float32 for enabled, conv in seen if not enabled)  # validation
    assert not trainer.scaler.is_enabled() and any("AMP on (bfloat16)" in line for line in rep.lines)
    import json

    manifest = json.loads((tmp_path / "amp" / "run.json").read_text())
    assert manifest["amp"] is True and manifest["amp_dtype"] == "bfloat16"
    last = load_checkpoint(tmp_path / "amp" / "weights" / "last.pt")
    assert last["scaler"] is None
    assert all(v.dtype == torch.float32 for v in last["model"].values() if v.is_floating_point())


@pytest.mark.parametrize("kind, on, why", [("amx", True, "has AMX"), ("native", False, "but no AMX"),
                                           ("none", False, "no native bfloat16 on this CPU")])
def test_amp_auto_on_cpu_takes_bfloat16_only_with_amx(tmp_path, preset, monkeypatch, kind, on, why):
    from detcli.engine import amp as amp_mod

    monkeypatch.setattr(amp_mod, "cpu_bfloat16", lambda: kind)
    _, rep, seen = _fit_amp(tmp_path, preset, "auto", "auto")
    assert any(enabled for enabled, _ in seen) is on
    expected = f"AMP {'on (bfloat16)' if on else 'off'} (auto: "
    assert any(expected in line and why in line for line in rep.lines), rep.lines
    assert not any("emulated" in line or "training in fp32" in line for line in rep.lines)  # auto never warns
