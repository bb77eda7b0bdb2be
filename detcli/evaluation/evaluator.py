"""COCO bbox evaluation: collect detections, run COCOeval, label the numbers.

COCOeval (faster-coco-eval, or pycocotools' ``cocodataset/cocoapi:PythonAPI/pycocotools/cocoeval.py``: see
:mod:`detcli.evaluation.coco_backend`) does the maths; this module only feeds it, keeps its prints out of the terminal (they are kept in ``EvalResult.log``), and reads the
per-class AP out of ``eval['precision']`` (shape [T, R, K, A, M]) the way every toolbox does.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from dataclasses import dataclass, field

import numpy as np
import torch.distributed as dist
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from rich.table import Table

from detcli.evaluation.coco_backend import bbox_cocoeval
from detcli.evaluation.coco_results import coco_boxes_scores
from detcli.evaluation.confusion import CONFUSION_CONF, ConfusionMatrix, confusion_from_coco
from detcli.evaluation.curves import DetectionCurves, detection_curves
from detcli.structures import Detections

# Order of ``COCOeval.stats`` for iouType="bbox".
STAT_NAMES: tuple[str, ...] = (
    "AP50-95", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl",
)
STAT_DESCRIPTIONS: dict[str, str] = {
    "AP50-95": "AP  IoU=0.50:0.95 area=all    maxDets=100",
    "AP50": "AP  IoU=0.50      area=all    maxDets=100",
    "AP75": "AP  IoU=0.75      area=all    maxDets=100",
    "APs": "AP  IoU=0.50:0.95 area=small  maxDets=100",
    "APm": "AP  IoU=0.50:0.95 area=medium maxDets=100",
    "APl": "AP  IoU=0.50:0.95 area=large  maxDets=100",
    "AR1": "AR  IoU=0.50:0.95 area=all    maxDets=1",
    "AR10": "AR  IoU=0.50:0.95 area=all    maxDets=10",
    "AR100": "AR  IoU=0.50:0.95 area=all    maxDets=100",
    "ARs": "AR  IoU=0.50:0.95 area=small  maxDets=100",
    "ARm": "AR  IoU=0.50:0.95 area=medium maxDets=100",
    "ARl": "AR  IoU=0.50:0.95 area=large  maxDets=100",
}


@dataclass
class ClassAP:
    """Per-class numbers (area=all, maxDets=100). NaN where the class has no ground truth."""

    name: str
    category_id: int
    instances: int
    ap: float  # AP@[.50:.95]
    ap50: float
    ar100: float
    precision: float = math.nan  # at EvalResult.curves.best_confidence, IoU 0.50 (see detcli.evaluation.curves)
    recall: float = math.nan


@dataclass
class EvalResult:
    """Outcome of one COCO evaluation.

    Attributes:
        stats: the 12 COCO stats by name (``STAT_NAMES``); NaN where pycocotools reports -1
            (no ground truth in that area range / no ground truth at all).
        per_class: one entry per model class, in class-index order.
        raw_stats: ``COCOeval.stats`` exactly as pycocotools returns it (-1 kept).
        num_images: images evaluated.
        num_detections: detections evaluated.
        log: what pycocotools printed (captured, not shown).
        detections: the COCO results that were scored (:meth:`CocoEvaluator.results_json`), kept only when
            asked for (``evaluate(..., keep_detections=True)``); not part of :meth:`to_dict`.
        curves: per-class PR / P / R / F1 curves at IoU 0.50.
        confusion: the confusion matrix at ``CocoEvaluator.confusion_conf``.
        unreadable_images: files of the evaluated images that could not be read (:meth:`CocoEvaluator.skip`):
            scored with no detection, so their ground truth counts as missed; included in ``num_images``.
    """

    stats: dict[str, float]
    per_class: list[ClassAP]
    raw_stats: list[float]
    num_images: int
    num_detections: int
    log: str = field(default="", repr=False)
    detections: list[dict] | None = field(default=None, repr=False)
    curves: DetectionCurves | None = field(default=None, repr=False)
    confusion: ConfusionMatrix | None = field(default=None, repr=False)
    unreadable_images: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-safe dict (NaN → ``None``); the pycocotools log and the detections are left out."""
        return {
            "stats": {k: _json_float(v) for k, v in self.stats.items()},
            "per_class": [
                {
                    "class": c.name,
                    "category_id": c.category_id,
                    "instances": c.instances,
                    "AP50-95": _json_float(c.ap),
                    "AP50": _json_float(c.ap50),
                    "AR100": _json_float(c.ar100),
                    "P": _json_float(c.precision),
                    "R": _json_float(c.recall),
                }
                for c in self.per_class
            ],
            "PR_confidence": self.curves.best_confidence if self.curves is not None else None,
            "raw_stats": [float(s) for s in self.raw_stats],
            "num_images": self.num_images,
            "num_detections": self.num_detections,
            "unreadable_images": list(self.unreadable_images),
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)


def _json_float(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _fmt(x: float, digits: int = 3) -> str:
    return "-" if math.isnan(x) else f"{x:.{digits}f}"


class CocoEvaluator:
    """Accumulates detections of a COCO ground-truth set and evaluates them with pycocotools.

    Args:
        coco_gt: ground truth; image ids passed to :meth:`add` must exist in it.
        cat_ids: COCO category id of each model class index (``cat_ids[label]``).
        class_names: name of each model class index.

    Only the images passed to :meth:`add` or :meth:`skip` are evaluated (all GT images if none was), so a
    subset of a dataset is scored on that subset alone; only ``cat_ids`` categories are scored. An image
    that could not be read (:meth:`skip`) stays in COCOeval's ``imgIds`` with no detection, so its ground
    truth counts as missed: what pycocotools reports for a results file without that image when it scores
    the whole set, and a score that cannot rise because an image broke.
    ``confusion_conf``: the score a detection needs to enter the confusion matrix.
    """

    def __init__(self, coco_gt: COCO, cat_ids: list[int], class_names: list[str],
                 confusion_conf: float = CONFUSION_CONF) -> None:
        if len(cat_ids) != len(class_names):
            raise ValueError(f"{len(cat_ids)} category ids but {len(class_names)} class names")
        unknown = [c for c in cat_ids if c not in coco_gt.cats]
        if unknown:
            raise ValueError(f"category ids {unknown} are not in the ground-truth categories")
        self.coco_gt = coco_gt
        self.cat_ids = [int(c) for c in cat_ids]
        self.class_names = list(class_names)
        self.confusion_conf = float(confusion_conf)
        # image_id -> COCO result dicts of that image; a dict so DDP padding duplicates collapse.
        self._results: dict[int, list[dict]] = {}
        self._skipped: dict[int, str] = {}  # image_id -> file of an image that could not be read

    def reset(self) -> None:
        self._results = {}
        self._skipped = {}

    def skip(self, image_id: int, file_name: str) -> None:
        """Record an image that could not be read: evaluated with no detection (its GT count as missed)."""
        image_id = int(image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"image id {image_id} is not in the ground truth")
        self._results[image_id] = []
        self._skipped[image_id] = str(file_name)

    def add(self, image_id: int, det: Detections) -> None:
        """Record the detections of one image.

        Args:
            image_id: COCO image id.
            det: boxes (K, 4) xyxy in ORIGINAL image pixels, scores (K,), labels (K,) class indices.
        """
        image_id = int(image_id)
        if image_id not in self.coco_gt.imgs:
            raise ValueError(f"image id {image_id} is not in the ground truth")
        labels = det.labels.detach().cpu().numpy().reshape(-1).astype(np.int64)
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.cat_ids)):
            raise ValueError(f"labels must be in [0, {len(self.cat_ids)}), got {labels.min()}..{labels.max()}")
        xywh, scores = coco_boxes_scores(det)
        cats = np.asarray(self.cat_ids, dtype=np.int64)[labels]
        self._results[image_id] = [
            {"image_id": image_id, "category_id": int(c), "bbox": b, "score": s}
            for c, b, s in zip(cats.tolist(), xywh, scores)
        ]

    def gather(self) -> None:
        """Merge the results of every rank (no-op without torch.distributed).

        All ranks call it; afterwards each holds the union (rank 0 evaluates). An image seen by several
        ranks (DistributedSampler pads by repeating images) is kept once.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return
        parts: list[tuple[dict[int, list[dict]], dict[int, str]] | None] = [None] * dist.get_world_size()
        dist.all_gather_object(parts, (self._results, self._skipped))
        self._results = merge_results([p[0] for p in parts if p is not None])
        self._skipped = {k: v for p in parts if p is not None for k, v in p[1].items()}

    def results_json(self) -> list[dict]:
        """COCO results format: image_id, category_id, bbox [x, y, w, h], score, at full float32 precision
        (:func:`detcli.evaluation.coco_results.coco_boxes_scores`)."""
        return [r for image_id in sorted(self._results) for r in self._results[image_id]]

    def evaluate(self) -> EvalResult:
        """Run COCOeval (bbox) on what was added; pycocotools' prints are captured into ``log``."""
        results = self.results_json()
        img_ids = sorted(self._results) or sorted(self.coco_gt.getImgIds())
        _fill_missing_area(self.coco_gt)
        log = io.StringIO()
        with contextlib.redirect_stdout(log):
            coco_eval = bbox_cocoeval(self.coco_gt, copy.deepcopy(results))
            coco_eval.params.imgIds = img_ids
            coco_eval.params.catIds = self.cat_ids
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        raw = [float(s) for s in coco_eval.stats]
        stats = {name: (math.nan if s < 0 else s) for name, s in zip(STAT_NAMES, raw)}
        result = EvalResult(
            stats=stats,
            per_class=self._per_class(coco_eval, img_ids),
            raw_stats=raw,
            num_images=len(img_ids),
            num_detections=len(results),
            log=log.getvalue(),
            unreadable_images=[self._skipped[i] for i in sorted(self._skipped)],
        )
        self._add_analysis(result, coco_eval)
        return result

    def _add_analysis(self, result: EvalResult, coco_eval: COCOeval) -> None:
        """Curves, per-class P/R at the best-F1 confidence, and the confusion matrix of the scored images."""
        results = self._results or {i: [] for i in self.coco_gt.getImgIds()}
        result.curves = detection_curves(coco_eval, self.coco_gt, results, self.cat_ids, self.class_names)
        for c, p, r in zip(result.per_class, *result.curves.at_best()):
            c.precision, c.recall = float(p), float(r)
        result.confusion = confusion_from_coco(self.coco_gt, results, self.cat_ids, self.class_names,
                                               self.confusion_conf)

    def _per_class(self, coco_eval: COCOeval, img_ids: list[int]) -> list[ClassAP]:
        precision = coco_eval.eval["precision"]  # [T, R, K, A, M], -1 where a class has no GT
        recall = coco_eval.eval["recall"]  # [T, K, A, M]
        k_of_cat = {c: k for k, c in enumerate(coco_eval.params.catIds)}  # COCOeval sorts catIds
        area_all = coco_eval.params.areaRngLbl.index("all")
        max_det = len(coco_eval.params.maxDets) - 1  # maxDets=100
        instances = self._instances(img_ids)
        out = []
        for name, cat_id in zip(self.class_names, self.cat_ids):
            k = k_of_cat[cat_id]
            p = precision[:, :, k, area_all, max_det]
            r = recall[:, k, area_all, max_det]
            out.append(
                ClassAP(
                    name=name,
                    category_id=cat_id,
                    instances=instances.get(cat_id, 0),
                    ap=_valid_mean(p),
                    ap50=_valid_mean(p[0]),  # iouThrs[0] == 0.50
                    ar100=_valid_mean(r),
                )
            )
        return out

    def _instances(self, img_ids: list[int]) -> dict[int, int]:
        """Non-crowd GT boxes per category id over the evaluated images."""
        counts: dict[int, int] = {}
        for ann in self.coco_gt.loadAnns(self.coco_gt.getAnnIds(imgIds=img_ids, iscrowd=False)):
            counts[ann["category_id"]] = counts.get(ann["category_id"], 0) + 1
        return counts


def merge_results(parts: list[dict[int, list[dict]] | None]) -> dict[int, list[dict]]:
    """Union of per-rank ``image_id -> results``; the first rank holding an image wins."""
    merged: dict[int, list[dict]] = {}
    for part in parts:
        for image_id, dets in (part or {}).items():
            merged.setdefault(image_id, dets)
    return merged


def _valid_mean(x: np.ndarray) -> float:
    valid = x[x > -1]
    return float(valid.mean()) if valid.size else math.nan


def _fill_missing_area(coco_gt: COCO) -> None:
    """COCOeval needs ``area`` on every GT annotation; fill it with w*h where a converter left it out."""
    for ann in coco_gt.dataset.get("annotations", []):
        if "area" not in ann:
            ann["area"] = float(ann["bbox"][2] * ann["bbox"][3])


def stats_table(result: EvalResult) -> Table:
    """The 12 COCO stats, labelled."""
    title = "COCO bbox"
    if result.unreadable_images:
        n = len(result.unreadable_images)
        title += (f" ({n} of {result.num_images} images unreadable: scored with no detection, their boxes count "
                  f"as missed)")
    table = Table(title=title, title_justify="left")
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")
    table.add_column("definition", style="dim")
    for name in STAT_NAMES:
        table.add_row(name, _fmt(result.stats[name]), STAT_DESCRIPTIONS[name])
    return table


def per_class_table(result: EvalResult, title: str | None = None) -> Table:
    """Per-class AP50-95 / AP50 / AR100, and P / R at the confidence of the highest mean F1, with an ``all``
    row ('-' where a class has no ground truth, or no detection at that confidence for P); the one writer of the
    table (``detcli eval`` and the trainer's final report, which gives its own ``title``)."""
    if title is None:
        title = "per class (area=all, maxDets=100"
        if result.curves is not None:
            title += f"; P, R at IoU 0.50 and conf {result.curves.best_confidence:.3f}, the max mean F1"
        title += ")"
    table = Table(title=title, title_justify="left")
    table.add_column("class", style="bold")
    table.add_column("instances", justify="right")
    for name in ("P", "R", "AP50-95", "AP50", "AR100"):
        table.add_column(name, justify="right")
    for c in result.per_class:
        table.add_row(c.name, str(c.instances), _fmt(c.precision), _fmt(c.recall), _fmt(c.ap), _fmt(c.ap50),
                      _fmt(c.ar100))
    table.add_section()
    mean_p, mean_r = mean_precision_recall(result)
    table.add_row(
        "all",
        str(sum(c.instances for c in result.per_class)),
        _fmt(mean_p),
        _fmt(mean_r),
        _fmt(result.stats["AP50-95"]),
        _fmt(result.stats["AP50"]),
        _fmt(result.stats["AR100"]),
    )
    return table


def mean_precision_recall(result: EvalResult) -> tuple[float, float]:
    """Mean P and mean R over the classes with ground truth, at the chosen confidence (NaN without curves).

    P is averaged over the classes with a detection at that confidence (P of a class without one is undefined,
    its R of 0 already counts in the mean R)."""
    if result.curves is None or not result.curves.with_gt.any():
        return math.nan, math.nan
    p, r = result.curves.at_best()
    keep = result.curves.with_gt
    p = p[keep][np.isfinite(p[keep])]
    return (float(p.mean()) if p.size else math.nan), float(r[keep].mean())


__all__ = [
    "STAT_NAMES",
    "ClassAP",
    "EvalResult",
    "CocoEvaluator",
    "merge_results",
    "stats_table",
    "per_class_table",
    "mean_precision_recall",
]
