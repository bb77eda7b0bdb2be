"""Each family's ``to_original`` does what its ``to_original_rule`` (recorded in exports) says, and the ONNX
metadata records the rule and the resize backend of the preset."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detcli.config.loader import load_preset
from detcli.export.metadata import inference_resize
from detcli.models import build_model
from detcli.structures import Detections, ImageMeta

PRESETS = {"nanodet-plus-m": "clip", "retinanet-r18-fpn": "clip", "rtmdet-tiny": "unclipped",
           "defcn-r50-fpn": "clip_drop_empty"}


def by_rule(rule: str, boxes: np.ndarray, sx: float, sy: float, ori_w: int, ori_h: int) -> np.ndarray:
    """The rule in words, re-derived: scale back; clip unless "unclipped"; drop empty boxes for "clip_drop_empty"."""
    out = boxes / np.array([sx, sy, sx, sy])
    if rule != "unclipped":
        out = np.clip(out, 0, [ori_w, ori_h, ori_w, ori_h])
    if rule == "clip_drop_empty":
        out = out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]
    return out


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_to_original_follows_its_rule(name):
    with torch.device("meta"):
        model = build_model(load_preset(name)[0], 80, pretrained=False)
    assert model.to_original_rule == PRESETS[name]
    ori_w, ori_h, new_w, new_h = 451, 300, 640, 426  # a landscape image resized to a 640 input
    sx, sy = new_w / ori_w, new_h / ori_h
    rng = np.random.default_rng(0)
    xy = rng.uniform(-20, 660, (200, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(0, 120, (200, 2))], axis=1)
    boxes[:10, 1::2] = [500.0, 520.0]  # wholly in the bottom padding: empty once clipped to the original
    meta = ImageMeta(0, "x.jpg", (ori_h, ori_w), (new_h, new_w), np.diag([sx, sy, 1.0]).tolist())
    det = Detections(torch.tensor(boxes, dtype=torch.float32), torch.rand(200), torch.zeros(200, dtype=torch.long))
    got = model.to_original(det, meta).boxes.double().numpy()
    want = by_rule(PRESETS[name], boxes.astype(np.float32).astype(np.float64), sx, sy, ori_w, ori_h)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=1e-3)


def test_exports_record_the_resize_backend_and_rule():
    defcn = inference_resize(load_preset("defcn-r50-fpn")[0], (1333, 800))
    retina = inference_resize(load_preset("retinanet-r18-fpn")[0], (1333, 800))
    assert (defcn["backend"], defcn["size_rule"]) == ("pil", "shortest_edge")
    assert (retina["backend"], retina["size_rule"]) == ("cv2", "mmcv")
