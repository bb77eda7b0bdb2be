"""The public Python API of a trained detector: :func:`load` a file, then :meth:`Model.predict`,
:meth:`Model.evaluate` or :meth:`Model.export`, with the validated presets, ``--set`` overrides and clear errors of
the command line (:class:`~detcli.errors.DetcliError`, never ``SystemExit``)::

    from detcli.api.model import load

    model = load("runs/train/train/weights/best.pt")
    for r in model.predict("images/", conf=0.3):
        print(r.path, r.boxes, r.scores, r.names)
    metrics = model.evaluate(data="data.yaml")
    onnx = model.export("onnx")

``detcli eval`` and ``detcli predict`` are this API with printing and files around it (:mod:`detcli.app`).
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from detcli.api.results import Result
from detcli.console import Reporter
from detcli.errors import DetcliError
from detcli.inference.loading import Loaded
from detcli.inference.paths import inference_batch, inference_model, inference_path
from detcli.inference.sources import Source
from detcli.run_spec import RunSpec

if TYPE_CHECKING:
    import torch

    from detcli.data.dataset_config import DatasetConfig
    from detcli.evaluation.evaluator import EvalResult
    from detcli.inference.predictor import Predictor
    from detcli.postprocess import PostprocessConfig


def load(
    weights: str | Path | None = None, *, preset: str | None = None, overrides: Sequence[str] = (),
    imgsz: int | None = None, device: str | None = None, exact: bool = False, verbose: bool = False,
) -> Model:
    """A model detcli can run, ready to predict.

    Args:
        weights: a detcli checkpoint (``best.pt``/``last.pt``), an official checkpoint of a family (with
            ``preset``), or an ONNX file from ``detcli export``; None: the latest run's ``best.pt`` under
            ``runs/train``.
        preset: the preset (name or YAML file) of an official checkpoint; a detcli or ONNX file carries its own.
        overrides: ``--set``-style ``"field=value"`` changes of the checkpoint's preset, e.g. ``"test.iou_thr=0.5"``.
        imgsz: input size, long side (default: the size the checkpoint was trained at, else the preset's).
        device: "cpu", "0", "cuda:1" (default: GPU 0 when there is one).
        exact: run the network as loaded, one image per forward pass (the official numbers) instead of the
            optimised model (:mod:`detcli.inference.paths`).
        verbose: print what the command line prints (the file used, progress bars, warnings).

    Raises:
        DetcliError: the file is missing or not one detcli reads, the preset or an override is invalid, … (the
            message names the file or field, as the command line's does).
    """
    from detcli.app.preflight import check_weights
    from detcli.inference.device import select_device
    from detcli.inference.loading import load_runnable

    weights = None if weights is None else Path(weights)
    check_weights(weights)
    reporter = Reporter(silent=not verbose)
    torch_device = select_device(device)
    loaded = load_runnable(weights, preset, list(overrides), imgsz, torch_device, reporter, exact)
    return Model(loaded, torch_device, exact=exact, reporter=reporter)


class Model:
    """A loaded model (a :class:`~detcli.inference.predictor.Predictor`) and its run record.

    Args:
        loaded: the model and its :class:`~detcli.run_spec.RunSpec` (:mod:`detcli.inference.loading`).
        device: where it runs.
        exact: run it as loaded (see :func:`load`).
        reporter: where messages go (default: nowhere; the command line gives its console).
    """

    def __init__(self, loaded: Loaded, device: torch.device, *, exact: bool = False,
                 reporter: Reporter | None = None) -> None:
        self.loaded, self.device, self.exact = loaded, device, exact
        self.reporter = reporter if reporter is not None else Reporter(silent=True)

    # ------------------------------------------------------------------ what it is
    @property
    def spec(self) -> RunSpec:
        """The run record: preset, class names, category ids, input size, dataset, file."""
        return self.loaded.spec

    @property
    def class_names(self) -> list[str]:
        return self.spec.class_names

    @property
    def predictor(self) -> Predictor:
        """The model as loaded (a PyTorch Detector, or an OnnxDetector for an exported file)."""
        return self.loaded.model

    @cached_property
    def runner(self) -> Predictor:
        """What predict and evaluate run: the optimised model, or the model as loaded with ``exact``
        (:func:`~detcli.inference.paths.inference_model`); made at first use."""
        return inference_model(self.predictor, self.reporter, self.exact)

    @property
    def inference_path(self) -> str:
        """"exact", "optimised" or "exported" (:data:`~detcli.inference.paths.INFERENCE_PATHS`)."""
        return inference_path(self.runner)

    def postprocess(self, conf: float | None = None, iou: float | None = None,
                    max_det: int | None = None) -> PostprocessConfig:
        """The model's post-processing (its preset's ``test`` section) with the given settings changed."""
        return self.predictor.postprocess_cfg.replace(score_thr=conf, iou_thr=iou, max_det=max_det)

    # ------------------------------------------------------------------ predict
    def predict(self, source: Source, *, conf: float | None = None, iou: float | None = None,
                max_det: int | None = None, batch: int = 8, stream: bool = False) -> list[Result] | Iterator[Result]:
        """Detections of every picture in ``source``, in order, boxes in original-image pixels.

        Args:
            source: an image, folder, glob pattern or video (str or Path), an (H, W, 3) BGR uint8 numpy array, a
                PIL image, or a list of those.
            conf: score threshold; iou: NMS IoU; max_det: detections per image (default: the preset's ``test``).
            batch: images per forward pass (1 with ``exact``).
            stream: an iterator that decodes and predicts as it is consumed (long videos, large folders) instead
                of a list.

        Raises:
            DetcliError: a source that names no file (at once, also with ``stream``), an array of another shape.
        """
        from detcli.inference.loop import predict_batches
        from detcli.inference.sources import frames_of

        frames = frames_of(source, self.reporter.warn if not self.reporter.silent else None)
        pairs = predict_batches(self.runner, frames, self.spec.transform(), inference_batch(batch, self.exact),
                                self.device, self.postprocess(conf, iou, max_det), self.spec.preset.input.size_divisor)
        results = (Result(det, frame, self.class_names, self.spec.cat_ids) for frame, det in pairs)
        return results if stream else list(results)

    # ------------------------------------------------------------------ evaluate
    def evaluate(self, data: str | Path | DatasetConfig | None = None, *, split: str = "val", batch: int = 16,
                 workers: int = 2, conf: float | None = None, iou: float | None = None, max_det: int | None = None,
                 confusion_conf: float | None = None, keep_detections: bool = False) -> EvalResult:
        """COCO bbox evaluation on a dataset split: the 12 stats, per-class P/R/AP, curves and confusion matrix.

        Args:
            data: a dataset YAML, a COCO/YOLO/VOC folder, "demo", or a DatasetConfig; None: the dataset the
                checkpoint was trained on.
            split: "val" or "train".
            conf, iou, max_det: post-processing (default: the preset's ``test`` section).
            confusion_conf: the score a detection needs to enter the confusion matrix (default 0.25).
            keep_detections: also return the scored COCO results (``EvalResult.detections``).
        """
        dataset = self.eval_dataset(self.eval_data(data, split), split)
        return self.evaluate_dataset(dataset, batch=batch, workers=workers, cfg=self.postprocess(conf, iou, max_det),
                                     confusion_conf=confusion_conf, keep_detections=keep_detections)

    def eval_data(self, data: str | Path | DatasetConfig | None = None, split: str = "val") -> DatasetConfig:
        """The dataset ``data`` names (:meth:`evaluate`), resolved and checked; its ``split`` must exist."""
        from detcli.data.dataset_config import DatasetConfig, resolve_dataset
        from detcli.data.recorded import recorded_dataset

        if split not in ("train", "val"):
            raise DetcliError(f"split {split!r}: choose train or val")
        if isinstance(data, DatasetConfig):
            cfg = data
        elif data is not None:
            cfg = resolve_dataset(data)
        elif self.spec.dataset is not None:
            cfg = recorded_dataset(self.spec.dataset.get("config"), f"checkpoint {self.spec.weights}")
            self.reporter.info(f"evaluating on the dataset the checkpoint was trained on: {cfg.val.source}")
        else:
            raise DetcliError(f"{self.spec.weights} records no dataset; give --data")
        chosen = getattr(cfg, split)
        if chosen is None:
            raise DetcliError(f"the dataset has no {split} split; evaluate on val")
        if chosen.note:
            self.reporter.info(chosen.note)
        return cfg

    def eval_dataset(self, data: DatasetConfig, split: str = "val") -> Any:
        """The split of ``data`` as the model sees it (its test transform at the spec's size), checked against the
        model's classes; files it cannot find are warned about (fewer images are scored)."""
        from detcli.data.build import build_dataset

        dataset = build_dataset(self.spec.preset, getattr(data, split), train=False, imgsz=self.spec.imgsz)
        for line in dataset.summary().problems():  # e.g. missing image files: fewer images are scored
            self.reporter.warn(f"{split}: {line}")
        if dataset.class_names != self.class_names:
            raise DetcliError(f"{getattr(data, split).source}: classes {dataset.class_names} differ from the "
                              f"checkpoint's {self.class_names}")
        return dataset

    def evaluate_dataset(self, dataset: Any, *, batch: int = 16, workers: int = 2, cfg: PostprocessConfig | None = None,
                         confusion_conf: float | None = None, keep_detections: bool = False) -> EvalResult:
        """:meth:`evaluate` on a dataset from :meth:`eval_dataset`; ``cfg`` default: :meth:`postprocess`."""
        from detcli.data.collate import collate
        from detcli.data.loader import build_dataloader, cap_workers
        from detcli.evaluation.confusion import CONFUSION_CONF
        from detcli.evaluation.evaluate import evaluate

        divisor = self.spec.preset.input.size_divisor
        loader = build_dataloader(
            dataset, batch_size=inference_batch(batch, self.exact), workers=cap_workers(workers), shuffle=False,
            drop_last=False, seed=0, distributed=False, collate_fn=lambda s: collate(s, size_divisor=divisor),
        )
        return evaluate(self.runner, loader, dataset, self.device, cfg or self.postprocess(), self.reporter,
                        keep_detections=keep_detections,
                        confusion_conf=CONFUSION_CONF if confusion_conf is None else confusion_conf)

    # ------------------------------------------------------------------ export
    def export(self, format: str = "onnx", *, output: str | Path | None = None, imgsz: int | None = None,
               opset: int = 17, dynamic: bool = False, half: bool = False, simplify: bool = False,
               nms: bool = True) -> Path:
        """Export to ONNX or TorchScript with the metadata inside and in ``<file>.json`` beside it, checked against
        this model (``detcli export``); returns the written file.

        Args:
            output: a file, or a folder (existing, or ending in "/"); default: beside the weights file.
            imgsz: input size, long side (default: the model's).
            nms: post-processing inside the graph (end-to-end), or the raw head outputs.

        Raises:
            DetcliError: an exported model (export its checkpoint), an unknown format, a failed parity check, …
        """
        from detcli.app.export import ExportRequest, check_request, export_model, export_target

        if self.spec.origin == "exported":
            raise DetcliError(f"{self.spec.weights} is an exported model already; export the checkpoint it came from")
        req = ExportRequest(weights=self.spec.weights, format=str(format).lower(), imgsz=imgsz, opset=opset,
                            dynamic=dynamic, half=half, simplify=simplify, nms=nms,
                            output=None if output is None else str(output))
        check_request(req)
        out = export_target(req, self.device)
        model = copy.deepcopy(self.predictor) if half else self.predictor  # export halves what it is given
        spec = self.spec if imgsz is None else self.spec.replace(imgsz=imgsz)
        return export_model(Loaded(model, spec), req, out, self.reporter)

    def __repr__(self) -> str:
        return (f"Model({self.spec.preset.name}, {self.spec.num_classes} classes, input "
                f"{'×'.join(map(str, self.spec.input_size))}, {self.spec.origin} {self.spec.weights})")


__all__ = ["Model", "load"]
