"""``results.png``: one panel per training loss, the learning rate and the main COCO metrics, by epoch."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from detcli.plots.figure import new_figure, save_figure

# metric panels in this order; a tuple shares one panel. Other metrics/… columns get a panel each, except the
# COCO stats left out here on purpose (AR1, AR10 and the AR by size).
METRIC_PANELS: tuple[tuple[str, ...], ...] = (
    ("AP50-95",), ("AP50",), ("AP75",), ("AR100",), ("APs", "APm", "APl"),
)
LEFT_OUT = {"AR1", "AR10", "ARs", "ARm", "ARl"}


def results_panels(columns: list[str]) -> list[tuple[str, list[str]]]:
    """(title, [column, …]) of each panel for the columns of ``results.csv``."""
    panels = [(c.removeprefix("train/"), [c]) for c in columns if c.startswith("train/")]
    panels += [(c, [c]) for c in columns if c.startswith("lr/")]
    metrics = {c.removeprefix("metrics/"): c for c in columns if c.startswith("metrics/")}
    for group in METRIC_PANELS:
        present = [metrics[m] for m in group if m in metrics]
        if present:
            panels.append((" ".join(group), present))
    grouped = {m for g in METRIC_PANELS for m in g} | LEFT_OUT
    panels += [(m, [c]) for m, c in metrics.items() if m not in grouped]
    return panels


def _number(text: str | None) -> float:
    try:
        return float(text) if text not in (None, "") else math.nan
    except ValueError:
        return math.nan


def results_figure(columns: list[str], rows: list[dict[str, str]]) -> Any | None:
    """The figure of ``results.png`` for the rows of ``results.csv`` (as
    :meth:`~detcli.engine.run_dir.ResultsCSV.read` returns them); None when there is no row to draw.

    The epoch axis has whole-number ticks only, also after one or two epochs. A metric panel without any
    value yet (no validation has run) says so instead of staying empty.
    """
    if not rows or "epoch" not in columns:
        return None
    epochs = np.array([_number(r.get("epoch")) for r in rows])
    panels = results_panels(columns)
    ncols = max(1, math.ceil(len(panels) / 2))
    fig, axes = new_figure(2.6 * ncols, 5.2, layout=None, nrows=2, ncols=ncols, squeeze=False)
    fig.subplots_adjust(left=0.35 / ncols, right=0.99, bottom=0.09, top=0.93, wspace=0.45, hspace=0.4)
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    for ax, (title, cols) in zip(axes.flat, panels):
        drawn = 0
        for col in cols:
            y = np.array([_number(r.get(col)) for r in rows])
            ok = np.isfinite(y) & np.isfinite(epochs)
            drawn += int(ok.sum())
            label = col.removeprefix("metrics/") if len(cols) > 1 else None
            ax.plot(epochs[ok], y[ok], marker="o", markersize=3, linewidth=1.5, label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("epoch", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        _epoch_axis(ax, epochs)
        if not drawn:
            empty = "no validation yet" if all(c.startswith("metrics/") for c in cols) else "no value yet"
            ax.text(0.5, 0.5, empty, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="grey")
            ax.set_yticks([])
        elif len(cols) > 1:
            ax.legend(fontsize=7)
    return fig


def _epoch_axis(ax: Any, epochs: np.ndarray) -> None:
    """Whole-number epoch ticks over the epochs drawn, with half an epoch (at least) of margin on each side:
    matplotlib's automatic limits around one or two points would give fractional ticks (0.96, 0.98, …)."""
    from matplotlib.ticker import MaxNLocator

    finite = epochs[np.isfinite(epochs)]
    if finite.size:
        lo, hi = float(finite.min()), float(finite.max())
        pad = max(0.5, 0.05 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))


def plot_results(columns: list[str], rows: list[dict[str, str]], path: str | Path) -> Path | None:
    """:func:`results_figure` saved to ``path``; None when there is no row to draw."""
    fig = results_figure(columns, rows)
    return None if fig is None else save_figure(fig, path)


__all__ = ["plot_results", "results_figure", "results_panels"]
