"""One colour per class in every picture, and a results.png that reads right after one or two epochs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb

import detcli.plots.labels as labels_plot
import detcli.plots.validation as validation
from detcli.data.label_stats import LabelStats
from detcli.engine.run_dir import ResultsCSV
from detcli.inspect.draw import gt_color
from detcli.plots.batches import TEXT_PX, _tile
from detcli.plots.detections import draw_detections
from detcli.plots.palette import class_color, class_rgb
from detcli.plots.results import results_figure
from detcli.plots.text import text_size
from detcli.structures import Detections
from tests.support.plot_cases import _evaluate


@pytest.fixture
def figures(monkeypatch) -> list:
    """The matplotlib figures the plots draw, kept (``save_figure`` clears them)."""
    kept = []
    for module in (validation, labels_plot):
        monkeypatch.setattr(module, "save_figure", lambda fig, path: kept.append(fig) or path)
    return kept


def _close(a, b) -> bool:
    return np.allclose(to_rgb(a), to_rgb(b), atol=1e-6)


def test_class_rgb_is_class_color_for_matplotlib():
    for k in range(30):
        b, g, r = class_color(k)
        assert class_rgb(k) == (r / 255, g / 255, b / 255)
        assert gt_color(k) == class_color(k)


def test_every_curve_has_its_class_colour(tmp_path, figures):
    result = _evaluate()  # classes "a" (0) and "b" (1)
    validation.save_validation_plots(result.curves, None, tmp_path)
    assert len(figures) == 4  # PR, F1, P, R
    for fig in figures:
        lines = {line.get_label(): line.get_color() for line in fig.axes[0].get_lines()}
        by_class = {name: color for name, color in lines.items() if name.split()[0] in ("a", "b")}
        assert len(by_class) == 2, lines
        for name, color in by_class.items():
            assert _close(color, class_rgb(["a", "b"].index(name.split()[0]))), (name, color)
        mean = next(c for name, c in lines.items() if name.startswith("all classes"))
        assert all(not _close(mean, class_rgb(k)) for k in range(validation.LEGEND_CLASSES))


def test_labels_jpg_bars_and_histograms_have_the_class_colours(tmp_path, figures):
    boxes = np.array([[0, 0, 10, 10], [5, 5, 30, 20], [0, 0, 40, 40]], np.float32)
    stats = LabelStats(class_names=["a", "b", "c"], boxes=boxes, labels=np.array([0, 1, 2]),
                       image_index=np.array([0, 0, 1]), image_sizes=np.array([[100, 100], [100, 100]], np.float32),
                       file_names=["1.jpg", "2.jpg"], img_dir=tmp_path)
    labels_plot.plot_labels(stats, tmp_path / "labels.jpg")
    bars = figures[0].axes[0].patches
    assert len(bars) == 3 and all(_close(p.get_facecolor()[:3], class_rgb(k)) for k, p in enumerate(bars))
    steps = {p.get_label(): p.get_edgecolor()[:3] for p in figures[0].axes[4].patches}  # sqrt(area) per class
    assert set(steps) >= {"a", "b", "c"}
    assert all(_close(steps[name], class_rgb(k)) for k, name in enumerate("abc"))


def test_boxes_have_the_class_colour_in_predictions_and_training_batches():
    img = np.full((200, 200, 3), 128, np.uint8)
    for k in (0, 3, 7):
        det = Detections(torch.tensor([[40.0, 60.0, 160.0, 180.0]]), torch.tensor([0.9]), torch.tensor([k]))
        assert tuple(int(v) for v in draw_detections(img, det, [f"c{i}" for i in range(8)])[120, 40]) == class_color(k)
        tile = _tile(np.full((320, 320, 3), 128, np.uint8), np.array([[40.0, 60.0, 160.0, 180.0]], np.float32),
                     np.array([k]), [f"c{i}" for i in range(8)], "")  # a tile's own size: not resized
        above = 60 - 1 - text_size("c0", TEXT_PX)[1] // 2  # the name's background, left of the name, above the box
        assert tuple(int(v) for v in tile[above, 40]) == class_color(k)


# ------------------------------------------------------------------------------------ results.png, early on
def _rows(tmp_path, epochs: int, validated: set[int]):
    csv = ResultsCSV(tmp_path / "results.csv")
    for epoch in range(1, epochs + 1):
        ap = 0.1 * epoch if epoch in validated else None
        csv.append({"epoch": epoch, "time": epoch * 2.0, "train/loss_qfl": 1.0 / epoch, "lr/pg0": 0.001,
                    "metrics/AP50-95": ap, "metrics/AP50": ap, "metrics/APs": ap, "metrics/APm": ap,
                    "metrics/APl": ap})
    return csv.read()


def _visible_ticks(ax) -> list[float]:
    lo, hi = ax.get_xlim()
    return [t for t in ax.get_xticks() if lo <= t <= hi]


@pytest.mark.parametrize("epochs", [1, 2])
def test_results_png_after_one_or_two_epochs_has_whole_epoch_ticks(tmp_path, epochs):
    fig = results_figure(*_rows(tmp_path, epochs, validated=set()))
    fig.canvas.draw()
    panels = [ax for ax in fig.axes if ax.get_visible()]
    for ax in panels:
        ticks = _visible_ticks(ax)
        assert ticks and all(float(t).is_integer() for t in ticks), (ax.get_title(), ticks)
        assert set(range(1, epochs + 1)) <= set(ticks)
    metric_panels = [ax for ax in panels if ax.get_title().startswith("AP")]
    assert len(metric_panels) == 3  # AP50-95, AP50, APs APm APl
    for ax in metric_panels:
        assert [t.get_text() for t in ax.texts] == ["no validation yet"], ax.get_title()
    assert not any(ax.texts for ax in panels if not ax.get_title().startswith("AP"))


def test_results_png_draws_the_metrics_once_validated(tmp_path):
    fig = results_figure(*_rows(tmp_path, 3, validated={2}))
    for ax in fig.axes:
        if ax.get_visible() and ax.get_title().startswith("AP"):
            assert not ax.texts and any(len(line.get_xdata()) == 1 for line in ax.get_lines())
