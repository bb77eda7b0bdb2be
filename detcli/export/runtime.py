"""Running an exported ONNX model in ``detcli predict`` / ``detcli eval`` through onnxruntime.

The preset, classes and dataset travel in the model's metadata, so the same pre-processing (the preset's
transform and batch padding) and, for raw exports, the same decoding and post-processing as the PyTorch
model (:meth:`Detector.detections`) are used; end-to-end exports carry their post-processing inside.
The file is checked (:func:`detcli.export.validate.check_onnx`) before onnxruntime opens it, and what it
returns on every run: outputs of the promised shapes, labels among the classes, finite boxes and scores.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.export.validate import CheckedOnnx, check_onnx, check_outputs
from detcli.structures import HeadOutput
from detcli.postprocess import clip_boxes, image_limits
from detcli.structures import Detections, ImageMeta


def is_exported(path: Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


class OnnxDetector(nn.Module):
    """``predict(images, metas, score_thr, iou_thr, max_det)`` of an exported detcli model.

    End-to-end exports have their score threshold, NMS IoU and ``max_det`` built in: a higher ``score_thr``
    or a lower ``max_det`` is applied on top, the others cannot be (see :attr:`fixed`). Raw exports decode and
    post-process here with any settings. ``warn`` hears of detections dropped for a non-finite box or score.
    """

    def __init__(self, checked: CheckedOnnx, device: torch.device, warn: Callable[[str], None] = _warn) -> None:
        super().__init__()
        from detcli.export.formats import require
        from detcli.models import build_model

        ort = require("onnxruntime", "running an ONNX model")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(str(checked.path), providers=providers)
        except Exception as e:
            text = str(e).strip().splitlines()
            raise DetcliError(f"{checked.path}: onnxruntime cannot load it ({text[0][:300] if text else e!r})") \
                from None
        self.checked, self.meta, self.warn = checked, checked.meta, warn
        self.size = self.meta.image_size
        self.input_dtype = torch.float16 if self.meta.input_dtype == "float16" else torch.float32
        self.end_to_end = self.meta.mode == "end2end"
        self.fixed = self.meta.postprocess.model_dump() if self.end_to_end else {}
        # the family's own rules (decode + postprocess of raw exports, the way back to original pixels); no weights
        self.family = build_model(self.meta.preset_config, self.meta.num_classes, pretrained=False).eval()
        self.decoder = None if self.end_to_end else self.family

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta], score_thr: float, iou_thr: float,
                max_det: int) -> list[Detections]:
        b, _, h, w = images.shape
        if h > self.size[0] or w > self.size[1]:
            raise DetcliError(f"the ONNX model takes {self.size[1]}×{self.size[0]} inputs; got {w}×{h} (drop --imgsz)")
        padded = images.new_zeros((b, 3, *self.size))
        padded[:, :, :h, :w] = images
        chunks = [padded] if self.meta.dynamic_batch else [padded[i:i + 1] for i in range(b)]
        runs = []
        for c in chunks:
            arrays = self.session.run(None, {self.meta.input_name: c.to(self.input_dtype).cpu().numpy()})
            check_outputs(self.checked, arrays, c.shape[0])
            runs.append(arrays)
        outs = [torch.cat([torch.from_numpy(r[k]) for r in runs]) for k in range(len(runs[0]))]
        shape = (b, 3, *self.size)
        if self.end_to_end:
            dets = self._end_to_end(outs, shape, metas, score_thr, max_det)
        else:
            cfg = self.decoder.postprocess_cfg.replace(score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
            dets = self.decoder.detections(HeadOutput(*[o.float() for o in outs]), shape, metas, cfg)
        return self._finite(dets)

    def to_original(self, det: Detections, meta: ImageMeta) -> Detections:
        """The exported family's :meth:`~detcli.models.base.Detector.to_original`."""
        return self.family.to_original(det, meta)

    def _end_to_end(self, outs: list[Tensor], shape: tuple[int, ...], metas: list[ImageMeta], score_thr: float,
                    max_det: int) -> list[Detections]:
        num, boxes, scores, labels = outs
        limit, classes = boxes.shape[1], self.meta.num_classes
        boxes = clip_boxes(boxes, image_limits(metas, shape, boxes))
        dets = []
        for i in range(shape[0]):
            n = int(num[i])
            if not 0 <= n <= limit:
                raise DetcliError(f"{self.checked.path}: output 'num_dets' is {n} for image {i}; it must be 0 to "
                                  f"{limit}")
            bad = labels[i, :n][(labels[i, :n] < 0) | (labels[i, :n] >= classes)]
            if len(bad):
                raise DetcliError(f"{self.checked.path}: output 'labels' holds class {int(bad[0])}, but its metadata "
                                  f"lists {classes} classes (labels 0 to {classes - 1})")
            keep = scores[i, :n] > score_thr
            dets.append(Detections(boxes[i, :n][keep][:max_det], scores[i, :n][keep][:max_det],
                                   labels[i, :n][keep][:max_det]))
        return dets

    def _finite(self, dets: list[Detections]) -> list[Detections]:
        """Drop detections whose box or score is NaN or infinite (they have no place in a results file)."""
        out, dropped = [], 0
        for d in dets:
            ok = torch.isfinite(d.boxes).all(dim=1) & torch.isfinite(d.scores)
            dropped += int((~ok).sum())
            out.append(d if bool(ok.all()) else Detections(d.boxes[ok], d.scores[ok], d.labels[ok]))
        if dropped:
            self.warn(f"{self.checked.path}: dropped {dropped} detection(s) whose box or score is NaN or infinite "
                      "(the model's output)")
        return out


def load_exported(path: Path, imgsz: int | None, device: torch.device, reporter: Any = None):
    """A :class:`~detcli.app.common.LoadedModel` whose model runs the ONNX file; its preset's input size is the
    exported one, so that predict / eval transform images to fit it."""
    from detcli.app.common import LoadedModel
    from detcli.data.build import input_size

    path = Path(path)
    if not path.is_file():
        raise DetcliError(f"--weights {path}: no such file")
    checked = check_onnx(path)
    meta = checked.meta
    if imgsz is not None and imgsz != meta.imgsz:
        raise DetcliError(f"{path} was exported for --imgsz {meta.imgsz}; drop --imgsz or export again")
    preset = meta.preset_config.model_copy(deep=True)
    preset.input.size = list(input_size(preset, meta.imgsz))  # transforms then fit the exported input
    model = OnnxDetector(checked, device, reporter.warn if reporter is not None else _warn)
    if reporter is not None and model.end_to_end:
        fixed = model.fixed
        reporter.info(f"end-to-end ONNX model: score > {fixed.get('score_thr')}, NMS IoU {fixed.get('iou_thr')}, "
                      f"{fixed.get('max_det')} detections per image are built in")
    cat_ids = meta.cat_ids if meta.cat_ids is not None else list(range(1, meta.num_classes + 1))
    return LoadedModel(model, preset, list(meta.class_names), list(cat_ids), meta.dataset, path, False)
