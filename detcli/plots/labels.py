"""``labels.jpg``: what the labels of a split look like (Ultralytics' ``labels.jpg``, in six panels).

Instances per class · boxes per image · box centres and box width × height (both relative to the image) ·
sqrt(area) in pixels and aspect w/h per class (one step histogram per class up to ``PER_CLASS_LINES``
classes, else all classes together).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from detcli.data.label_stats import LabelStats
from detcli.plots.figure import new_figure, save_figure
from detcli.plots.palette import class_rgb

PER_CLASS_LINES = 10
MAX_COUNT_BARS = 50  # bars of the boxes-per-image histogram: one per count up to this many, else wider bins


def count_bins(top: int, max_bars: int = MAX_COUNT_BARS) -> np.ndarray:
    """Bin edges for counts 0..``top``: one bar per count while they fit in ``max_bars``, else bars ``w`` counts
    wide (``w = ceil((top + 1) / max_bars)``), edges at half-integers so every bar holds whole counts.

    Returns:
        (B + 1,) float64 edges, B ≤ ``max_bars``: drawing costs O(images + B), never O(top).
    """
    width = max(1, -(-(int(top) + 1) // max_bars))
    bars = -(-(int(top) + 1) // width)
    return np.arange(bars + 1, dtype=np.float64) * width - 0.5


def _log_bins(values: np.ndarray, n: int = 40) -> np.ndarray:
    positive = values[values > 0]
    lo, hi = (positive.min(), positive.max()) if positive.size else (1.0, 10.0)
    return np.geomspace(lo * 0.9, max(hi * 1.1, lo * 1.2), n + 1)


def _log_axis(ax, bins: np.ndarray, ticks: list[float], labels: list[str]) -> None:
    """A log x axis with plain tick labels at ``ticks`` (those inside the bins' range)."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    inside = [(t, lab) for t, lab in zip(ticks, labels) if bins[0] <= t <= bins[-1]]
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    if inside:
        ax.set_xticks([t for t, _ in inside], [lab for _, lab in inside])


def _hist2d(ax, x: np.ndarray, y: np.ndarray) -> None:
    """Counts on a 50 × 50 grid over [0, 1]², log colours, empty cells white (one box is still visible)."""
    from matplotlib.colors import LogNorm

    if len(x):
        ax.hist2d(x, y, bins=50, range=[[0, 1], [0, 1]], cmap="viridis", cmin=1, norm=LogNorm())
    ax.set_xlim(0, 1)


def _class_histograms(ax, stats: LabelStats, values: np.ndarray, xlabel: str) -> np.ndarray:
    bins = _log_bins(values)
    k = len(stats.class_names)
    if k <= PER_CLASS_LINES:
        for c, name in enumerate(stats.class_names):
            sel = values[stats.labels == c]
            if sel.size:
                ax.hist(sel, bins=bins, histtype="step", linewidth=1.5, color=class_rgb(c), label=name)
        if values.size:
            ax.legend(fontsize=7)
    else:
        ax.hist(values, bins=bins, color="tab:blue", alpha=0.8, label="all classes")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("boxes")
    return bins


def plot_labels(stats: LabelStats, path: str | Path, title: str = "") -> Path:
    """Draw the six panels of ``stats`` into ``path`` (JPEG or PNG by suffix)."""
    from matplotlib.ticker import MaxNLocator

    fig, axes = new_figure(15, 9, nrows=2, ncols=3)
    k = len(stats.class_names)
    counts = stats.per_class()
    ax = axes[0, 0]
    ax.bar(np.arange(k), counts, color=[class_rgb(c) for c in range(k)])
    ax.set_xticks(np.arange(k), stats.class_names if k <= 40 else [""] * k, rotation=90, fontsize=8)
    ax.set_ylabel("instances")
    ax.set_title(f"{int(counts.sum())} boxes, {k} classes")

    ax = axes[0, 1]
    per_image = stats.boxes_per_image()
    top = int(per_image.max()) if per_image.size else 0
    edges = count_bins(top)
    ax.hist(per_image, bins=edges, color="tab:gray")
    width = int(edges[1] - edges[0])
    ax.set_xlabel("boxes per image" + (f" (bars {width} counts wide)" if width > 1 else ""))
    ax.set_ylabel("images")
    for a in (axes[0, 0], ax, axes[1, 1], axes[1, 2]):
        a.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{len(per_image)} images, {int((per_image == 0).sum())} without labels")

    size = stats.image_sizes[stats.image_index] if len(stats.labels) else np.zeros((0, 2))
    safe = np.maximum(size, 1.0)
    cx = (stats.boxes[:, 0] + stats.boxes[:, 2]) / 2 / safe[:, 0]
    cy = (stats.boxes[:, 1] + stats.boxes[:, 3]) / 2 / safe[:, 1]
    ax = axes[0, 2]
    _hist2d(ax, cx, cy)
    ax.set_ylim(1, 0)  # image coordinates: y down
    ax.set_xlabel("centre x / image width")
    ax.set_ylabel("centre y / image height")
    ax.set_title("box centres")

    ax = axes[1, 0]
    _hist2d(ax, stats.widths / safe[:, 0], stats.heights / safe[:, 1])
    ax.set_ylim(0, 1)
    ax.set_xlabel("width / image width")
    ax.set_ylabel("height / image height")
    ax.set_title("box sizes")

    bins = _class_histograms(axes[1, 1], stats, stats.sqrt_area(), "sqrt(area) px")
    sizes = [2, 4, 8, 16, 32, 64, 96, 128, 256, 512, 1024, 2048]
    _log_axis(axes[1, 1], bins, sizes, [str(v) for v in sizes])
    axes[1, 1].set_title("box size (COCO: small < 32 ≤ medium < 96 ≤ large)", fontsize=9)
    for edge in (32, 96):
        axes[1, 1].axvline(edge, color="black", linestyle=":", linewidth=1)
    bins = _class_histograms(axes[1, 2], stats, stats.aspect(), "aspect w / h")
    ratios = [1 / 16, 1 / 8, 1 / 4, 1 / 2, 1, 2, 4, 8, 16]
    _log_axis(axes[1, 2], bins, ratios, ["1/16", "1/8", "1/4", "1/2", "1", "2", "4", "8", "16"])
    axes[1, 2].axvline(1.0, color="black", linestyle=":", linewidth=1)
    axes[1, 2].set_title("box aspect")
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)


__all__ = ["MAX_COUNT_BARS", "count_bins", "plot_labels"]
