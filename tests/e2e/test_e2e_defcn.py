"""DeFCN, from an image file to the final detections and through one training step, against DeFCN on cvpods.

The fixtures come from ``benchmarks/fixtures/make_e2e_defcn.py`` (cvpods' ``read_image``, the playground config's test
pipeline and the official model's eval forward; the official training forward and backward of one step); no
official code runs here. The golden weights are written as a cvpods checkpoint and loaded through ``detcli
predict --weights``; the training step loads them through ``DeFCN.official_state_dict`` (cvpods names renamed).
The unit tests pin the two parts of cvpods' resize that detcli reproduces (the size rule and PIL's bilinear
filter) and detector_postprocess' order (the top-100 cut first, empty boxes dropped after it).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from detcli.config.loader import load_preset
from detcli.data.build import build_transform
from detcli.data.transforms.resize import KeepRatioResizeTransform, keep_ratio_size, shortest_edge_size
from detcli.models import build_model
from detcli.models.cvpods_keys import cvpods_to_detcli
from detcli.structures import HeadOutput
from detcli.structures import Detections, ImageMeta, Target
from tests.support.cli_subprocess import run_cli_forked
from tests.golden.end_to_end import (GOLDEN, detcli_detections, e2e_fixture, match_detections, official_checkpoint,
                               official_detections, predict_args)
from tests.golden.train_step import grad_checksums, grad_problems, loss_problems, train_step_fixture
from tests.golden.weights import fixture_state_dict, golden_input

PRESET = "defcn-r50-fpn"


# --------------------------------------------------------------------------- cvpods' resize
def shortest_edge_grid(h: np.ndarray, w: np.ndarray, short: float, max_size: float) -> tuple[np.ndarray, np.ndarray]:
    """ResizeShortestEdge's (new_w, new_h) of arrays of sizes, derived again from its definition: the short side
    set to ``short`` (the height when h < w), the other scaled by short / min(h, w) in float64; both scaled by
    max_size / longer when the longer exceeds max_size; each rounded half up."""
    factor = short / np.minimum(h, w)
    new_h = np.where(h < w, short, factor * h)
    new_w = np.where(h < w, factor * w, short)
    longer = np.maximum(new_h, new_w)
    capped = longer > max_size
    cap = max_size / longer
    new_h, new_w = np.where(capped, new_h * cap, new_h), np.where(capped, new_w * cap, new_w)
    return np.floor(new_w + 0.5).astype(np.int64), np.floor(new_h + 0.5).astype(np.int64)


def test_shortest_edge_size_hand_cases():
    """The two photographs (enlarged; shrunk), a capped panorama, a square, and 2:1 sizes where the two rules land on
    either side of a half: 604 × 302 is 1333 × 666.4999… here (800 · 1333 / 1600) and 666.5 by mmcv's single
    factor (302 · 1333 / 604); 612 × 306 the other way round. Over every size up to 2000 × 2000 the rules differ on
    552 (as ``benchmarks/fixtures/make_e2e_defcn.py --check-sizes`` counts against cvpods itself, where this rule differs
    on none)."""
    for (w, h), ours, mmcv in [((604, 302), (1333, 666), (1333, 667)), ((612, 306), (1333, 667), (1333, 666))]:
        assert (shortest_edge_size(w, h, 800, 1333), keep_ratio_size(w, h, (1333, 800))) == (ours, mmcv)
    assert shortest_edge_size(451, 300, 800, 1333) == (1203, 800)
    assert shortest_edge_size(1000, 872, 800, 1333) == (917, 800)
    assert shortest_edge_size(2000, 500, 800, 1333) == (1333, 333)  # 3200 × 800 capped to 1333 × 333.25
    assert shortest_edge_size(300, 300, 800, 1333) == (800, 800)
    w, h = np.meshgrid(np.arange(1, 2001), np.arange(1, 2001))
    sw, sh = shortest_edge_grid(h.astype(float), w.astype(float), 800.0, 1333.0)
    f = np.minimum(1333 / np.maximum(h, w), 800 / np.minimum(h, w))
    differ = (sw != np.floor(w * f + 0.5)) | (sh != np.floor(h * f + 0.5))
    assert int(differ.sum()) == 552
    ys, xs = np.nonzero(differ)
    for y, x in zip(ys[:50], xs[:50]):
        width, height = int(w[y, x]), int(h[y, x])
        assert shortest_edge_size(width, height, 800, 1333) == (int(sw[y, x]), int(sh[y, x]))
        assert shortest_edge_size(width, height, 800, 1333) != keep_ratio_size(width, height, (1333, 800))


@pytest.mark.parametrize("short, max_size", [(800, 1333), (640, 1333), (736, 1333), (512, 853)])
def test_shortest_edge_size_matches_its_definition(short, max_size):
    """:func:`shortest_edge_size` equals the vectorised re-derivation on 40,000 random (h, w) up to 5000 px,
    for the test size and training short sides."""
    rng = np.random.default_rng(short)
    h, w = rng.integers(1, 5001, size=(2, 40_000))
    sw, sh = shortest_edge_grid(h.astype(float), w.astype(float), float(short), float(max_size))
    ours = np.array([shortest_edge_size(int(a), int(b), short, max_size) for a, b in zip(w, h)])
    assert np.array_equal(ours, np.stack([sw, sh], axis=1))


def test_pil_backend_is_pil_bilinear_and_low_pass():
    """``backend="pil"`` is PIL's ``BILINEAR`` on the uint8 image (per channel, so BGR input is fine); shrinking a
    1-px checkerboard 3× it averages (126–129 everywhere) where cv2's ``INTER_LINEAR`` samples single pixels
    (0s and 255s)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(300, 451, 3), dtype=np.uint8)
    out = KeepRatioResizeTransform(scale=(1333, 800), train=False, backend="pil", size_rule="shortest_edge",
                                   mean=(0, 0, 0), std=(1, 1, 1), to_rgb=False)(img, np.zeros((0, 4), np.float32),
                                                                                np.zeros(0, np.int64))
    ref = np.asarray(Image.fromarray(img[:, :, ::-1].copy()).resize((1203, 800), Image.BILINEAR))[:, :, ::-1]
    assert out["img_shape"] == (800, 1203)
    assert np.array_equal(out["img"].permute(1, 2, 0).numpy(), ref.astype(np.float32))
    board = np.tile(((np.indices((300, 300)).sum(0) % 2) * 255).astype(np.uint8)[..., None], (1, 1, 3))
    empty, labels = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    pil, cv2 = (KeepRatioResizeTransform(scale=(100, 100), train=False, backend=b, mean=(0, 0, 0), std=(1, 1, 1),
                                         to_rgb=False)(board, empty, labels)["img"] for b in ("pil", "cv2"))
    assert pil.shape == cv2.shape == (3, 100, 100)
    assert float((pil - 127.5).abs().max()) <= 2
    assert set(cv2.unique().tolist()) == {0.0, 255.0}


def test_defcn_preset_resizes_as_cvpods():
    """The DeFCN preset's test and training transforms use the PIL backend and ResizeShortestEdge's rule
    (RetinaNet's keep cv2 and mmcv's rounding)."""
    preset = load_preset(PRESET)[0]
    for train in (False, True):
        t = build_transform(preset, train=train)
        assert (t.backend, t.size_rule) == ("pil", "shortest_edge")
    t = build_transform(load_preset("retinanet-r18-fpn")[0], train=False)
    assert (t.backend, t.size_rule) == ("cv2", "mmcv")


# --------------------------------------------------------------------------- detector_postprocess
@pytest.fixture(scope="module")
def defcn():
    """The DeFCN preset's model, random weights (post-processing tests need no trained weights)."""
    return build_model(load_preset(PRESET)[0], 80, pretrained=False).eval()


def test_to_original_rescales_clips_then_drops_empty(defcn):
    """detector_postprocess: × (ori_w / img_w, ori_h / img_h), clamped to the original image, boxes left without
    area dropped after the cut (scores keep their order); nothing is dropped before it
    (``min_bbox_size`` is None)."""
    assert defcn.postprocess_cfg.min_bbox_size is None and defcn.postprocess_cfg.nms == "none"
    meta = ImageMeta(0, "x.jpg", (300, 451), (800, 1203), np.diag([1203 / 451, 800 / 300, 1.0]).tolist())
    boxes = torch.tensor([[-10.0, 100.0, 400.0, 900.0],  # beyond the image: clipped
                          [1210.0, 10.0, 1300.0, 50.0],  # wholly right of the image: empty after the clip
                          [100.0, 200.0, 100.0, 300.0],  # zero width
                          [12.0, 24.0, 1203.0, 800.0]])
    det = Detections(boxes, torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 2, 3, 4]))
    out = defcn.to_original(det, meta)
    assert out.labels.tolist() == [1, 4] and out.scores.tolist() == pytest.approx([0.9, 0.6])
    sx, sy = torch.tensor(451 / 1203, dtype=torch.float32), torch.tensor(300 / 800, dtype=torch.float32)
    assert out.boxes[0].tolist() == [0.0, float(100.0 * sy), float(400.0 * sx), 300.0]
    assert out.boxes[1].tolist() == [float(12.0 * sx), float(24.0 * sy), float(1203.0 * sx), float(800.0 * sy)]


def test_top_k_cut_comes_before_the_empty_drop(defcn):
    """Of 101 candidates the best box lies wholly outside the 128 × 128 input: ``detections`` keeps it among the
    100 (not clipped, nothing dropped before the cut), ``to_original`` drops it: 99 (cvpods: 100 cut, then 1
    dropped; dropping first would give 100)."""
    shape = (1, 3, 128, 128)
    n = defcn.priors(shape[-2:]).num
    cls = torch.full((1, n, 80), -30.0)
    cls[0, :101, 0] = torch.logit(torch.linspace(0.99, 0.5, 101))
    reg = torch.full((1, n, 4), 4.0)
    reg[0, 0] = torch.tensor([-126.0, -126.0, 136.0, 136.0])  # the point (4, 4) → (130, 130, 140, 140)
    outputs = HeadOutput(cls, reg, torch.full((1, n, 1), 30.0))
    meta = ImageMeta(0, "x.jpg", (128, 128), (128, 128), np.eye(3).tolist())
    det = defcn.detections(outputs, shape, [meta], defcn.postprocess_cfg)[0]
    assert len(det.scores) == 100 and det.boxes[0].tolist() == [130.0, 130.0, 140.0, 140.0]
    out = defcn.to_original(det, meta)
    assert len(out.scores) == 99 and torch.equal(out.scores, det.scores[1:])


# --------------------------------------------------------------------------- golden end to end
@pytest.fixture(scope="module")
def predicted(tmp_path_factory):
    """``detcli predict`` of both photographs, once: (fixture, detcli's detections per file)."""
    tmp = tmp_path_factory.mktemp("e2e-defcn")
    doc = e2e_fixture(PRESET)
    checkpoint = official_checkpoint(doc, tmp)
    res = run_cli_forked(*predict_args(doc, checkpoint, tmp / "runs"), cwd=tmp)
    assert res.returncode == 0, res.stdout + res.stderr
    return doc, detcli_detections(tmp / "runs" / "run" / "predictions.json")


@pytest.mark.parametrize("image", ["chelsea.jpg", "hubble_deep_field.jpg"])
def test_predict_matches_cvpods(predicted, image):
    """``detcli predict`` gives cvpods' final detections in original pixels (451 × 300 enlarged to 1203 × 800 and
    padded to 1216 × 800; 1000 × 872 shrunk to 917 × 800 with PIL's low-pass): same count, 1e-3 px, 1e-5 score."""
    doc, ours = predicted
    official = official_detections(doc)
    assert sorted(ours) == sorted(official)
    problems = match_detections(official[image], ours[image])
    assert not problems, problems


# --------------------------------------------------------------------------- golden training step


def test_training_step_matches_cvpods(one_thread):
    """One step of detcli's ``DeFCN.loss`` on the official fixed batch (384 × 512 and 320 × 448, the second padded
    with zeros as cvpods' ``ImageList`` pads it) from the golden weights: POTO focal, GIoU and auxiliary losses
    within 1e-6 relative, every gradient's checksums within 1e-4 of its Σ|g| under cvpods' parameter names, and
    no gradient where cvpods has none (FrozenBN everywhere, stem and res2 frozen)."""
    doc = train_step_fixture(PRESET)
    raw = json.loads((GOLDEN / f"{doc['weights']}.json").read_text())
    model = build_model(load_preset(PRESET)[0], 80, pretrained=False)
    model.load_state_dict(model.official_state_dict({"model": fixture_state_dict(raw)}), strict=True)
    model.train()
    images = golden_input(doc["input_shape"], doc["input_seed"])
    for i, (h, w) in enumerate(doc["img_shapes"]):
        images[i, :, h:, :] = 0
        images[i, :, :, w:] = 0
    targets = [Target(torch.tensor(t["boxes"], dtype=torch.float32), torch.tensor(t["labels"], dtype=torch.long))
               for t in doc["targets"]]
    metas = [ImageMeta(i, f"{i}.jpg", tuple(s), tuple(s), np.eye(3).tolist()) for i, s in enumerate(doc["img_shapes"])]
    model.zero_grad()
    losses = model.loss(images, targets, metas, doc["epoch"])
    sum(losses.values()).backward()
    problems = loss_problems(doc["losses"], {k: float(v.detach()) for k, v in losses.items()})
    detcli_name = {old: new for old, new in zip(doc["grads"], cvpods_to_detcli(dict.fromkeys(doc["grads"])))}
    ours = grad_checksums(model.named_parameters())
    official = {detcli_name[k]: v for k, v in doc["grads"].items()}
    problems += grad_problems(official, ours)
    assert not problems, problems
