"""Per-class precision / recall / F1 curves of a COCO evaluation (IoU 0.50, area all, 100 detections per image).

Two views of the same matches, as Ultralytics draws them (``PR_curve.png``, ``F1_curve.png``, ``P_curve.png``,
``R_curve.png``):

* precision against recall: COCO's interpolated curve, read from ``COCOeval.eval['precision']``
  (shape [T, R, K, A, M]) at IoU 0.50, so its area is exactly the AP50 of the tables;
* precision, recall and F1 against a confidence threshold ``c``: the detections scoring ≥ ``c``, matched as
  COCOeval matched them (``COCOeval.evalImgs``: ``dtScores``, ``dtMatches``, ``dtIgnore``, ``gtIgnore`` per
  image and category). ``P(c) = TP/detections`` (NaN without detections), ``R(c) = TP/GT`` (NaN without
  GT), ``F1(c) = 2·TP / (detections + GT)``. The curves are exact step functions sampled at
  c = 0, 0.001, …, 1 (Ultralytics interpolates linearly between detections instead).

The single precision and recall a table shows per class are read at the one confidence that maximises the
mean F1 over the classes with ground truth (Ultralytics reports P and R this way; it smooths the mean F1
first, we take the unsmoothed maximum, the lowest such confidence on a tie).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CONFIDENCE_GRID = np.arange(1001) / 1000  # exact decimals: a score of 0.3 counts at c = 0.3


@dataclass
class ClassMatches:
    """The scored detections of one class, over every evaluated image.

    Attributes:
        scores: (D,) float64 detection scores (detections COCOeval ignores — on crowd boxes — left out).
        true_positive: (D,) bool, matched to a ground-truth box at IoU ≥ 0.50.
        num_gt: ground-truth boxes COCOeval counts (crowd and ignored boxes left out).
    """

    scores: np.ndarray
    true_positive: np.ndarray
    num_gt: int


@dataclass
class DetectionCurves:
    """Curves of K classes.

    Attributes:
        class_names: (K,) names in class-index order.
        num_gt: (K,) ground-truth boxes per class.
        recall_points: (R,) COCO's recall thresholds (0, 0.01, …, 1).
        pr: (K, R) COCO-interpolated precision at each recall point, IoU 0.50; NaN rows for classes without GT.
        ap50: (K,) mean of each ``pr`` row (the AP50 of the tables).
        confidence: (C,) confidence thresholds 0…1 (``CONFIDENCE_GRID``).
        precision, recall, f1: (K, C) at each confidence (see the module docstring for NaN).
        best_index: index into ``confidence`` of the highest mean F1 over classes with GT.
    """

    class_names: list[str]
    num_gt: np.ndarray
    recall_points: np.ndarray
    pr: np.ndarray
    ap50: np.ndarray
    confidence: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    best_index: int

    @property
    def best_confidence(self) -> float:
        return float(self.confidence[self.best_index])

    @property
    def with_gt(self) -> np.ndarray:
        """(K,) bool: classes with ground truth (the ones means are taken over)."""
        return self.num_gt > 0

    def mean_f1(self) -> np.ndarray:
        """(C,) mean F1 over classes with GT (zeros when no class has GT)."""
        return self.f1[self.with_gt].mean(axis=0) if self.with_gt.any() else np.zeros_like(self.confidence)

    def at_best(self) -> tuple[np.ndarray, np.ndarray]:
        """(K,) precision and (K,) recall at :attr:`best_confidence`."""
        return self.precision[:, self.best_index], self.recall[:, self.best_index]


def confidence_curves(matches: ClassMatches, grid: np.ndarray = CONFIDENCE_GRID) -> tuple[np.ndarray, ...]:
    """Precision, recall, F1 (each (C,)) of one class at every confidence of ``grid`` (C,).

    Counts the detections scoring ≥ c with a binary search on the scores sorted high to low.
    """
    order = np.argsort(-matches.scores, kind="stable")
    scores = matches.scores[order]
    tp_cum = np.concatenate([[0], np.cumsum(matches.true_positive[order])])
    n_det = np.searchsorted(-scores, -grid, side="right")  # detections with score >= c
    tp = tp_cum[n_det].astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_det > 0, tp / n_det, np.nan)
        recall = tp / matches.num_gt if matches.num_gt else np.full_like(tp, np.nan)
        denom = n_det + matches.num_gt
        f1 = np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)
    return precision, recall, f1


def matches_from_cocoeval(coco_eval, cat_ids: list[int]) -> list[ClassMatches] | None:
    """Each class' matches at IoU 0.50 (area all, the largest maxDets) from an evaluated pycocotools COCOeval.

    ``cat_ids``: category id of each class index. None when the object keeps no per-image results
    (``evalImgs``), as evaluators implemented outside Python do.
    """
    eval_imgs = getattr(coco_eval, "evalImgs", None)
    if not eval_imgs:
        return None
    p = coco_eval.params
    n_area, n_img = len(p.areaRng), len(p.imgIds)
    a_all = p.areaRngLbl.index("all")
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    k_of_cat = {c: k for k, c in enumerate(p.catIds)}  # COCOeval sorts catIds
    out = []
    for cat_id in cat_ids:
        start = (k_of_cat[cat_id] * n_area + a_all) * n_img
        entries = [e for e in eval_imgs[start:start + n_img] if e is not None]
        if entries:
            scores = np.concatenate([np.asarray(e["dtScores"], dtype=np.float64) for e in entries])
            matched = np.concatenate([np.asarray(e["dtMatches"])[t50].reshape(-1) for e in entries]) > 0
            ignored = np.concatenate([np.asarray(e["dtIgnore"])[t50].reshape(-1) for e in entries]).astype(bool)
            num_gt = int(sum(int((np.asarray(e["gtIgnore"]) == 0).sum()) for e in entries))
        else:
            scores, matched, ignored, num_gt = np.zeros(0), np.zeros(0, bool), np.zeros(0, bool), 0
        out.append(ClassMatches(scores[~ignored], matched[~ignored], num_gt))
    return out


def detection_curves(coco_eval, cat_ids: list[int], class_names: list[str]) -> DetectionCurves | None:
    """:class:`DetectionCurves` of an evaluated and accumulated COCOeval (None without ``evalImgs``)."""
    matches = matches_from_cocoeval(coco_eval, cat_ids)
    if matches is None:
        return None
    p = coco_eval.params
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    k_of_cat = {c: k for k, c in enumerate(p.catIds)}
    precision_all = coco_eval.eval["precision"]  # [T, R, K, A, M], -1 where a class has no GT
    a_all = p.areaRngLbl.index("all")
    pr = np.stack([precision_all[t50, :, k_of_cat[c], a_all, -1] for c in cat_ids]).astype(np.float64)
    pr[pr < 0] = np.nan
    with np.errstate(invalid="ignore"):
        ap50 = np.array([row.mean() if np.isfinite(row).all() else np.nan for row in pr])
    per_class = [confidence_curves(m) for m in matches]
    precision, recall, f1 = (np.stack([c[i] for c in per_class]) for i in range(3))
    curves = DetectionCurves(
        class_names=list(class_names), num_gt=np.array([m.num_gt for m in matches]),
        recall_points=np.asarray(p.recThrs, dtype=np.float64), pr=pr, ap50=ap50,
        confidence=CONFIDENCE_GRID.copy(), precision=precision, recall=recall, f1=f1, best_index=0,
    )
    curves.best_index = int(np.argmax(curves.mean_f1()))
    return curves


__all__ = ["CONFIDENCE_GRID", "ClassMatches", "DetectionCurves", "confidence_curves", "detection_curves",
           "matches_from_cocoeval"]
