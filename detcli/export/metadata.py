"""What an exported model says about itself: classes, preprocessing, output layout, provenance.

:func:`export_metadata` writes it; :class:`ExportedMetadata` is what a reader may rely on (``detcli predict`` /
``eval --weights model.onnx`` validate a file's metadata with it before onnxruntime loads the file).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, PositiveFloat, PositiveInt, model_validator

import detcli
from detcli.config.schema import (
    NanoDetAugmentConfig, Preset, ResizeFlipAugmentConfig, RTMDetAugmentConfig,
)
from detcli.models.base import Detector
from detcli.structures import HeadOutput, Priors
from detcli.postprocess import PostprocessConfig

END2END_OUTPUTS = ["num_dets", "boxes", "scores", "labels"]
PREDICT_SCORE_THR = 0.35  # ``detcli predict``'s default --conf, recorded for users of the file


def inference_resize(preset: Preset, size: tuple[int, int]) -> dict[str, Any]:
    """The family's test-time resize (``detcli.data.build``'s val transform) at ``size`` (w, h), as data.

    - ``warp_stretch`` (NanoDet-Plus): ``cv2.warpPerspective(img, diag(w / W, h / H, 1), (w, h))``, bilinear,
      border 0: a stretch, sampled as the training warp samples (not ``cv2.resize``'s pixel-centre grid);
    - ``keep_ratio`` (RetinaNet, DeFCN, RTMDet): ``cv2.resize`` (bilinear) to ``int(W·f + 0.5) × int(H·f + 0.5)``
      with ``f = min(max(w, h) / max(W, H), min(w, h) / min(W, H))``; RTMDet then pads to w × h with
      ``pad_value`` (a pixel value, before normalisation). ``backend`` "pil" (DeFCN, as cvpods): PIL's bilinear
      resize instead of ``cv2.resize``; ``size_rule`` "shortest_edge" (DeFCN): cvpods' ``ResizeShortestEdge`` size
      (:func:`detcli.data.transforms.resize.shortest_edge_size`) instead of mmcv's ``int(W·f + 0.5)``.

    Every family then normalises and pads bottom/right with 0 to ``input_shape``.
    """
    backend, rule = "cv2", "mmcv"
    match preset.augment:
        case NanoDetAugmentConfig():
            method, pad = "warp_stretch", None
        case ResizeFlipAugmentConfig() as aug:
            method, pad = "keep_ratio", None
            backend, rule = aug.resize_backend, aug.size_rule
        case RTMDetAugmentConfig() as aug:
            method, pad = "keep_ratio", float(aug.pad.pad_val)
        case other:  # pragma: no cover - the union is exhaustive
            raise AssertionError(other)
    return {"method": method, "size": [int(size[0]), int(size[1])], "pad_value": pad, "interpolation": "bilinear",
            "backend": backend, "size_rule": rule}


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
    from detcli.data.build import input_size

    h, w = image_size
    inp = preset.input
    resize = inference_resize(preset, input_size(preset, imgsz))
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
        "resize": resize,
        "preprocess": (
            f"{'keep-ratio resize into' if resize['method'] == 'keep_ratio' else 'stretch (warpPerspective) to'} "
            f"{resize['size'][0]}×{resize['size'][1]} (W×H, see resize)"
            + (f", pad to it with {resize['pad_value']:g}" if resize["pad_value"] is not None else "")
            + f", {inp.channel_order.upper()} 0..255, (pixel - mean) / std, NCHW, pad bottom/right to {w}×{h} with 0"
        ),
        "predict_score_thr": PREDICT_SCORE_THR,
        "to_original": model.to_original_rule,  # Detector.to_original_rule: how boxes go back to original pixels
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


# --------------------------------------------------------------------------- reading

class _Section(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class PostprocessMeta(_Section):
    """The post-processing an end-to-end file has built in."""

    score_thr: float = Field(ge=0, le=1)
    iou_thr: float = Field(ge=0, le=1)
    max_det: PositiveInt


class ResizeMeta(_Section):
    """:func:`inference_resize` as recorded."""

    method: Literal["warp_stretch", "keep_ratio"]
    size: tuple[PositiveInt, PositiveInt]
    pad_value: FiniteFloat | None = None
    backend: Literal["cv2", "pil"] = "cv2"  # files written before the field resized with cv2
    size_rule: Literal["mmcv", "shortest_edge"] = "mmcv"


class ExportedMetadata(_Section):
    """The metadata of a detcli export as read back (``metadata_props`` values, JSON-decoded where they parse).

    Fields not listed are kept in the file but not relied on. ``cat_ids`` may be missing (then 1…C, as for a
    checkpoint without them); a present one must give one id per class.
    """

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False, coerce_numbers_to_str=True)

    format: Literal["onnx", "torchscript"]
    class_names: list[str] = Field(min_length=1)
    num_classes: PositiveInt
    cat_ids: list[int] | None = None
    imgsz: PositiveInt | None = None
    input_name: str = Field(min_length=1)
    input_shape: tuple[Literal["batch"] | PositiveInt, Literal[3], PositiveInt, PositiveInt]
    input_dtype: Literal["float32", "float16"]
    channel_order: Literal["bgr", "rgb"]
    mean: tuple[FiniteFloat, FiniteFloat, FiniteFloat]
    std: tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    mode: Literal["end2end", "raw"]
    preset_config: Preset
    dataset: dict[str, Any] | None = None
    postprocess: PostprocessMeta | None = None
    resize: ResizeMeta | None = None

    @property
    def dynamic_batch(self) -> bool:
        return self.input_shape[0] == "batch"

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the input."""
        return int(self.input_shape[2]), int(self.input_shape[3])

    @model_validator(mode="after")
    def _consistent(self) -> "ExportedMetadata":
        c = len(self.class_names)
        if self.num_classes != c:
            raise ValueError(f"num_classes {self.num_classes} but class_names lists {c} names")
        if self.cat_ids is not None and len(self.cat_ids) != c:
            raise ValueError(f"cat_ids gives {len(self.cat_ids)} ids for {c} classes")
        if self.mode == "end2end" and self.postprocess is None:
            raise ValueError("mode end2end needs the postprocess section (score_thr, iou_thr, max_det)")
        return self
