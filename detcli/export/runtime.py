"""Running an exported ONNX model in ``detcli predict`` / ``detcli eval`` through onnxruntime.

The preset, classes and dataset travel in the model's metadata, so the same pre-processing (the preset's
transform and batch padding) and, for raw exports, the same decoding and post-processing as the PyTorch
model (:meth:`Detector.detections`) are used; end-to-end exports carry their post-processing inside.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from detcli.errors import DetcliError
from detcli.models.base import HeadOutput
from detcli.postprocess import clip_boxes, image_limits
from detcli.structures import Detections, ImageMeta


def is_exported(path: Path | None) -> bool:
    return path is not None and Path(path).suffix.lower() == ".onnx"


class OnnxDetector(nn.Module):
    """``predict(images, metas, score_thr, iou_thr, max_det)`` of an exported detcli model.

    End-to-end exports have their score threshold, NMS IoU and ``max_det`` built in: a higher ``score_thr``
    or a lower ``max_det`` is applied on top, the others cannot be (see :attr:`fixed`). Raw exports decode and
    post-process here with any settings.
    """

    def __init__(self, path: Path, metadata: dict[str, Any], device: torch.device) -> None:
        super().__init__()
        from detcli.config.schema import Preset
        from detcli.export.formats import require
        from detcli.models import build_model

        ort = require("onnxruntime", "running an ONNX model")
        providers = ["CPUExecutionProvider"]
        if device.type == "cuda" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.session = ort.InferenceSession(str(path), providers=providers)
        self.meta = metadata
        self.size = tuple(metadata["input_shape"][2:])
        self.static_batch = metadata["input_shape"][0] != "batch"
        self.end_to_end = metadata["mode"] == "end2end"
        self.fixed = metadata.get("postprocess", {})
        self.decoder = None
        if not self.end_to_end:  # the family's own decode + postprocess, weights not needed
            preset = Preset.model_validate(metadata["preset_config"])
            self.decoder = build_model(preset, len(metadata["class_names"]), pretrained=False).eval()

    @torch.no_grad()
    def predict(self, images: Tensor, metas: list[ImageMeta], score_thr: float, iou_thr: float,
                max_det: int) -> list[Detections]:
        b, _, h, w = images.shape
        if h > self.size[0] or w > self.size[1]:
            raise DetcliError(f"the ONNX model takes {self.size[1]}×{self.size[0]} inputs; got {w}×{h} (drop --imgsz)")
        padded = images.new_zeros((b, 3, *self.size))
        padded[:, :, :h, :w] = images
        chunks = [padded[i:i + 1] for i in range(b)] if self.static_batch else [padded]
        runs = [self.session.run(None, {"images": c.float().cpu().numpy()}) for c in chunks]
        outs = [torch.cat([torch.from_numpy(r[k]) for r in runs]) for k in range(len(runs[0]))]
        shape = (b, 3, *self.size)
        if not self.end_to_end:
            cfg = self.decoder.postprocess_cfg.replace(score_thr=score_thr, iou_thr=iou_thr, max_det=max_det)
            return self.decoder.detections(HeadOutput(*outs), shape, metas, cfg)
        num, boxes, scores, labels = outs
        boxes = clip_boxes(boxes, image_limits(metas, shape, boxes))
        dets = []
        for i in range(b):
            keep = scores[i, : int(num[i])] > score_thr
            dets.append(Detections(boxes[i][: int(num[i])][keep][:max_det], scores[i][: int(num[i])][keep][:max_det],
                                   labels[i][: int(num[i])][keep][:max_det]))
        return dets


def read_metadata(path: Path) -> dict[str, Any]:
    from detcli.export.formats import require

    onnx = require("onnx", "reading an ONNX model")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as e:
        raise DetcliError(f"{path}: not a readable ONNX model ({e})") from None
    meta = {}
    for p in model.metadata_props:
        try:
            meta[p.key] = json.loads(p.value)
        except json.JSONDecodeError:
            meta[p.key] = p.value
    if "preset_config" not in meta or "class_names" not in meta:
        raise DetcliError(f"{path}: an ONNX model without detcli metadata; export it with `detcli export`")
    return meta


def load_exported(path: Path, imgsz: int | None, device: torch.device, reporter: Any = None):
    """A :class:`~detcli.app.common.LoadedModel` whose model runs the ONNX file; its preset's input size is the
    exported one, so that predict / eval transform images to fit it."""
    from detcli.app.common import LoadedModel
    from detcli.config.schema import Preset

    path = Path(path)
    if not path.is_file():
        raise DetcliError(f"--weights {path}: no such file")
    meta = read_metadata(path)
    if imgsz is not None and imgsz != meta.get("imgsz"):
        raise DetcliError(f"{path} was exported for --imgsz {meta.get('imgsz')}; drop --imgsz or export again")
    from detcli.data.build import input_size

    preset = Preset.model_validate(meta["preset_config"])
    preset.input.size = list(input_size(preset, meta.get("imgsz")))  # transforms then fit the exported input
    model = OnnxDetector(path, meta, device)
    if reporter is not None and model.end_to_end:
        fixed = model.fixed
        reporter.info(f"end-to-end ONNX model: score > {fixed.get('score_thr')}, NMS IoU {fixed.get('iou_thr')}, "
                      f"{fixed.get('max_det')} detections per image are built in")
    return LoadedModel(model, preset, list(meta["class_names"]), list(meta.get("cat_ids") or []),
                       meta.get("dataset"), path, False)
