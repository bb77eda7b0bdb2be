"""Run a detector over a COCO dataset and score it (also across DDP ranks)."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from detcli.config.schema import TestConfig
from detcli.data.collate import split_by_shape
from detcli.distributed import broadcast_object, is_main
from detcli.evaluation.confusion import CONFUSION_CONF
from detcli.evaluation.evaluator import CocoEvaluator, EvalResult
from detcli.models.base import Detector
from detcli.structures import Detections


@torch.inference_mode()
def predict_dataset(
    model: Detector, loader: DataLoader, device: torch.device, test_cfg: TestConfig, evaluator: CocoEvaluator,
    reporter: Any, description: str = "val",
) -> None:
    """``model.predict`` on every batch (eval mode), boxes mapped back to original pixels, into ``evaluator``.

    A batch runs as one forward pass per padded image shape (:func:`~detcli.data.collate.split_by_shape`):
    each image's detections are those it gets alone, as in the official tests at batch 1.

    Images the dataset could not read (``Batch.skipped``) go to :meth:`CocoEvaluator.skip`. The model's
    train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    try:
        bar = reporter.progress(loader, total=len(loader), description=description)
        for batch in bar:
            for meta in batch.skipped:
                evaluator.skip(meta.image_id, meta.file_name)
            for _, group in split_by_shape(batch):  # one forward pass per padded shape: batch-1 inputs
                group = group.to(device)
                dets = model.predict(group.images, group.metas, test_cfg.score_thr, test_cfg.iou_thr,
                                     test_cfg.max_det)
                for det, meta in zip(dets, group.metas):
                    det = Detections(det.boxes.float(), det.scores, det.labels)
                    evaluator.add(meta.image_id, model.to_original(det, meta))
    finally:
        model.train(was_training)


def evaluate(
    model: Detector, loader: DataLoader, dataset: Any, device: torch.device, test_cfg: TestConfig, reporter: Any,
    description: str = "val", keep_detections: bool = False, confusion_conf: float = CONFUSION_CONF,
) -> EvalResult:
    """COCO bbox evaluation of ``model`` on ``dataset`` (a CocoDetection: ``coco``, ``cat_ids``, ``class_names``).

    Under DDP every rank predicts its share of ``loader`` (a DistributedSampler), results are gathered,
    rank 0 runs COCOeval and every rank gets the same :class:`EvalResult`. Unreadable images are scored with
    no detection and named in a warning (``EvalResult.unreadable_images``). ``keep_detections`` also puts
    the scored COCO results (the dataset's image and category ids) into ``EvalResult.detections``;
    ``confusion_conf`` is the score a detection needs to enter ``EvalResult.confusion``.
    """
    evaluator = CocoEvaluator(dataset.coco, dataset.cat_ids, dataset.class_names, confusion_conf)
    predict_dataset(model, loader, device, test_cfg, evaluator, reporter, description)
    evaluator.gather()
    result = evaluator.evaluate() if is_main() else None
    if result is not None and keep_detections:
        result.detections = evaluator.results_json()
    result = broadcast_object(result)
    if result.unreadable_images:
        shown = ", ".join(result.unreadable_images[:5]) + (" …" if len(result.unreadable_images) > 5 else "")
        reporter.warn(f"{description}: {len(result.unreadable_images)} of {result.num_images} image(s) could not be "
                      f"read (corrupt, truncated or not a regular file), scored with no detection so their boxes "
                      f"count as missed: {shown}")
    return result


__all__ = ["evaluate", "predict_dataset"]
