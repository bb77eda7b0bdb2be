"""A detection confusion matrix with a background row and column (Ultralytics' ``confusion_matrix.png``).

Per image, the detections scoring ≥ ``conf`` are matched to the ground-truth boxes one to one, whatever
their classes, greedily by IoU (highest pair first) among the pairs with IoU ≥ ``iou_thr``. Then:

* a matched pair adds 1 at [predicted class, true class] (off the diagonal: the right place, the wrong class);
* a GT box left unmatched adds 1 at [background, true class] (missed);
* a detection left unmatched adds 1 at [predicted class, background] (a false alarm on background).

Rows are predicted classes, columns true classes, the background last in both; [background, background]
stays 0. Crowd boxes are not ground truth here (a detection on a crowd counts as a false alarm).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torchvision.ops import box_iou

from detcli.evaluation.curves import xyxy_of

CONFUSION_CONF = 0.25  # Ultralytics' ConfusionMatrix default
CONFUSION_IOU = 0.45


@dataclass
class ConfusionMatrix:
    """Counts (K+1, K+1): rows predicted, columns true; index K is the background.

    Attributes:
        counts: (K+1, K+1) int64.
        class_names: (K,) names; ``conf`` / ``iou_thr``: the score and IoU thresholds used.
    """

    counts: np.ndarray
    class_names: list[str]
    conf: float
    iou_thr: float

    def normalized(self) -> np.ndarray:
        """(K+1, K+1) float: each column (true class) divided by its sum; empty columns stay 0."""
        totals = self.counts.sum(axis=0, keepdims=True)
        return self.counts / np.maximum(totals, 1)

    def to_dict(self) -> dict:
        return {
            "rows": "predicted class", "columns": "true class",
            "labels": [*self.class_names, "background"],
            "conf": self.conf, "iou_thr": self.iou_thr,
            "counts": self.counts.astype(int).tolist(),
        }


def greedy_pairs(iou: torch.Tensor, iou_thr: float) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one pairs of an IoU matrix (G, D), highest IoU first, each ≥ ``iou_thr``.

    Returns (P,) GT indices and (P,) detection indices.
    """
    g, d = torch.nonzero(iou >= iou_thr, as_tuple=True)
    if g.numel() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    order = torch.argsort(iou[g, d], descending=True, stable=True)
    gt_used, det_used, pairs = set(), set(), []
    for gi, di in zip(g[order].tolist(), d[order].tolist()):
        if gi not in gt_used and di not in det_used:
            gt_used.add(gi)
            det_used.add(di)
            pairs.append((gi, di))
    arr = np.array(pairs, dtype=np.int64)
    return arr[:, 0], arr[:, 1]


def add_image(counts: np.ndarray, gt_boxes: np.ndarray, gt_labels: np.ndarray, det_boxes: np.ndarray,
              det_labels: np.ndarray, det_scores: np.ndarray, conf: float, iou_thr: float) -> None:
    """Add one image to ``counts`` (K+1, K+1) in place.

    Args:
        gt_boxes: (G, 4) xyxy; gt_labels: (G,) class indices.
        det_boxes: (D, 4) xyxy; det_labels: (D,) class indices; det_scores: (D,).
    """
    size = counts.shape[0]
    background = size - 1
    keep = det_scores >= conf
    det_boxes, det_labels = det_boxes[keep], det_labels[keep]
    if len(gt_boxes) and len(det_boxes):
        gi, di = greedy_pairs(box_iou(torch.as_tensor(gt_boxes), torch.as_tensor(det_boxes)), iou_thr)
    else:
        gi, di = np.zeros(0, np.int64), np.zeros(0, np.int64)
    missed = np.ones(len(gt_boxes), dtype=bool)
    missed[gi] = False
    false = np.ones(len(det_boxes), dtype=bool)
    false[di] = False
    rows = np.concatenate([det_labels[di], np.full(int(missed.sum()), background), det_labels[false]])
    cols = np.concatenate([gt_labels[gi], gt_labels[missed], np.full(int(false.sum()), background)])
    counts += np.bincount(rows * size + cols, minlength=size * size).reshape(size, size)


def confusion_from_coco(coco_gt, results: dict[int, list[dict]], cat_ids: list[int], class_names: list[str],
                        conf: float = CONFUSION_CONF, iou_thr: float = CONFUSION_IOU) -> ConfusionMatrix:
    """The matrix of COCO results (``image_id -> [{category_id, bbox xywh, score}]``) against ``coco_gt``'s
    non-crowd boxes of the ``cat_ids`` classes, over the images of ``results``."""
    label_of = {int(c): k for k, c in enumerate(cat_ids)}
    counts = np.zeros((len(cat_ids) + 1, len(cat_ids) + 1), dtype=np.int64)
    for image_id, dets in results.items():
        anns = [a for a in coco_gt.imgToAnns.get(image_id, [])
                if not a.get("iscrowd", 0) and a["category_id"] in label_of]
        dets = [r for r in dets if r["category_id"] in label_of]
        gt_labels = np.array([label_of[a["category_id"]] for a in anns], np.int64)
        det_labels = np.array([label_of[r["category_id"]] for r in dets], np.int64)
        add_image(counts, xyxy_of([a["bbox"] for a in anns]), gt_labels, xyxy_of([r["bbox"] for r in dets]),
                  det_labels, np.array([r["score"] for r in dets], np.float64), conf, iou_thr)
    return ConfusionMatrix(counts, list(class_names), float(conf), float(iou_thr))


__all__ = ["CONFUSION_CONF", "CONFUSION_IOU", "ConfusionMatrix", "add_image", "confusion_from_coco", "greedy_pairs"]
