"""The hooks of the training loop (:class:`HookBase`), one concept per module; :func:`default_hooks` is the list
every run gets, in the order they run."""
from __future__ import annotations

from detcli.engine.hooks.base import HookBase, TrainState


def default_hooks(tensorboard: bool = False) -> list[HookBase]:
    """The non-finite guard, validation and early stopping, the epoch clock, the run files, checkpoints, plots,
    console logging, and TensorBoard logging when asked (``train.tensorboard``)."""
    from detcli.engine.hooks.checkpoint import Checkpointer
    from detcli.engine.hooks.console import ConsoleLog
    from detcli.engine.hooks.evaluation import EpochClock, EvalHook
    from detcli.engine.hooks.non_finite import NonFiniteGuard
    from detcli.engine.hooks.plots import PlotsHook
    from detcli.engine.hooks.run_files import RunFiles

    hooks: list[HookBase] = [NonFiniteGuard(), EvalHook(), EpochClock(), RunFiles(), Checkpointer(), ConsoleLog(),
                             PlotsHook()]
    if tensorboard:
        from detcli.engine.hooks.tensorboard import TensorBoardHook

        hooks.append(TensorBoardHook())
    return hooks


__all__ = ["HookBase", "TrainState", "default_hooks"]
