"""The plots a training run writes into its folder, each behind a guard: a plot that fails prints one warning
(the first failure only) and the run goes on. Called on rank 0 only.

* ``labels.jpg`` at the start (the training split's labels);
* ``train_batch0.jpg`` … ``train_batch2.jpg`` from the first batches of the first epoch;
* ``results.png`` after every epoch;
* the validation plots (:mod:`detcli.plots.validation`) at the end, from the last validation.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable

TRAIN_BATCHES = 3


class TrainingPlots:
    """Plots of one run.

    Args:
        run_dir: the run folder.
        input_cfg: the preset's ``input`` section (mean, std, channel_order) to de-normalise batches.
        class_names: names in label order.
        reporter: where the one warning goes.

    ``seconds`` adds up the time spent drawing.
    """

    def __init__(self, run_dir: Path, input_cfg: Any, class_names: list[str], reporter: Any) -> None:
        self.run_dir = Path(run_dir)
        self.input_cfg = input_cfg
        self.class_names = list(class_names)
        self.reporter = reporter
        self.seconds = 0.0
        self.failed = 0

    def _guard(self, what: str, draw: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        try:
            return draw()
        except Exception as e:  # noqa: BLE001 - a picture must never stop a training run
            if not self.failed:
                self.reporter.warn(f"could not draw {what} ({type(e).__name__}: {e}); training goes on "
                                   "(further plot failures of this run are not reported)")
            self.failed += 1
            return None
        finally:
            self.seconds += time.perf_counter() - start

    def labels(self, dataset: Any) -> Path | None:
        """``labels.jpg`` of a training dataset (a CocoDetection)."""
        from detcli.data.label_stats import label_stats
        from detcli.plots.labels import plot_labels

        if not (hasattr(dataset, "annotation") and hasattr(dataset, "image_info")):
            return None  # not a CocoDetection: no labels to read without loading every sample
        title = f"train labels: {getattr(dataset, 'ann_file', '')}"
        return self._guard("labels.jpg", lambda: plot_labels(label_stats(dataset), self.run_dir / "labels.jpg", title))

    def train_batch(self, batch: Any, index: int) -> Path | None:
        """``train_batch{index}.jpg`` of a collated training batch (before it moves to the device)."""
        from detcli.plots.batches import batch_mosaic, save_jpeg

        inp = self.input_cfg
        path = self.run_dir / f"train_batch{index}.jpg"
        return self._guard(path.name, lambda: save_jpeg(
            batch_mosaic(batch, inp.mean, inp.std, inp.channel_order, self.class_names), path))

    def results(self, results_csv: Any) -> Path | None:
        """``results.png`` from a :class:`~detcli.engine.run_dir.ResultsCSV`."""
        from detcli.plots.results import plot_results

        return self._guard("results.png", lambda: plot_results(*results_csv.read(), self.run_dir / "results.png"))

    def validation(self, result: Any) -> list[Path]:
        """PR/F1/P/R curves and the confusion matrix of an :class:`~detcli.evaluation.evaluator.EvalResult`."""
        from detcli.plots.validation import save_validation_plots

        written = self._guard("the validation plots",
                              lambda: save_validation_plots(result.curves, result.confusion, self.run_dir))
        return written or []


__all__ = ["TrainingPlots", "TRAIN_BATCHES"]
