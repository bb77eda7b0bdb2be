"""``detcli inspect-anchors``: statistics that match hand-computed assignments, pictures for every preset, bad input.

The hand-made cases come first (RetinaNet's MaxIoU on two boxes of known sizes, the dynamic soft label assigner on
fixed predictions), then the command on every shipped preset through the contract, then bad input.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.app.inspect_anchors import InspectRequest, inspect_command
from detcli.assigners.prior_fit import (
    BEYOND_REGRESSION_RANGE,
    BELOW_IOU_THRESHOLD,
    NO_PRIOR_INSIDE,
    SMALLER_THAN_STRIDE,
    anchor_fit,
    point_fit,
)
from detcli.config.loader import load_preset
from detcli.errors import DetcliError
from detcli.inspect.assign import assign_batch
from detcli.inspect.draw import PANEL_SIDE
from detcli.inspect.stats import AssignmentStats, level_names
from detcli.models import build_model
from detcli.structures import HeadOutput
from detcli.structures import Batch, ImageMeta, Target
from tests.support.cli_subprocess import run_cli_forked
from tests.support.preset_cases import preset_params

torch.set_num_threads(1)
SIZE = 256  # the hand-made image: 256 × 256, shown at scale 1
BOX_A = (16.0, 16.0, 48.0, 48.0)  # 32 × 32 = RetinaNet's smallest anchor (P3, ratio 1, scale 4·8) at cell (4, 4)
BOX_B = (64.0, 128.0, 192.0, 256.0)  # 128 × 128 = the P5 anchor (ratio 1, scale 4·32) at cell (4, 6)


def _meta(h: int = SIZE, w: int = SIZE, i: int = 1) -> ImageMeta:
    return ImageMeta(i, f"{i}.png", (h, w), (h, w), np.eye(3).tolist())


# ---------------------------------------------------------------------------------------- hand-made: RetinaNet
def _retinanet_anchors_by_hand(size: int) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    """Every anchor of RetinaNet's default generator, written out from the paper's definition: on level l
    (stride s = 8·2^l) at cell (y, x) the centre (x·s, y·s), for ratio r in (0.5, 1, 2) and scale k in 0..2 the
    size w = 4·s·2^(k/3)/√r, h = 4·s·2^(k/3)·√r; order (level, y, x, ratio, scale)."""
    anchors, levels = [], []
    for level, s in enumerate((8, 16, 32, 64, 128)):
        cells = math.ceil(size / s)
        for y in range(cells):
            for x in range(cells):
                for r in (0.5, 1.0, 2.0):
                    for k in range(3):
                        w = 4 * s * 2 ** (k / 3) / math.sqrt(r)
                        h = 4 * s * 2 ** (k / 3) * math.sqrt(r)
                        anchors.append((x * s - w / 2, y * s - h / 2, x * s + w / 2, y * s + h / 2))
                        levels.append(level)
    return anchors, levels


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_hand_computed_ious_of_the_smallest_anchors():
    """A few IoUs worked out on paper for BOX_A (32 × 32 at (16, 16)): the anchor it equals, its neighbour one
    stride right (overlap 24 × 32), the next scale up (side 32·2^(1/3)), the third scale (side 32·2^(2/3))."""
    assert _iou(BOX_A, (16, 16, 48, 48)) == 1.0
    assert _iou(BOX_A, (24, 16, 56, 48)) == pytest.approx(768 / 1280)  # 0.6: positive
    side = 32 * 2 ** (1 / 3)
    assert _iou(BOX_A, (32 - side / 2, 32 - side / 2, 32 + side / 2, 32 + side / 2)) == pytest.approx(1024 / side**2)  # 0.63
    side = 32 * 2 ** (2 / 3)
    assert _iou(BOX_A, (32 - side / 2, 32 - side / 2, 32 + side / 2, 32 + side / 2)) == pytest.approx(0.397, abs=1e-3)


@pytest.fixture(scope="module")
def retinanet_case():
    preset, _ = load_preset("retinanet-r18-fpn", ["model.num_classes=2"])
    model = build_model(preset, None, pretrained=False).eval()
    target = Target(torch.tensor([BOX_A, BOX_B]), torch.tensor([0, 1]))
    batch = Batch(torch.zeros(1, 3, SIZE, SIZE), [target], [_meta()])
    return model, batch


def test_retinanet_positives_and_band_match_the_hand_computed_anchors(retinanet_case):
    """Which anchors pass 0.5 (positive for their best GT) and which fall in the 0.4–0.5 band (ignored): the
    boxes are far apart, so no anchor is contested, and each GT's best anchor (IoU 1) is positive anyway."""
    model, batch = retinanet_case
    anchors, levels = _retinanet_anchors_by_hand(SIZE)
    ious = [(_iou(a, BOX_A), _iou(a, BOX_B)) for a in anchors]
    expected_pos = {n: 1 + int(b > a) for n, (a, b) in enumerate(ious) if max(a, b) >= 0.5}
    expected_band = {n for n, (a, b) in enumerate(ious) if 0.4 <= max(a, b) < 0.5}

    priors, assignment, fits = assign_batch(model, model, batch)
    torch.testing.assert_close(priors.boxes, torch.tensor(anchors, dtype=torch.float32), atol=1e-4, rtol=0)
    gt_inds = assignment.gt_inds[0].tolist()
    assert {n: g for n, g in enumerate(gt_inds) if g > 0} == expected_pos
    assert {n for n, g in enumerate(gt_inds) if g < 0} == expected_band
    assert len(expected_band) > 0 and sum(g == 1 for g in expected_pos.values()) > 1

    stats = AssignmentStats(model.strides, ["a", "b"], anchor_iou=True)
    stats.add(priors, assignment, batch.targets, batch.metas, fits)
    names = level_names(model.strides)
    summary = stats.summary(names)
    per_gt = [sum(g == k for g in expected_pos.values()) for k in (1, 2)]
    assert summary["positives_per_gt"]["min"] == min(per_gt) and summary["positives_per_gt"]["max"] == max(per_gt)
    assert summary["positives_per_level"] == {
        name: sum(levels[n] == lv for n in expected_pos) for lv, name in enumerate(names)}
    assert summary["ignored_per_level"] == {name: sum(levels[n] == lv for n in expected_band)
                                            for lv, name in enumerate(names)}
    pos_ious = [max(ious[n]) for n in expected_pos]
    assert summary["positive_iou"]["mean"] == pytest.approx(sum(pos_ious) / len(pos_ious), abs=1e-4)
    assert summary["positive_iou"]["max"] == pytest.approx(1.0)
    assert summary["gts_without_positive"]["count"] == 0
    # both GTs equal an anchor: both fit, with as many candidates as anchors at or over 0.5
    fit, missed_wh, _ = stats.fit_summary()
    assert fit["fit_share"] == 1.0 and missed_wh.shape == (0, 2)
    assert fits[0].candidates.tolist() == [sum(a >= 0.5 for a, _ in ious), sum(b >= 0.5 for _, b in ious)]
    assert fits[0].measure.tolist() == pytest.approx([1.0, 1.0])
    # where the GTs land: BOX_A (√area 32, bin 32-64) on P3, BOX_B (128, bin 128-256) on P5
    counts = summary["gt_size_vs_level"]["counts"]
    assert counts["32-64"]["P3"] == 1 and counts["128-256"]["P5"] == 1


def test_retinanet_dense_and_candidate_assignment_agree():
    """RetinaNet.assign runs MaxIoU only on anchors that may overlap a GT; on random boxes (some outside the
    image, some tiny, some huge) it equals MaxIoU on every valid anchor."""
    from detcli.geometry.anchors import padded_shape

    preset, _ = load_preset("retinanet-r18-fpn", ["model.num_classes=3"])
    model = build_model(preset, None, pretrained=False)
    g = torch.Generator().manual_seed(0)
    for case in range(12):
        h, w = 32 * int(torch.randint(3, 12, (1,), generator=g)), 32 * int(torch.randint(3, 12, (1,), generator=g))
        priors = model.priors((h, w))
        targets, metas = [], []
        for i in range(2):
            n = int(torch.randint(0, 9, (1,), generator=g))
            xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h]) * 1.2 - 10
            wh = torch.rand(n, 2, generator=g) ** 2 * torch.tensor([w, h]) + 0.5
            targets.append(Target(torch.cat([xy, xy + wh], 1), torch.randint(0, 3, (n,), generator=g)))
            metas.append(ImageMeta(i, "x", (h, w), (h - 32 * i, w - 17 * i), np.eye(3).tolist()))
        got = model.assign(None, priors, targets, metas)
        valid = model.anchor_generator.valid_flags(
            priors.level_sizes, [padded_shape(m.img_shape, 32) for m in metas])
        for i, t in enumerate(targets):
            ref = model.assigner.assign(priors.boxes[valid[i]], t.boxes, t.labels)
            assert torch.equal(got.gt_inds[i, valid[i]], ref.gt_inds)
            assert torch.equal(got.quality[i, valid[i]], ref.quality)
            assert (got.gt_inds[i, ~valid[i]] == -1).all()


def test_anchor_fit_reasons():
    anchors = torch.tensor([[0.0, 0.0, 32.0, 32.0]])
    fit = anchor_fit(anchors, torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 16.0, 16.0], [100.0, 100, 110, 110]]),
                     0.5)
    assert fit.fits.tolist() == [True, False, False]
    assert fit.measure.tolist() == pytest.approx([1.0, 0.25, 0.0])
    assert fit.reason.tolist() == [0, BELOW_IOU_THRESHOLD, BELOW_IOU_THRESHOLD]


def test_point_fit_reasons():
    """Points on an 8-px grid with a reach of 2 strides (16 px per side)."""
    ys, xs = torch.meshgrid(torch.arange(8) * 8.0, torch.arange(8) * 8.0, indexing="ij")
    points = torch.stack([xs.flatten(), ys.flatten(), torch.full((64,), 8.0), torch.full((64,), 8.0)], 1)
    boxes = torch.tensor([
        [4.0, 4.0, 28.0, 28.0],  # points (8..24) inside, farthest side 20 from (8, 8) but 12 from (16, 16): fits
        [9.0, 9.0, 15.0, 15.0],  # 6 px: no point strictly inside, smaller than the stride
        [1.0, 9.0, 60.0, 15.0],  # 59 × 6: no point inside though wider than the stride
        [1.0, 1.0, 63.0, 63.0],  # 62 × 62: every inside point has a side farther than 16 px
    ])
    fit = point_fit(points, boxes, torch.full((64,), 16.0))
    assert fit.fits.tolist() == [True, False, False, False]
    assert fit.reason.tolist() == [0, SMALLER_THAN_STRIDE, NO_PRIOR_INSIDE, BEYOND_REGRESSION_RANGE]
    assert fit.candidates[0] == 1  # only (16, 16) reaches every side within 16 px
    assert fit.measure[1] == math.inf and fit.measure[3] > 1


def test_nanodet_plus_advice_names_the_input_size_or_reg_max():
    preset, _ = load_preset("nanodet-plus-m", ["model.num_classes=2"])
    model = build_model(preset, None, pretrained=False)
    thin = model.fit_advice(torch.tensor([[19.0, 5.0], [30.0, 5.0]]), torch.tensor([NO_PRIOR_INSIDE] * 2))
    assert "--set input.size=[w,h] about 1.6x" in thin and "short side is about 5 px" in thin  # 8 / 5
    far = model.fit_advice(torch.tensor([[900.0, 700.0]]), torch.tensor([BEYOND_REGRESSION_RANGE]))
    assert "--set model.reg_max=15" in far  # 900 / 64 = 14.06 strides → 15


def test_official_nanodet_checkpoint_without_agm_assigns_on_the_main_head():
    """An official file without AGM weights: inspection says it uses the main head's predictions, and does."""
    preset, _ = load_preset("nanodet-plus-m", ["model.num_classes=2"])
    model = build_model(preset, None, pretrained=False).eval()
    official = {"model." + k: v for k, v in model.inference_state_dict().items()}
    assert model.load_official_state_dict({"state_dict": official}) is False
    assert "main head" in model.assignment_predictions
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model.assignment_outputs(images).cls_logits, model(images).cls_logits)


# ---------------------------------------------------------------------------------------- hand-made: DSLA
def test_dynamic_soft_label_assignment_on_fixed_predictions():
    """NanoDet-Plus' assigner on predictions made by hand: every prior predicts its GT's box shifted right by
    its distance d to the GT centre plus 0.01 px × its index (no two priors tie), so IoU = (w − d')/(w + d')
    falls with d'. With constant logits the class cost
    rises with IoU slower than the IoU cost falls, so each GT takes the k = int(Σ top-13 IoUs) priors inside it
    with the highest IoU (dynamic k); the two GTs are apart, so nothing is contested."""
    preset, _ = load_preset("nanodet-plus-m", ["model.num_classes=2"])
    model = build_model(preset, None, pretrained=False).eval()
    size = (320, 320)
    priors = model.priors(size)
    gts = torch.tensor([[40.0, 40.0, 72.0, 64.0], [180.0, 150.0, 300.0, 300.0]])
    px, py = priors.points[:, 0], priors.points[:, 1]
    inside = (px[None] > gts[:, None, 0]) & (px[None] < gts[:, None, 2]) & (py[None] > gts[:, None, 1]) & (
        py[None] < gts[:, None, 3])
    owner = torch.where(inside[1], 1, 0)  # the GT whose box a prior predicts (priors outside both: GT 0's)
    centre = (gts[:, :2] + gts[:, 2:]) / 2
    d = (priors.points[:, :2] - centre[owner]).norm(dim=1) + 0.01 * torch.arange(priors.num)
    boxes = gts[owner].clone()
    boxes[:, 0::2] += d[:, None]
    reg = model.encode_boxes(boxes[None], priors)
    outputs = HeadOutput(torch.zeros(1, priors.num, 2), reg)
    decoded = model.decode_boxes(outputs, priors)[0]  # what the assigner sees (GFL round trip)

    target = Target(gts, torch.tensor([0, 1]))
    batch = Batch(torch.zeros(1, 3, *size), [target], [_meta(*size)])
    assignment = model.assign(outputs, priors, [target])
    expected_k, chosen_ious = [], []
    for k in range(2):
        cand = torch.nonzero(inside[k]).flatten()
        ious = torch.tensor([_iou(decoded[n].tolist(), gts[k].tolist()) for n in cand])
        top = int(ious.topk(min(13, len(cand))).values.sum())
        expected_k.append(max(1, top))
        best = cand[ious.argsort(descending=True)[: expected_k[-1]]]
        assert set(torch.nonzero(assignment.gt_inds[0] == k + 1).flatten().tolist()) == set(best.tolist())
        chosen_ious += ious.sort(descending=True).values[: expected_k[-1]].tolist()
    assert expected_k[0] > 1 and expected_k[1] > expected_k[0]  # dynamic: the larger box gets more

    fits = [model.prior_fit(priors, gts, batch.metas[0])]
    stats = AssignmentStats(model.strides, ["a", "b"], anchor_iou=False)
    stats.add(priors, assignment, [target], batch.metas, fits)
    summary = stats.summary(level_names(model.strides))
    assert (summary["positives_per_gt"]["min"], summary["positives_per_gt"]["max"]) == tuple(expected_k)
    assert summary["positive_iou"]["mean"] == pytest.approx(sum(chosen_ious) / len(chosen_ious), abs=1e-4)
    assert sum(summary["positives_per_level"].values()) == sum(expected_k)
    assert sum(summary["ignored_per_level"].values()) == 0  # DSLA ignores nothing
    assert fits[0].fits.tolist() == [True, True]
    # candidates: priors inside whose farthest side is within reg_max = 7 strides (56 px on P3 … 448 px on P6)
    sides = torch.stack([px[None] - gts[:, None, 0], py[None] - gts[:, None, 1], gts[:, None, 2] - px[None],
                         gts[:, None, 3] - py[None]], -1).amax(-1)
    reach = inside & (sides <= 7 * priors.points[None, :, 2])
    assert fits[0].candidates.tolist() == reach.sum(1).tolist()
    assert reach[0].sum() == inside[0].sum() and reach[1].sum() < inside[1].sum()  # the large box: not from P3


# ---------------------------------------------------------------------------------------- the command
def _write_dataset(root: Path, images: dict[str, np.ndarray | bytes], boxes: dict[str, list]) -> Path:
    """A user's COCO folder: ``root/annotations/instances_{train,val}.json`` + ``root/{train,val}/`` (the same
    images in both splits); xyxy boxes given."""
    (root / "train").mkdir(parents=True)
    (root / "annotations").mkdir()
    infos, anns = [], []
    for i, (name, img) in enumerate(images.items(), start=1):
        path = root / "train" / name
        if isinstance(img, bytes):
            path.write_bytes(img)
            h = w = SIZE
        else:
            cv2.imwrite(str(path), img)
            h, w = img.shape[:2]
        infos.append({"id": i, "file_name": name, "width": w, "height": h})
        for x1, y1, x2, y2, c in boxes.get(name, []):
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": c, "bbox": [x1, y1, x2 - x1, y2 - y1],
                         "area": (x2 - x1) * (y2 - y1), "iscrowd": 0})
    cats = [{"id": 1, "name": "small"}, {"id": 2, "name": "large"}]
    for split in ("train", "val"):
        (root / "annotations" / f"instances_{split}.json").write_text(
            json.dumps({"images": infos, "annotations": anns, "categories": cats}))
    shutil.copytree(root / "train", root / "val")
    return root


@pytest.fixture(scope="module")
def hand_dataset(tmp_path_factory) -> Path:
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    cv2.rectangle(img, (16, 16), (48, 48), (0, 0, 255), -1)
    cv2.rectangle(img, (64, 128), (192, 255), (255, 0, 0), -1)
    return _write_dataset(tmp_path_factory.mktemp("hand"), {"hand.png": img, "broken.png": b"not an image"},
                          {"hand.png": [(*BOX_A, 1), (*BOX_B, 2)], "broken.png": [(10, 10, 50, 50, 1)]})


def test_command_on_a_users_coco_folder_matches_the_hand_computed_case(hand_dataset, tmp_path, capsys):
    """The same two boxes through the command on a COCO folder (input 256 × 256, so the boxes stay as drawn):
    stats.json has the hand-computed counts; the unreadable image is skipped and counted."""
    out = inspect_command(InspectRequest(preset="retinanet-r18-fpn", data=str(hand_dataset), output=tmp_path / "o",
                                         workers=0, overrides=["input.size=[256,256]"]))
    stats = json.loads((out / "stats.json").read_text())
    anchors, _ = _retinanet_anchors_by_hand(SIZE)
    ious = [(_iou(a, BOX_A), _iou(a, BOX_B)) for a in anchors]
    assert stats["images"] == 1 and stats["unreadable_images"] == 1 and stats["unreadable_files"] == ["broken.png"]
    assert stats["gts"] == 2
    per_gt = sorted([sum(a >= 0.5 and a >= b for a, b in ious), sum(b >= 0.5 and b > a for a, b in ious)])
    assert [stats["positives_per_gt"]["min"], stats["positives_per_gt"]["max"]] == per_gt
    assert sum(stats["ignored_per_level"].values()) == sum(0.4 <= max(p) < 0.5 for p in ious)
    assert stats["prior_fit"]["fit_share"] == 1.0 and stats["prior_fit"]["suits"] is True
    assert [p["file"] for p in stats["pictures"]] == ["hand.png"]
    picture = cv2.imread(str(out / "hand.png"))
    assert picture.shape[1] == 5 * PANEL_SIDE + 4 * 4  # five levels side by side, square input
    printed = capsys.readouterr().out
    assert "1 unreadable image(s) skipped: broken.png" in printed and "the priors suit this data" in printed


def test_verdict_names_the_field_to_change_when_boxes_are_too_small(tmp_path, capsys):
    """Boxes of 10 px against RetinaNet's smallest anchor of 32 px: no anchor reaches IoU 0.5; the verdict says
    so and proposes a smaller octave_base_scale."""
    img = np.full((SIZE, SIZE, 3), 90, np.uint8)
    small = [(20.0 + 40 * i, 30.0, 30.0 + 40 * i, 40.0, 1) for i in range(5)]
    data = _write_dataset(tmp_path / "d", {"tiny.png": img}, {"tiny.png": small})
    out = inspect_command(InspectRequest(preset="retinanet-r18-fpn", data=str(data), output=tmp_path / "o",
                                         images=0, workers=0, overrides=["input.size=[256,256]"]))
    fit = json.loads((out / "stats.json").read_text())["prior_fit"]
    assert fit["fit_share"] == 0.0 and fit["suits"] is False
    assert fit["not_fit_by_reason"] == {"below every anchor's positive IoU threshold": 5}
    assert "--set model.anchor.octave_base_scale=1.8" in fit["verdict"]  # 4 · 10·√2 / 32, one decimal
    assert "the priors miss 100.0% of 5 GTs" in capsys.readouterr().out


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    """The command on the demo data for a shipped preset at a 192-px input (the pictures' size follows): 8 images
    of statistics, image id 1 drawn. Run once per preset, when a test first asks for it."""
    root = tmp_path_factory.mktemp("presets")
    done: dict[str, Path] = {}

    def run(name: str) -> Path:
        if name not in done:
            done[name] = inspect_command(InspectRequest(preset=name, output=root / name, image_ids=[1], limit=8,
                                                        batch=4, workers=0, imgsz=192))
        return done[name]

    return run


@pytest.mark.parametrize("preset_path", preset_params())  # size-only copies and > 40 M presets: -m slow
def test_every_preset_through_the_contract(preset_path, demo_run):
    preset = preset_path.stem
    out = demo_run(preset)
    stats = json.loads((out / "stats.json").read_text())
    assert stats["preset"] == preset and stats["images"] == 8 and stats["gts"] > 0
    assert stats["positives_per_gt"]["mean"] > 0 and 0 < stats["prior_fit"]["fit_share"] <= 1
    assert stats["prior_fit"]["verdict"] and stats["prior_fit"]["rule"]
    assert len(stats["levels"]) == len(stats["positives_per_level"])
    assert sum(stats["positives_per_gt"]["histogram"].values()) == stats["gts"]
    (picture,) = stats["pictures"]
    assert picture["image_id"] == 1
    img = cv2.imread(str(out / picture["file"]))
    h, w = picture["input_shape"]
    panel_w = round(w * PANEL_SIDE / max(h, w))
    levels = len(stats["levels"])
    assert img.shape[1] == levels * panel_w + (levels - 1) * 4
    assert img.shape[0] > round(h * PANEL_SIDE / max(h, w))
    untrained = stats["assignment_on"]
    assert ("UNTRAINED" in untrained) == (not untrained.startswith("priors and GT boxes only"))


def test_pictures_differ_between_presets(demo_run):
    """Different networks draw different pictures."""
    families = {"nanodet-plus-m", "nanodet-plus-m-1.5x", "retinanet-r18-fpn", "rtmdet-tiny", "rtmdet-m"}
    pictures = {name: (demo_run(name) / "000000.png").read_bytes() for name in families}
    assert len({pictures[name] for name in families}) == len(families)


def test_compare_writes_one_sheet(tmp_path):
    out = inspect_command(InspectRequest(compare=["nanodet-plus-m", "retinanet-r18-fpn"], output=tmp_path / "c",
                                         image_ids=[1], limit=4, batch=4, workers=0))
    stats = json.loads((out / "stats.json").read_text())
    assert set(stats["presets"]) == {"nanodet-plus-m", "retinanet-r18-fpn"}
    sheet = cv2.imread(str(out / "compare_000000.png"))
    assert sheet.shape[1] >= 4 * PANEL_SIDE + 3 * 4  # the wider row: NanoDet-Plus' four 400-px panels at least
    assert sheet.shape[0] > PANEL_SIDE + 200  # one row per preset


def test_trained_weights_drive_the_prediction_based_assigner(tmp_path):
    """With --weights the dynamic soft label assigner looks at the checkpoint's predictions (and says so); other
    weights than the untrained seed give another assignment."""
    from detcli.data.demo import ensure_demo_dataset
    from detcli.checkpoints.io import FORMAT, save_checkpoint
    from detcli.data.coco_json import load_coco_json

    coco = load_coco_json(ensure_demo_dataset() / "annotations" / "instances_train.json")
    preset, _ = load_preset("nanodet-plus-m", [])
    torch.manual_seed(123)
    model = build_model(preset, len(coco.class_names), pretrained=False)
    ckpt = tmp_path / "best.pt"
    save_checkpoint(ckpt, {"format": FORMAT, "model": model.state_dict(), "preset": preset.model_dump(mode="json"),
                           "class_names": coco.class_names, "cat_ids": coco.cat_ids, "dataset": None})
    common = dict(output=None, images=0, limit=8, batch=4, workers=0)
    trained = json.loads((inspect_command(InspectRequest(weights=ckpt, **{**common, "output": tmp_path / "t"}))
                          / "stats.json").read_text())
    untrained = json.loads((inspect_command(InspectRequest(preset="nanodet-plus-m",
                                                           **{**common, "output": tmp_path / "u"}))
                            / "stats.json").read_text())
    assert trained["trained"] and trained["assignment_on"].startswith("the AGM's predictions")
    assert str(ckpt) in trained["assignment_on"] and "UNTRAINED" in untrained["assignment_on"]
    assert trained["positive_iou"] != untrained["positive_iou"]


# ---------------------------------------------------------------------------------------- bad input
def test_unknown_image_id_is_named(hand_dataset, tmp_path):
    with pytest.raises(DetcliError, match=r"--image-ids 99: not in .*instances_train.json \(train split, 2 images"):
        inspect_command(InspectRequest(preset="retinanet-r18-fpn", data=str(hand_dataset), image_ids=[1, 99],
                                       output=tmp_path / "o", workers=0))
    assert not (tmp_path / "o").exists()  # nothing written before the input is checked


def test_a_detector_without_priors_is_refused(monkeypatch, tmp_path):
    import detcli.models as models
    from detcli.models.base import NoPriors

    real = models.build_model

    def without_priors(*args, **kwargs):
        model = real(*args, **kwargs)
        model.priors = lambda *a, **k: (_ for _ in ()).throw(NoPriors("a query-based detector has none"))
        return model

    monkeypatch.setattr(models, "build_model", without_priors)
    with pytest.raises(DetcliError, match="preset nanodet-plus-m: no priors to show .a query-based detector"):
        inspect_command(InspectRequest(preset="nanodet-plus-m", output=tmp_path / "o", workers=0))


def test_bad_flags_get_messages_through_the_cli(tmp_path):
    """The command line: exit 2, the message, no traceback."""
    for args, message in [
        (["--image-ids", "1,x"], "--image-ids '1,x': give whole numbers"),
        (["-p", "nanodet-plus-m", "--split", "test"], "--split 'test': choose train or val"),
    ]:
        res = run_cli_forked("inspect-anchors", *args, "-o", "out", cwd=tmp_path)
        assert res.returncode == 2, res.stderr
        assert message in res.stderr and "Traceback" not in res.stderr + res.stdout
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("request_, message", [
    (InspectRequest(compare=["nanodet-plus-m", "retinanet-r18-fpn"], weights=Path("w.pt")), "drop --weights"),
    (InspectRequest(preset="no-such-preset"), "no-such-preset"),
    (InspectRequest(), "give --preset"),
    (InspectRequest(preset="nanodet-plus-m", data="/no/such/data.yaml"), "/no/such/data.yaml"),
])
def test_bad_requests_are_refused_with_a_message(request_, message, tmp_path):
    request_.output = tmp_path / "o"
    with pytest.raises(DetcliError, match=message):
        inspect_command(request_)
    assert not (tmp_path / "o").exists()
