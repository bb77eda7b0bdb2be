"""Running an exported ONNX model in ``detcli predict`` / ``detcli eval`` through onnxruntime (loaded by
:func:`detcli.inference.loading.load_exported`).

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

import torch
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.export.validate import CheckedOnnx, check_outputs
from detcli.structures import HeadOutput
from detcli.postprocess import PostprocessConfig, clip_boxes, image_limits
from detcli.structures import Detections, ImageMeta


def is_exported(path: Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


def _warn(message: str) -> None:
    warnings.warn(message, stacklevel=3)


class OnnxDetector(nn.Module):
    """An exported detcli model as a :class:`~detcli.inference.predictor.Predictor` (run by onnxruntime).

    Raw exports decode and post-process here, exactly as the PyTorch model (:meth:`Detector.detections`), with
    any :class:`PostprocessConfig`. End-to-end exports have their score threshold, NMS IoU and ``max_det``
    built in (:attr:`fixed`, reported when the file is loaded): a higher ``score_thr`` or a lower ``max_det``
    is applied on top, a lower ``score_thr``, a higher ``max_det`` or another NMS IoU cannot be.
    ``warn`` hears of detections dropped for a non-finite box or score.

    Attributes:
        postprocess_cfg: what :meth:`predict` uses when given no settings: the exported preset's ``test``
            section (end-to-end: the settings built into the graph).
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
        built_in = {k: self.fixed[k] for k in ("score_thr", "iou_thr", "max_det") if k in self.fixed}
        self.postprocess_cfg: PostprocessConfig = self.family.postprocess_cfg.replace(**built_in)

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta], cfg: PostprocessConfig | None = None) -> list[Detections]:
        """(B, 3, h, w) normalised images, h and w at most the exported size (padded up to it here) → B detections
        in input pixels, boxes clipped to each image's ``img_shape``; ``cfg`` overrides :attr:`postprocess_cfg`
        (end-to-end exports: as far as the class docstring says)."""
        cfg = cfg or self.postprocess_cfg
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
            dets = self._end_to_end(outs, shape, metas, cfg.score_thr, cfg.max_det)
        else:
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
