"""The curves and the confusion matrix of an evaluation: ``PR_curve.png``, ``F1_curve.png``, ``P_curve.png``,
``R_curve.png``, ``confusion_matrix.png`` and the raw counts in ``confusion_matrix.json``.

Per-class curves are thin, each in its class colour (:func:`detcli.plots.palette.class_rgb`, as its boxes and
``labels.jpg``) and named in the legend up to ``LEGEND_CLASSES`` classes (grey and unnamed beyond); the mean over
the classes with ground truth is thick and black, a colour no class has. The confidence curves mark the
confidence at which the per-class table reads P and R (the highest mean F1).
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from detcli.evaluation.confusion import ConfusionMatrix
from detcli.evaluation.curves import DetectionCurves
from detcli.fileio import atomic_write_json
from detcli.plots.figure import new_figure, save_figure
from detcli.plots.palette import class_rgb

LEGEND_CLASSES = 20
ANNOTATE_CLASSES = 30  # numbers in the confusion cells up to this many classes
MEAN_COLOR = "black"


def _per_class_style(c: int, n: int) -> dict:
    """The line of class ``c`` of ``n``: its class colour, or thin grey when there are too many to tell apart."""
    if n <= LEGEND_CLASSES:
        return {"linewidth": 1.0, "color": class_rgb(c)}
    return {"linewidth": 0.8, "color": "grey", "alpha": 0.5}


def _finish(ax, xlabel: str, ylabel: str, title: str, n_classes: int) -> None:
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7 if n_classes <= LEGEND_CLASSES else 9, loc="upper left", bbox_to_anchor=(1.01, 1))


def plot_pr(curves: DetectionCurves, path: str | Path) -> Path:
    """Precision against recall at IoU 0.50 per class (COCO-interpolated) and their mean."""
    fig, ax = new_figure(9, 6)
    x, k = curves.recall_points, len(curves.class_names)
    for c, (name, row, ap) in enumerate(zip(curves.class_names, curves.pr, curves.ap50)):
        if np.isfinite(ap):
            ax.plot(x, row, label=f"{name} {ap:.3f}" if k <= LEGEND_CLASSES else None, **_per_class_style(c, k))
    if curves.with_gt.any():
        ax.plot(x, curves.pr[curves.with_gt].mean(axis=0), color=MEAN_COLOR, linewidth=3,
                label=f"all classes {np.nanmean(curves.ap50):.3f} AP50")
    _finish(ax, "recall", "precision", "Precision-recall (IoU 0.50)", k)
    return save_figure(fig, path)


def mean_curve(curves: DetectionCurves, which: str) -> np.ndarray:
    """(C,) mean of ``which`` (``f1``, ``precision``, ``recall``) over the classes with GT; precision is
    averaged over the classes that have detections at each confidence (NaN where none has)."""
    values = getattr(curves, which)[curves.with_gt]
    if not len(values):
        return np.full_like(curves.confidence, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: no class has a detection there
        return np.nanmean(values, axis=0)


def plot_confidence_curve(curves: DetectionCurves, which: str, path: str | Path) -> Path:
    """``which`` (``f1``, ``precision`` or ``recall``) against the confidence threshold, per class and mean."""
    ylabel = {"f1": "F1", "precision": "precision", "recall": "recall"}[which]
    fig, ax = new_figure(9, 6)
    x, k = curves.confidence, len(curves.class_names)
    for c, (name, row, has_gt) in enumerate(zip(curves.class_names, getattr(curves, which), curves.with_gt)):
        if has_gt:
            ax.plot(x, row, label=name if k <= LEGEND_CLASSES else None, **_per_class_style(c, k))
    mean = mean_curve(curves, which)
    best = curves.best_index
    ax.plot(x, mean, color=MEAN_COLOR, linewidth=3,
            label=f"all classes {mean[best]:.3f} at {curves.best_confidence:.3f}")
    ax.axvline(curves.best_confidence, color="black", linestyle=":", linewidth=1)
    _finish(ax, "confidence", ylabel, f"{ylabel}-confidence (IoU 0.50; dotted: the max mean F1)", k)
    return save_figure(fig, path)


def plot_confusion(matrix: ConfusionMatrix, path: str | Path) -> Path:
    """The matrix normalised per true class (column), rows predicted, background last."""
    norm = matrix.normalized()
    labels = [*matrix.class_names, "background"]
    n = len(labels)
    side = min(max(4.0, 0.45 * n + 2.5), 24.0)
    fig, ax = new_figure(side + 1.5, side)
    shown = np.where(matrix.counts.sum(axis=0, keepdims=True) > 0, norm, np.nan)  # empty columns blank
    image = ax.imshow(shown, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ticks = np.arange(n)
    ax.set_xticks(ticks, labels if n <= 60 else [""] * n, rotation=90, fontsize=8)
    ax.set_yticks(ticks, labels if n <= 60 else [""] * n, fontsize=8)
    if n <= ANNOTATE_CLASSES:
        for (i, j), v in np.ndenumerate(shown):
            if np.isfinite(v) and matrix.counts[i, j]:
                ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                        color="white" if v > 0.5 else "black")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title(f"Confusion matrix, normalised per true class (conf ≥ {matrix.conf:g}, IoU ≥ {matrix.iou_thr:g})",
                 fontsize=10)
    return save_figure(fig, path)


def save_validation_plots(curves: DetectionCurves | None, matrix: ConfusionMatrix | None,
                          folder: str | Path) -> list[Path]:
    """Every picture of one evaluation into ``folder``; returns the files written (curves need ``curves``)."""
    folder = Path(folder)
    written: list[Path] = []
    if curves is not None:
        written.append(plot_pr(curves, folder / "PR_curve.png"))
        for which, name in (("f1", "F1_curve.png"), ("precision", "P_curve.png"), ("recall", "R_curve.png")):
            written.append(plot_confidence_curve(curves, which, folder / name))
    if matrix is not None:
        written.append(plot_confusion(matrix, folder / "confusion_matrix.png"))
        written.append(atomic_write_json(folder / "confusion_matrix.json", matrix.to_dict()))
    return written


__all__ = ["plot_pr", "plot_confidence_curve", "plot_confusion", "save_validation_plots", "mean_curve"]
