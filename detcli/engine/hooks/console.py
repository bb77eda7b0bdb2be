"""Console logging of a run: the setup lines, one row per epoch, and the final report (the per-class table of
the last validation, early stopping). The progress bar of the steps is the trainer's own."""
from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from detcli.engine.amp import amp_note
from detcli.engine.hooks.base import HookBase
from detcli.progress import format_duration


class ConsoleLog(HookBase):
    def before_train(self, trainer: Any) -> None:
        rep, cfg = trainer.reporter, trainer.cfg
        rep.info(f"optimizer: {trainer.lr_note}")
        rep.info(
            f"schedule: {cfg.epochs} epochs × {trainer.iters_per_epoch} iterations, {trainer.schedule.warmup_note()}, "
            f"{cfg.schedule.type}; EMA {'decay %g' % cfg.ema.decay if cfg.ema else 'off'}; "
            f"AMP {amp_note(trainer.amp_requested, trainer.use_amp, trainer.device)}; "
            f"{trainer.world} process(es) on {trainer.device.type}"
            + (f"; early stopping after {cfg.patience} validation(s) without a better AP50-95"
               if cfg.patience is not None else "")
        )
        rep.info(f"Logging results to {trainer.run_dir}")
        rep.info(f"Starting training for {cfg.epochs - trainer.state.start_epoch} epochs...")

    def after_epoch(self, trainer: Any) -> None:
        if trainer.rank == 0:
            trainer.reporter.epoch_row(console_row(trainer.state.row, trainer.cfg.epochs, trainer.state.best_map))

    def after_train(self, trainer: Any) -> None:
        from detcli.evaluation.evaluator import per_class_table

        s, rep, cfg = trainer.state, trainer.reporter, trainer.cfg
        done = int(s.summary.get("epoch", cfg.epochs))
        rep.info(f"{done - s.start_epoch} epochs completed in {s.train_time / 3600:.3f} hours.")
        if s.stopped_early:
            best = (f"Best AP50-95 {s.best_map:.4f} at epoch {s.best_epoch}, kept in {trainer.best_path}."
                    if s.best_epoch > 0 else "No validation gave a finite AP50-95 (no best.pt).")
            rep.info(f"Stopped early at epoch {done}/{cfg.epochs}: AP50-95 has not improved for "
                     f"{s.stale_validations} validation(s) (train.patience {cfg.patience}). {best}")
        r = s.last_result
        if r is not None:
            weights = "EMA" if trainer.ema is not None else "model"
            conf = (f"; P, R at IoU 0.50, conf {r.curves.best_confidence:.3f} (max mean F1)"
                    if r.curves is not None else "")
            rep.print(per_class_table(r, title=f"per class, epoch {s.last_result_epoch} ({weights} weights{conf})"))


def loss_labels(names: Iterable[str]) -> dict[str, str]:
    """Console labels of loss terms: ``loss_qfl`` → ``qfl``, ``aux_loss_dfl`` → ``aux_dfl`` (the full name where
    the short one would be empty, ``loss`` (the total's label) or taken)."""
    names = list(names)
    labels: dict[str, str] = {}
    for name in names:
        short = name.replace("loss_", "", 1)
        taken = short in labels.values() or (short != name and short in names)
        labels[name] = name if not short or short == "loss" or taken else short
    return labels


def console_row(row: dict[str, Any], epochs: int, best: float) -> dict[str, Any]:
    """The console's row of a results.csv ``row``: ``elapsed`` is the run's training time so far (validation
    included, all epochs), ``loss`` the sum of the epoch's mean loss terms, which follow as a group (below the
    row where the row would not fit the console: :class:`~detcli.console.EpochTable`)."""
    terms = {k.removeprefix("train/"): v for k, v in row.items() if k.startswith("train/")}
    labels = loss_labels(terms)
    out: dict[str, Any] = {
        "epoch": f"{row['epoch']:>{len(str(epochs))}}/{epochs}",
        "elapsed": format_duration(row["time"]),
        "loss": float(sum(terms.values())) if terms else math.nan,
        "losses": {labels[k]: v for k, v in terms.items()},
        "lr": row["lr/pg0"],
    }
    for stat in ("AP50-95", "AP50"):
        value = row.get(f"metrics/{stat}")
        out[stat] = math.nan if value is None else value
    out["best"] = best if best >= 0 else math.nan
    return out


__all__ = ["ConsoleLog", "console_row", "loss_labels"]
