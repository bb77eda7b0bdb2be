"""The trainer as a step loop with hooks: the stages in order, what a hook sees, a hook that stops the run, the
default hooks, and the engine free of plotting imports."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from tests.support.toy_training import RecordingReporter, ToyDetector, loaders, train_cfg

from detcli.checkpoints.io import load_checkpoint
from detcli.config.loader import load_preset
from detcli.engine.hooks import HookBase, default_hooks
from detcli.engine.run_dir import new_run_dir
from detcli.engine.seed import seed_everything
from detcli.engine.trainer import Trainer

ENGINE = Path(__file__).resolve().parents[2] / "detcli" / "engine"


class Stages(HookBase):
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __getattribute__(self, name):
        if name in ("before_train", "before_epoch", "before_step", "after_loss", "after_step", "after_epoch",
                    "after_train"):
            return lambda trainer: object.__getattribute__(self, "calls").append(name)
        return object.__getattribute__(self, name)


def _fit(tmp_path: Path, epochs: int, *hooks: HookBase, resume_from=None, name="run") -> Trainer:
    seed_everything(1)
    model = ToyDetector()
    seed_everything(0)
    train, val, val_ds = loaders()
    run_dir = tmp_path / name if resume_from is not None else new_run_dir(tmp_path, name)
    trainer = Trainer(load_preset("nanodet-plus-m")[0], train_cfg(epochs), model, train, val, val_ds, run_dir,
                      RecordingReporter(), torch.device("cpu"), 0, False, resume_from, {"argv": ["detcli", "train"]},
                      {"config": {}}, hooks=hooks)
    trainer.fit()
    return trainer


def test_every_stage_is_called_in_order(tmp_path):
    hook = Stages()
    trainer = _fit(tmp_path, 2, hook)
    step = ["before_step", "after_loss", "after_step"]
    epoch = ["before_epoch", *step * 4, "after_epoch"]  # 8 toy images, batch 2
    assert hook.calls == ["before_train", *epoch * 2, "after_train"]
    assert trainer.hooks[-1] is hook  # after the default hooks: it sees their results


def test_a_hook_sees_the_state_the_default_hooks_leave(tmp_path):
    seen = []

    class Look(HookBase):
        def after_step(self, trainer):
            s = trainer.state
            seen.append(("step", s.epoch, s.iteration, sorted(s.losses), s.lr > 0))

        def after_epoch(self, trainer):
            s = trainer.state
            seen.append(("epoch", s.epoch, s.row["epoch"], s.result is not None, s.best_epoch, trainer.last_path.is_file()))

    _fit(tmp_path, 1, Look())
    assert seen[:1] == [("step", 0, 0, ["loss_cls", "loss_reg"], True)] and len(seen) == 5
    assert seen[-1] == ("epoch", 0, 1, True, 1, True)  # validated, best so far, last.pt written


def test_a_hook_can_stop_a_run_between_epochs_and_it_resumes(tmp_path):
    """A hook raising after epoch 1's checkpoint leaves a run that --resume continues."""

    class Stop(Exception):
        pass

    class StopAfterFirst(HookBase):
        def after_epoch(self, trainer):
            raise Stop

    with pytest.raises(Stop):
        _fit(tmp_path, 2, StopAfterFirst())
    last = tmp_path / "run" / "weights" / "last.pt"
    assert load_checkpoint(last)["epoch"] == 1
    resumed = _fit(tmp_path, 2, resume_from=last)
    assert resumed.state.start_epoch == 1 and load_checkpoint(last)["epoch"] == 2


def test_default_hooks_and_tensorboard_when_asked():
    names = [type(h).__name__ for h in default_hooks()]
    assert names == ["NonFiniteGuard", "EvalHook", "EpochClock", "RunFiles", "Checkpointer", "ConsoleLog", "PlotsHook"]
    assert type(default_hooks(tensorboard=True)[-1]).__name__ == "TensorBoardHook"


def _imports(path: Path, top_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_the_engine_does_not_import_plots():
    """Only the hooks that draw (plots, TensorBoard) import :mod:`detcli.plots`, and only when a run starts."""
    drawing = {ENGINE / "hooks" / "plots.py", ENGINE / "hooks" / "tensorboard.py"}
    for path in sorted(ENGINE.rglob("*.py")):
        found = {m for m in _imports(path, top_level_only=path in drawing) if m.startswith("detcli.plots")}
        assert not found, f"{path.relative_to(ENGINE)} imports {found}"
