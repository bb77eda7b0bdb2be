"""Run a detector over a COCO dataset and score it (also across DDP ranks)."""
from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import DataLoader

from detcli.distributed import broadcast_object, is_main
from detcli.evaluation.confusion import CONFUSION_CONF
from detcli.evaluation.evaluator import CocoEvaluator, EvalResult
from detcli.inference.loop import predict_loader
from detcli.inference.predictor import Predictor
from detcli.postprocess import PostprocessConfig


def predict_dataset(
    predictor: Predictor, loader: DataLoader, device: torch.device, cfg: PostprocessConfig | None,
    evaluator: CocoEvaluator, reporter: Any, description: str = "val",
) -> None:
    """Detections of every image of ``loader`` in original pixels (:func:`~detcli.inference.loop.predict_loader`:
    one forward pass per padded shape, the predictor's eval mode restored after) into ``evaluator``; images the
    dataset could not read go to :meth:`CocoEvaluator.skip`. ``cfg``: None = the predictor's own settings."""
    bar = reporter.progress(loader, total=len(loader), description=description)
    for meta, det in predict_loader(predictor, bar, device, cfg):
        if det is None:
            evaluator.skip(meta.image_id, meta.file_name)
        else:
            evaluator.add(meta.image_id, det)


def evaluate(
    model: Predictor, loader: DataLoader, dataset: Any, device: torch.device, cfg: PostprocessConfig | None,
    reporter: Any, description: str = "val", keep_detections: bool = False, confusion_conf: float = CONFUSION_CONF,
) -> EvalResult:
    """COCO bbox evaluation of ``model`` on ``dataset`` (a CocoDetection: ``coco``, ``cat_ids``, ``class_names``).

    Under DDP every rank predicts its share of ``loader`` (a DistributedSampler), results are gathered,
    rank 0 runs COCOeval and every rank gets the same :class:`EvalResult`. Unreadable images are scored with
    no detection and named in a warning (``EvalResult.unreadable_images``). ``keep_detections`` also puts
    the scored COCO results (the dataset's image and category ids) into ``EvalResult.detections``;
    ``confusion_conf`` is the score a detection needs to enter ``EvalResult.confusion``; ``cfg`` the
    post-processing (None: the model's ``postprocess_cfg``, the preset's ``test`` section).
    """
    evaluator = CocoEvaluator(dataset.coco, dataset.cat_ids, dataset.class_names, confusion_conf)
    predict_dataset(model, loader, device, cfg, evaluator, reporter, description)
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
