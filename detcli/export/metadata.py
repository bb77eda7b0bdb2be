"""What an exported model says about itself: classes, preprocessing, output layout, provenance."""
from __future__ import annotations

from typing import Any

import detcli
from detcli.config.schema import Preset
from detcli.models.base import Detector, HeadOutput, Priors
from detcli.postprocess import PostprocessConfig

END2END_OUTPUTS = ["num_dets", "boxes", "scores", "labels"]


def output_names(end_to_end: bool, head: HeadOutput) -> list[str]:
    """Names of the graph outputs: the fixed-size detections, or the head tensors the family has."""
    if end_to_end:
        return list(END2END_OUTPUTS)
    return [name for name, t in zip(HeadOutput._fields, head) if t is not None]


def output_layout(end_to_end: bool, max_det: int, priors: Priors) -> dict[str, str]:
    """One line per output: shape, dtype and meaning."""
    if end_to_end:
        d = max_det
        return {
            "num_dets": "(B,) int64: detections of each image; rows >= num_dets are padding",
            "boxes": f"(B, {d}, 4) float32: x1, y1, x2, y2 in input pixels, clipped to the input; padding 0",
            "scores": f"(B, {d}) float32: class probability, descending; padding 0",
            "labels": f"(B, {d}) int64: index into class_names; padding -1",
        }
    n = priors.num
    return {
        "cls_logits": f"(B, {n}, C) float32: class logits, score = sigmoid(logit), one row per prior",
        "bbox_reg": f"(B, {n}, K) float32: box regression in the family's coding (see box_coding)",
        "score_factor": f"(B, {n}, 1) float32, when present: score = sigmoid(cls_logit) · sigmoid(score_factor)",
    }


def export_metadata(
    preset: Preset,
    model: Detector,
    class_names: list[str],
    image_size: tuple[int, int],
    fmt: str,
    end_to_end: bool,
    cfg: PostprocessConfig,
    pre_nms_topk: int,
    priors: Priors,
    opset: int | None,
    dynamic: bool,
    half: bool,
    weights: str,
    names: list[str],
    cat_ids: list[int],
    dataset: dict[str, Any] | None,
    imgsz: int | None,
) -> dict[str, Any]:
    """The metadata dictionary (JSON-serialisable) written into the model and beside it."""
    h, w = image_size
    inp = preset.input
    meta: dict[str, Any] = {
        "detcli_version": detcli.__version__,
        "format": fmt,
        "preset": preset.name,
        "family": preset.model.type,
        "weights": weights,
        "class_names": list(class_names),
        "num_classes": len(class_names),
        "cat_ids": [int(c) for c in cat_ids],
        "imgsz": imgsz,
        "input_name": "images",
        "input_shape": ["batch" if dynamic else 1, 3, h, w],
        "input_dtype": "float16" if half else "float32",
        "channel_order": inp.channel_order,
        "mean": list(inp.mean),
        "std": list(inp.std),
        "preprocess": (
            f"{'keep-ratio resize into' if inp.keep_ratio else 'stretch resize to'} {w}×{h} (W×H), "
            f"{inp.channel_order.upper()} 0..255, (pixel - mean) / std, NCHW"
            + (", pad bottom/right with 0" if inp.keep_ratio else "")
        ),
        "strides": list(model.strides),
        "mode": "end2end" if end_to_end else "raw",
        "outputs": {k: v for k, v in output_layout(end_to_end, cfg.max_det, priors).items() if k in names},
        "opset": opset,
        "dynamic_batch": dynamic,
        "preset_config": preset.model_dump(mode="json"),
    }
    if dataset is not None:
        meta["dataset"] = dataset
    if end_to_end:
        meta["postprocess"] = {
            "score_thr": cfg.score_thr, "iou_thr": cfg.iou_thr, "max_det": cfg.max_det, "nms": cfg.nms,
            "nms_pre_per_level": cfg.nms_pre, "pre_nms_topk": None if cfg.nms_pre is not None else pre_nms_topk,
            "min_bbox_size": cfg.min_bbox_size,
        }
    else:
        meta["priors"] = {
            "count": priors.num,
            "order": "level (fine → coarse), then y, x" + (", then anchor" if priors.per_cell > 1 else ""),
            "level_sizes": [list(s) for s in priors.level_sizes],
            "per_cell": priors.per_cell,
            "points": "x = (col + offset)·stride, y = (row + offset)·stride; the anchors' centres for anchor boxes",
            "point_offset": float(priors.points[0, 0] / priors.points[0, 2]),
        }
        if priors.boxes is not None:
            meta["priors"]["anchors_per_cell_xyxy_at_origin"] = _cell_anchors(priors)
        meta["box_coding"] = model.box_coding
    return meta


def _cell_anchors(priors: Priors) -> list[list[list[float]]]:
    """Per level, the A anchor boxes of the cell at the origin (shift by (x·s, y·s) for other cells)."""
    out, start = [], 0
    for count in priors.level_counts:
        out.append(priors.boxes[start:start + priors.per_cell].tolist())
        start += count
    return out
