"""Per-class precision / recall / F1 curves of a COCO evaluation (IoU 0.50, area all, 100 detections per image).

Two views of the same matches, as Ultralytics draws them (``PR_curve.png``, ``F1_curve.png``, ``P_curve.png``,
``R_curve.png``):

* precision against recall: COCO's interpolated curve, read from ``COCOeval.eval['precision']``
  (shape [T, R, K, A, M]) at IoU 0.50, so its area is exactly the AP50 of the tables;
* precision, recall and F1 against a confidence threshold ``c``: the detections scoring ≥ ``c``, matched as
  COCOeval matches them at IoU 0.50 (:func:`match_class`; computed here because faster-coco-eval keeps no
  per-image results, and checked against pycocotools' ``evalImgs`` in the tests). ``P(c) = TP/detections`` (NaN without detections), ``R(c) = TP/GT`` (NaN without
  GT), ``F1(c) = 2·TP / (detections + GT)``. The curves are exact step functions sampled at
  c = 0, 0.001, …, 1 (Ultralytics interpolates linearly between detections instead).

The single precision and recall a table shows per class are read at the one confidence that maximises the
mean F1 over the classes with ground truth (Ultralytics reports P and R this way; it smooths the mean F1
first, we take the unsmoothed maximum, the lowest such confidence on a tie).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_convert, box_iou

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


def match_class(iou: np.ndarray, gt_ignore: np.ndarray, gt_crowd: np.ndarray,
                iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's matching of one image and class at one IoU threshold (``COCOeval.evaluateImg``).

    Detections, taken by decreasing score, each take the still unmatched ground-truth box of highest IoU ≥
    ``iou_thr`` (the last one on a tie, as pycocotools), a non-ignored box before an ignored one; a crowd box
    can take any number of detections.

    Args:
        iou: (D, G) IoU of the detections, sorted by decreasing score, with the GT boxes (IoA for crowd boxes).
        gt_ignore: (G,) bool, boxes that do not count (crowd, ``ignore``); gt_crowd: (G,) bool.

    Returns:
        (D,) bool true positives, (D,) bool ignored detections (matched to an ignored box).
    """
    d_count, g_count = iou.shape
    tp, ignored = np.zeros(d_count, bool), np.zeros(d_count, bool)
    taken = np.zeros(g_count, bool)
    thr = min(iou_thr, 1 - 1e-10)
    for d in range(d_count):
        ok = (~taken | gt_crowd) & (iou[d] >= thr)
        for group in (ok & ~gt_ignore, ok & gt_ignore):
            if group.any():
                best_iou = iou[d][group].max()
                g = int(np.flatnonzero(group & (iou[d] == best_iou))[-1])
                ignored[d], tp[d] = gt_ignore[g], not gt_ignore[g]
                taken[g] |= not gt_crowd[g]
                break
    return tp, ignored


def coco_iou(det: np.ndarray, gt: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """(D, G) IoU of xyxy boxes (D, 4) and (G, 4); for crowd GT columns the intersection over the detection's
    area, as COCO scores crowd regions."""
    iou = box_iou(torch.as_tensor(det, dtype=torch.float64), torch.as_tensor(gt, dtype=torch.float64)).numpy()
    if crowd.any():
        lt = np.maximum(det[:, None, :2], gt[None, crowd, :2])
        rb = np.minimum(det[:, None, 2:], gt[None, crowd, 2:])
        inter = np.clip(rb - lt, 0, None).prod(axis=2)
        area = ((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1]))[:, None]
        iou[:, crowd] = np.where(area > 0, inter / np.maximum(area, 1e-12), 0.0)
    return iou


def coco_matches(coco_gt, results: dict[int, list[dict]], cat_ids: list[int], iou_thr: float = 0.5,
                 max_dets: int = 100) -> list[ClassMatches]:
    """Each class' matches, COCOeval's at ``iou_thr`` (area all, ``max_dets`` per image and class), computed
    here so that any COCOeval implementation (also one that keeps no per-image results) gets the same curves.

    Args:
        coco_gt: pycocotools ``COCO`` ground truth; its boxes in the ``results`` images count.
        results: ``image_id -> [{category_id, bbox [x, y, w, h], score}]`` (the images evaluated).
        cat_ids: category id of each class index.
    """
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    scores: list[list[np.ndarray]] = [[] for _ in cat_ids]
    hits: list[list[np.ndarray]] = [[] for _ in cat_ids]
    num_gt = np.zeros(len(cat_ids), dtype=np.int64)
    for image_id, dets in results.items():
        anns = [a for a in coco_gt.imgToAnns.get(image_id, []) if a["category_id"] in label_of]
        g_label = np.array([label_of[a["category_id"]] for a in anns], dtype=np.int64)
        g_crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
        g_ignore = g_crowd | np.array([bool(a.get("ignore", 0)) for a in anns], dtype=bool)
        np.add.at(num_gt, g_label[~g_ignore], 1)
        dets = [r for r in dets if r["category_id"] in label_of]
        if not dets:
            continue
        d_label = np.array([label_of[r["category_id"]] for r in dets], dtype=np.int64)
        d_score = np.array([r["score"] for r in dets], dtype=np.float64)
        d_box, g_box = xyxy_of([r["bbox"] for r in dets]), xyxy_of([a["bbox"] for a in anns])
        iou = coco_iou(d_box, g_box, g_crowd) if len(anns) else np.zeros((len(dets), 0))
        for k in np.unique(d_label):
            sel = np.flatnonzero(d_label == k)
            order = sel[np.argsort(-d_score[sel], kind="mergesort")][:max_dets]  # pycocotools' sort
            cols = g_label == k
            tp, ignored = match_class(iou[np.ix_(order, np.flatnonzero(cols))], g_ignore[cols], g_crowd[cols],
                                      iou_thr)
            scores[k].append(d_score[order][~ignored])
            hits[k].append(tp[~ignored])
    return [ClassMatches(np.concatenate(s) if s else np.zeros(0), np.concatenate(h) if h else np.zeros(0, bool),
                         int(n)) for s, h, n in zip(scores, hits, num_gt)]


def xyxy_of(xywh: list) -> np.ndarray:
    """(N, 4) xyxy float64 from COCO's [x, y, w, h] lists."""
    boxes = torch.as_tensor(np.asarray(xywh, dtype=np.float64).reshape(-1, 4))
    return box_convert(boxes, "xywh", "xyxy").numpy()


def detection_curves(coco_eval, coco_gt, results: dict[int, list[dict]], cat_ids: list[int],
                     class_names: list[str]) -> DetectionCurves:
    """:class:`DetectionCurves` of an evaluated and accumulated COCOeval (pycocotools or faster-coco-eval: only
    ``params`` and ``eval['precision']`` are read) and the results and ground truth it scored."""
    p = coco_eval.params
    t50 = int(np.argmin(np.abs(np.asarray(p.iouThrs) - 0.5)))
    k_of_cat = {c: k for k, c in enumerate(p.catIds)}  # COCOeval sorts catIds
    precision_all = coco_eval.eval["precision"]  # [T, R, K, A, M], -1 where a class has no GT
    a_all = list(p.areaRngLbl).index("all")
    pr = np.stack([precision_all[t50, :, k_of_cat[c], a_all, -1] for c in cat_ids]).astype(np.float64)
    pr[pr < 0] = np.nan
    ap50 = np.array([row.mean() if np.isfinite(row).all() else np.nan for row in pr])
    matches = coco_matches(coco_gt, results, cat_ids, float(p.iouThrs[t50]), int(p.maxDets[-1]))
    per_class = [confidence_curves(m) for m in matches]
    precision, recall, f1 = (np.stack([c[i] for c in per_class]) for i in range(3))
    curves = DetectionCurves(
        class_names=list(class_names), num_gt=np.array([m.num_gt for m in matches]),
        recall_points=np.asarray(p.recThrs, dtype=np.float64), pr=pr, ap50=ap50,
        confidence=CONFIDENCE_GRID.copy(), precision=precision, recall=recall, f1=f1, best_index=0,
    )
    curves.best_index = int(np.argmax(curves.mean_f1()))
    return curves


__all__ = ["CONFIDENCE_GRID", "ClassMatches", "DetectionCurves", "coco_iou", "coco_matches", "confidence_curves",
           "detection_curves", "match_class", "xyxy_of"]
