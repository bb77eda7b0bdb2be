"""Data layer: demo generation, COCO reading and its error paths, NanoDet transform, collate, loader."""
from __future__ import annotations

import functools
import importlib.util
import hashlib
import json
import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.data.coco import CocoDetection, DatasetWarning
from detcli.data.coco_json import DROP_REASONS, box_drop_reasons
from detcli.data.collate import collate
from detcli.data.dataset_config import DatasetConfig, load_dataset_config, resolve_dataset
from detcli.data.demo import CLASSES, ensure_demo_dataset
from detcli.data.image_io import looks_truncated
from detcli.data.loader import build_dataloader
from detcli.data.transforms.common import (
    inverse_warp_boxes, normalize, normalize_chw, to_chw_tensor, warp_boxes,
)
from detcli.data.transforms.nanodet import NanoDetTransform, color_jitter
from detcli.errors import DatasetError
from tests.support.coco_files import ann, write_coco

MEAN = np.array([103.53, 116.28, 123.675])
STD = np.array([57.375, 57.12, 58.395])


# ---------------------------------------------------------------------------------------------- helpers
def digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- demo
def test_demo_is_deterministic(tmp_path):
    a = ensure_demo_dataset(tmp_path / "a" / "demo", num_train=24, num_val=8)
    b = ensure_demo_dataset(tmp_path / "b" / "demo", num_train=24, num_val=8)
    ja = (a / "annotations" / "instances_train.json").read_bytes()
    jb = (b / "annotations" / "instances_train.json").read_bytes()
    assert hashlib.sha256(ja).digest() == hashlib.sha256(jb).digest()
    assert digest(a) == digest(b)  # JPEGs too
    # Image i does not depend on how many images are generated.
    c = ensure_demo_dataset(tmp_path / "c" / "demo", num_train=6, num_val=2)
    assert (c / "train" / "000005.jpg").read_bytes() == (a / "train" / "000005.jpg").read_bytes()
    # Nothing temporary is left next to the dataset.
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["demo"]


def test_demo_content_is_sane(tmp_path):
    root = ensure_demo_dataset(tmp_path / "demo", num_train=64, num_val=4)
    cfg = load_dataset_config(root / "demo.yaml")
    assert cfg.train.img_dir == (root / "train").resolve()
    data = json.loads(cfg.train.ann_file.read_text())
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
    sizes = {(m["width"], m["height"]) for m in data["images"]}
    assert len(sizes) > 10 and any(w != h for w, h in sizes)  # sizes vary, not all square
    dims = {m["id"]: (m["width"], m["height"]) for m in data["images"]}
    labels = {a["category_id"] for a in data["annotations"]}
    assert labels == {1, 2, 3, 4, 5}
    ws = []
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = dims[a["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H and w >= 1 and h >= 1
        assert a["area"] <= w * h
        ws.append(max(w, h))
    assert min(ws) <= 12 and max(ws) >= 150  # small and large objects
    img = cv2.imread(str(root / "train" / data["images"][0]["file_name"]))
    assert img.shape[:2] == (data["images"][0]["height"], data["images"][0]["width"])


def test_demo_regenerates_stale_or_partial(tmp_path):
    root = tmp_path / "demo"
    ensure_demo_dataset(root, num_train=4, num_val=2)
    first = digest(root)
    (root / ".detcli-demo.json").write_text('{"version": 0}')  # outdated marker
    (root / "train" / "000000.jpg").write_bytes(b"junk")
    ensure_demo_dataset(root, num_train=4, num_val=2)
    assert digest(root) == first
    (root / ".detcli-demo.json").unlink()  # interrupted generation: no marker
    ensure_demo_dataset(root, num_train=4, num_val=2)
    assert digest(root) == first
    ensure_demo_dataset(root, num_train=5, num_val=2)  # changed sizes regenerate
    assert (root / "train" / "000004.jpg").is_file()


# ---------------------------------------------------------------------------------------------- dataset config
def test_dataset_yaml_paths_and_errors(tmp_path):
    ann_file, img_dir = write_coco(tmp_path, [("x.jpg", 20, 10)], [])
    y = tmp_path / "d.yaml"
    y.write_text("val:\n  ann_file: ann.json\n  img_dir: imgs\n")
    cfg = load_dataset_config(y)
    assert cfg.train is None and cfg.val.ann_file == ann_file.resolve() and cfg.val.img_dir == img_dir.resolve()
    assert resolve_dataset(tmp_path / "d.yaml") == cfg

    y.write_text("trian:\n  ann_file: ann.json\n  img_dir: imgs\nval:\n  ann_file: ann.json\n  img_dir: imgs\n")
    with pytest.raises(DatasetError, match=r"d\.yaml.*\n.*trian: unknown key \(did you mean 'train'\?\)"):
        load_dataset_config(y)
    y.write_text("val:\n  ann_file: nope.json\n  img_dir: imgs\n")
    with pytest.raises(DatasetError, match=r"val\.ann_file.*nope\.json does not exist"):
        load_dataset_config(y)
    y.write_text("train:\n  ann_file: ann.json\n  img_dir: imgs\n")
    with pytest.raises(DatasetError, match=r"val: Field required"):
        load_dataset_config(y)
    y.write_text("val: [unclosed\n")
    with pytest.raises(DatasetError, match=r"d\.yaml: invalid YAML at line"):
        load_dataset_config(y)


def test_resolve_demo_uses_detcli_home(tmp_path, monkeypatch):
    monkeypatch.setenv("DETCLI_HOME", str(tmp_path))
    cfg = resolve_dataset("demo")
    assert cfg.train.ann_file == (tmp_path / "demo-v1" / "annotations" / "instances_train.json").resolve()
    ds = CocoDetection(cfg.val.ann_file, cfg.val.img_dir, None, filter_empty=False)
    assert len(ds) == 128 and ds.num_classes == 5


def test_from_coco_root(tmp_path):
    (tmp_path / "annotations").mkdir()
    write_coco(tmp_path, [("x.jpg", 20, 10)], [], name="annotations/instances_val2017.json")
    (tmp_path / "imgs").rename(tmp_path / "val2017")
    cfg = DatasetConfig.from_coco_root(tmp_path)
    assert cfg.train is None and cfg.val.img_dir.name == "val2017"


# ---------------------------------------------------------------------------------------------- COCO reading
def test_labels_boxes_and_crowd(tmp_path, capsys):
    cats = [{"id": 7, "name": "seven"}, {"id": 3, "name": "three"}]
    anns = [ann(1, 1, [10, 20, 30, 40], cat=7), ann(2, 1, [0, 0, 5, 5], cat=3), ann(3, 1, [1, 1, 9, 9], iscrowd=1)]
    anns[2]["category_id"] = 3
    f, d = write_coco(tmp_path, [("a.jpg", 64, 80)], anns, cats)
    ds = CocoDetection(f, d, transform=None, filter_empty=False)
    assert ds.class_names == ["three", "seven"] and ds.cat_ids == [3, 7]
    s = ds[0]
    assert torch.equal(s["boxes"], torch.tensor([[10.0, 20, 40, 60], [0, 0, 5, 5]]))
    assert s["labels"].tolist() == [1, 0] and s["labels"].dtype == torch.int64
    assert s["img"].shape == (3, 80, 64) and s["meta"].ori_shape == (80, 64)
    assert ds.summary().dropped["crowd"] == 1
    assert ds.summary().per_class == {"three": 1, "seven": 1}
    capsys.readouterr()
    assert len(ds.coco.getAnnIds()) == 3  # eval GT keeps crowd boxes
    assert capsys.readouterr().out == ""  # pycocotools' prints are swallowed


def test_invalid_boxes_are_counted_drops(tmp_path):
    anns = [
        ann(1, 1, [1, 1, 10, 10]),  # kept
        ann(2, 1, [1, 2, 3]),  # wrong length
        ann(3, 1, [1, 1, -4, 5]),  # negative size
        ann(4, 1, [100, 5, 10, 10]),  # right of the 50-px-wide image
        ann(5, 1, [1, 1, 0.5, 9]),  # thinner than 1 px
        ann(6, 1, [1, 1, 4, 4], area=0),  # area 0 (nanodet checks the field)
        ann(7, 1, [float("nan"), 1, 4, 4]),  # NaN
        ann(8, 1, "1,2,3,4"),  # not a list
    ]
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40)], anns)
    ds = CocoDetection(f, d, transform=None, filter_empty=False)
    s = ds.summary()
    assert s.dropped == {"malformed_bbox": 3, "non_positive_area": 2, "smaller_than_1px": 1,
                         "outside_image": 1, "crowd": 0}
    assert s.dropped_examples["malformed_bbox"] == [2, 7, 8]
    assert s.dropped_examples["non_positive_area"] == [3, 6]  # w·h < 0 fails the area check first
    assert s.instances == 1 and ds[0]["boxes"].tolist() == [[1, 1, 11, 11]]
    assert any("malformed bbox" in p for p in s.problems())


def test_box_drop_reasons_first_check_wins():
    xywh = np.array([[0, 0, 5, 5], [np.nan] * 4, [0, 0, 0.5, 5], [60, 0, 5, 5], [0, 0, 5, 5], [-10, 0, 10, 5]])
    area = np.array([25, 0, 2.5, 25, 25, 50.0])
    crowd = np.array([0, 0, 0, 0, 1, 0], dtype=bool)
    r = box_drop_reasons(xywh, area, crowd, np.full(6, 50.0), np.full(6, 50.0))
    names = ["keep", *DROP_REASONS]
    assert [names[k] for k in r] == ["keep", "malformed_bbox", "smaller_than_1px", "outside_image", "crowd",
                                     "outside_image"]


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"images": [}', r"ann\.json: invalid JSON at line 1, column 13"),
        ('{"annotations": [], "categories": []}', r"ann\.json: missing the 'images' key"),
        ('[1, 2]', r"ann\.json: expected a JSON object"),
        ('{"images": {}, "annotations": [], "categories": []}', r"'images' must be a list"),
    ],
)
def test_malformed_json_raises(tmp_path, content, message):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "ann.json").write_text(content)
    with pytest.raises(DatasetError, match=message):
        CocoDetection(tmp_path / "ann.json", tmp_path / "imgs", None, filter_empty=False)


def test_structural_errors_name_the_entry(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40)], [ann(1, 1, [1, 1, 5, 5]), ann(2, 1, [1, 1, 5, 5], cat=9)])
    with pytest.raises(DatasetError, match=r"ann\.json: annotations\[1\] \(id 2\): category_id is not among"):
        CocoDetection(f, d, None, filter_empty=False)
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40)], [ann(1, 5, [1, 1, 5, 5])])
    with pytest.raises(DatasetError, match=r"annotations\[0\] \(id 1\): image_id is not among the images"):
        CocoDetection(f, d, None, filter_empty=False)
    data = json.loads(f.read_text())
    data["images"][0]["id"] = "1"
    f.write_text(json.dumps(data))
    with pytest.raises(DatasetError, match=r"images\[0\] \(id '1'\): needs an integer 'id'"):
        CocoDetection(f, d, None, filter_empty=False)
    with pytest.raises(DatasetError, match=r"annotation file .*missing\.json does not exist"):
        CocoDetection(tmp_path / "missing.json", d, None, filter_empty=False)
    f.write_text(json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}))
    with pytest.raises(DatasetError, match=r"ann\.json: 'images' is empty"):
        CocoDetection(f, d, None, filter_empty=False)


def test_empty_annotation_list(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 30, 30)], [])
    ds = CocoDetection(f, d, None, filter_empty=False)  # NanoDet keeps empty images
    assert len(ds) == 2 and ds.summary().instances == 0 and ds.summary().empty_images == 2
    assert ds[1]["boxes"].shape == (0, 4) and ds[1]["labels"].shape == (0,)
    assert "no training targets at all" in ds.summary().problems()
    with pytest.raises(DatasetError, match=r"ann\.json: no image left after filtering.*2 without valid boxes"):
        CocoDetection(f, d, None, filter_empty=True)


def test_filters_and_min_size(tmp_path):
    anns = [ann(1, 1, [1, 1, 5, 5]), ann(2, 2, [1, 1, 5, 5])]
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 20, 30), ("c.jpg", 40, 40)], anns)
    ds = CocoDetection(f, d, None, filter_empty=True, min_size=32)
    assert ds.image_ids == [1]
    s = ds.summary()
    assert (s.filtered_small, s.filtered_empty, s.images_kept) == (1, 1, 1)


def test_missing_image_files(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 50, 40), ("c.jpg", 50, 40)], [])
    (d / "b.jpg").unlink()
    ds = CocoDetection(f, d, None, filter_empty=False)
    assert ds.image_ids == [1, 3]
    assert ds.summary().missing_images == 1 and ds.summary().missing_examples == ["b.jpg"]
    for p in d.iterdir():
        p.unlink()
    with pytest.raises(DatasetError, match=r"none of the 3 images listed in .*ann\.json exists under .*imgs"):
        CocoDetection(f, d, None, filter_empty=False)


def test_corrupt_image_is_skipped_with_warning(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 60, 40), ("c.jpg", 70, 40)], [])
    data = (d / "b.jpg").read_bytes()
    assert not looks_truncated(d / "b.jpg")
    (d / "b.jpg").write_bytes(data[: len(data) // 2])
    assert looks_truncated(d / "b.jpg")
    ds = CocoDetection(f, d, None, filter_empty=False)
    with pytest.warns(DatasetWarning, match=r"b\.jpg"):
        s = ds[1]
    assert s["meta"].file_name.endswith("c.jpg") and s["meta"].image_id == 3  # the next readable image
    assert ds.corrupt == ["b.jpg"] and ds.summary().corrupt_images == ["b.jpg"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # warned once: the second time is silent
        assert ds[1]["meta"].image_id == 3
    strict = CocoDetection(f, d, None, filter_empty=False, unreadable="raise")
    with pytest.warns(DatasetWarning), pytest.raises(DatasetError, match=r"cannot read image .*b\.jpg"):
        strict[1]
    (d / "a.jpg").write_bytes(b"not an image at all")  # undecodable, not just truncated
    with pytest.warns(DatasetWarning, match=r"a\.jpg"):
        assert ds[0]["meta"].image_id == 3


def test_fingerprint_follows_the_file(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40)], [ann(1, 1, [1, 1, 5, 5])])
    fp = CocoDetection(f, d, None, filter_empty=False).fingerprint()
    assert fp == CocoDetection(f, d, None, filter_empty=False).fingerprint() and len(fp) == 16
    f.write_text(f.read_text().replace("[1, 1, 5, 5]", "[1, 1, 6, 5]"))
    assert CocoDetection(f, d, None, filter_empty=False).fingerprint() != fp


# ---------------------------------------------------------------------------------------------- NanoDet transform
def test_val_is_stretch_resize_and_bgr_normalisation():
    img = np.empty((40, 25, 3), dtype=np.uint8)
    img[..., 0], img[..., 1], img[..., 2] = 10, 100, 200  # B, G, R
    t = NanoDetTransform((50, 80), train=False)  # (w, h): ×2 in x and y
    out = t(img, np.array([[2, 4, 10, 20]], np.float32), np.array([3]))
    np.testing.assert_array_equal(out["warp_matrix"], np.diag([2.0, 2.0, 1.0]))
    assert out["img_shape"] == (80, 50) and out["img"].shape == (3, 80, 50)
    assert out["boxes"].tolist() == [[4, 8, 20, 40]] and out["labels"].tolist() == [3]
    expect = (np.array([10, 100, 200]) - MEAN) / STD
    inner = out["img"][:, :78, :48].reshape(3, -1)  # away from the last row/column (border blend)
    np.testing.assert_allclose(inner.numpy(), np.repeat(expect[:, None], inner.shape[1], 1), atol=1e-5)

    # Non-uniform ratios: a 30×60 image to (w=60, h=30) → diag(2, 0.5).
    rng = np.random.default_rng(1)
    img2 = rng.integers(0, 256, size=(60, 30, 3), dtype=np.uint8)
    out2 = NanoDetTransform((60, 30), train=False)(img2, np.array([[3, 10, 9, 50]], np.float32), np.array([0]))
    np.testing.assert_array_equal(out2["warp_matrix"], np.diag([2.0, 0.5, 1.0]))
    assert out2["boxes"].tolist() == [[6, 5, 18, 25]]
    # Exact 2× upscale: even output pixels sample source pixels exactly.
    big = NanoDetTransform((60, 120), train=False)(img2, np.zeros((0, 4), np.float32), np.zeros(0))
    restored = big["img"].numpy()[:, ::2, ::2] * STD[:, None, None] + MEAN[:, None, None]
    np.testing.assert_allclose(restored, img2.transpose(2, 0, 1).astype(np.float64), atol=1e-3)


def identity_aug(**kw):
    base = dict(scale=(1, 1), stretch=((1, 1), (1, 1)), flip=0.0, translate=0.0, brightness=0.0,
                contrast=(1, 1), saturation=(1, 1))
    base.update(kw)
    return base


def test_flip_hand_checked():
    img = np.arange(6 * 8 * 3, dtype=np.uint8).reshape(6, 8, 3) + 1
    t = NanoDetTransform((8, 6), train=True, **identity_aug(flip=1.0))
    out = t(img, np.array([[1, 1, 3, 4]], np.float32), np.array([0]), np.random.default_rng(0))
    # M = T·F·C with C = −centre, F = diag(−1, 1), T = +centre: x → 8 − x (the official matrix, no −1).
    np.testing.assert_allclose(out["warp_matrix"], [[-1, 0, 8], [0, 1, 0], [0, 0, 1]])
    assert out["boxes"].tolist() == [[5, 1, 7, 4]]
    pix = out["img"].numpy() * STD[:, None, None] + MEAN[:, None, None]
    src = img.transpose(2, 0, 1).astype(np.float64)
    np.testing.assert_allclose(pix[:, :, 1:], src[:, :, :0:-1], atol=1e-3)  # dst column j = src column 8 − j
    np.testing.assert_allclose(pix[:, :, 0], 0, atol=1e-3)  # column 0 samples x = 8: the zero border


def test_train_boxes_stay_inside_and_centre_translation():
    rng0 = np.random.default_rng(5)
    img = rng0.integers(0, 256, size=(90, 140, 3), dtype=np.uint8)
    boxes = np.array([[0, 0, 140, 90], [100, 50, 139, 89], [5, 5, 30, 20]], np.float32)
    t = NanoDetTransform((64, 48), train=True)
    for seed in range(30):
        out = t(img, boxes, np.array([0, 1, 2]), np.random.default_rng(seed))
        b = out["boxes"]
        assert b.shape == (3, 4) and out["img"].shape == (3, 48, 64)
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= 64).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= 48).all()
        assert (b[:, 2] >= b[:, 0]).all() and (b[:, 3] >= b[:, 1]).all()
        # The image centre lands at U(0.3, 0.7) of the input size (translate 0.2).
        c = out["warp_matrix"] @ np.array([70, 45, 1.0])
        assert 0.3 * 64 - 1e-9 <= c[0] / c[2] <= 0.7 * 64 + 1e-9 and 0.3 * 48 - 1e-9 <= c[1] / c[2] <= 0.7 * 48 + 1e-9
    # Without translation the centre is fixed and the whole box warps by the matrix (scale about the centre).
    t2 = NanoDetTransform((140, 90), train=True, **identity_aug(scale=(0.5, 0.5)))
    out = t2(img, boxes[:1], np.array([0]), np.random.default_rng(0))
    np.testing.assert_allclose(out["boxes"].numpy(), [[35, 22.5, 105, 67.5]])


def test_train_is_reproducible_from_the_rng():
    img = np.random.default_rng(0).integers(0, 256, size=(50, 60, 3), dtype=np.uint8)
    boxes, labels = np.array([[5, 5, 30, 40]], np.float32), np.array([1])
    t = NanoDetTransform((32, 32), train=True)
    a = t(img, boxes, labels, np.random.default_rng(11))
    b = t(img, boxes, labels, np.random.default_rng(11))
    c = t(img, boxes, labels, np.random.default_rng(12))
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["boxes"], b["boxes"])
    assert not torch.equal(a["img"], c["img"])


def test_normalize_chw_equals_the_shared_normalize_bit_for_bit():
    img = np.random.default_rng(0).normal(0.5, 0.4, (37, 53, 3)).astype(np.float32)  # a jittered img / 255
    mean, std = [v / 255 for v in MEAN], [v / 255 for v in STD]
    out = normalize_chw(img, mean, std)
    assert out.shape == (3, 37, 53) and out.dtype == torch.float32 and out.is_contiguous()
    assert torch.equal(out, to_chw_tensor(normalize(img, mean, std)))
    # hand-checked on one pixel of each channel: (x - mean) / std in float32
    c0 = (np.float32(img[4, 7, 0]) - np.float32(mean[0])) / np.float32(std[0])
    assert out[0, 4, 7].item() == c0


def test_transform_output_is_float32_arithmetic_on_img_over_255():
    """The (3, h, w) image is ``((img / 255 [jittered]) − mean / 255) / (std / 255)`` in float32, as color.py."""
    img = np.random.default_rng(3).integers(0, 256, size=(64, 48, 3), dtype=np.uint8)
    t = NanoDetTransform((48, 64), train=False)  # identity warp: the output samples the pixels exactly
    out = t(img, np.zeros((0, 4), np.float32), np.zeros(0))
    img01 = img.astype(np.float32) / 255
    expected = (img01 - np.float32(MEAN) / 255) / (np.float32(STD) / 255)  # float32 divisions, as color.py
    assert torch.equal(out["img"], torch.from_numpy(np.ascontiguousarray(expected.transpose(2, 0, 1))))


def test_color_jitter_brightness_is_a_uniform_shift_and_grey_ignores_saturation():
    grey = np.full((4, 5, 3), 0.5, np.float32)
    shifts = set()
    for seed in range(20):
        out = color_jitter(grey, np.random.default_rng(seed), brightness=0.2, contrast=(1, 1), saturation=(1, 1))
        d = out - grey
        assert np.ptp(d) < 1e-6 and abs(float(d[0, 0, 0])) <= 0.2 + 1e-6
        shifts.add(round(float(d[0, 0, 0]), 6))
    assert 0.0 in shifts and len(shifts) > 3  # applied about half the time
    out = color_jitter(grey, np.random.default_rng(0), brightness=0.0, contrast=(1, 1), saturation=(0.1, 0.1))
    np.testing.assert_allclose(out, grey, atol=1e-6)


# ---------------------------------------------------------------------------------------------- geometry, collate
@pytest.mark.parametrize("as_tensor", [False, True])
def test_inverse_warp_round_trip(as_tensor):
    m = np.array([[-0.8, 0.0, 300.0], [0.0, 1.25, -10.0], [0.0, 0.0, 1.0]])  # flip + scale + translate
    boxes = np.array([[10, 20, 100, 120], [150, 30, 199, 90]], np.float32)
    warped = warp_boxes(boxes, m, 1000, 1000)
    np.testing.assert_allclose(warped, [[220, 15, 292, 140], [140.8, 27.5, 180, 102.5]], rtol=1e-6)
    x = torch.from_numpy(warped) if as_tensor else warped
    back = inverse_warp_boxes(x, m, ori_shape=(200, 200))
    assert type(back) is type(x)
    np.testing.assert_allclose(np.asarray(back), boxes, atol=1e-4)
    # A prediction hanging outside the original image is clipped to it.
    out = inverse_warp_boxes(np.array([[0.0, 0, 400, 400]]), m, ori_shape=(100, 120))
    np.testing.assert_allclose(out, [[0, 8, 120, 100]])
    empty = inverse_warp_boxes(torch.zeros(0, 4), m, (10, 10))
    assert empty.shape == (0, 4)


def test_collate_pads_to_multiple_of_32_with_zeros():
    from detcli.structures import ImageMeta

    def sample(h, w, g):
        meta = ImageMeta(0, "x", (h, w), (h, w), np.eye(3).tolist())
        return {"img": torch.ones(3, h, w), "boxes": torch.ones(g, 4), "labels": torch.zeros(g, dtype=torch.int64),
                "meta": meta}

    batch = collate([sample(50, 70, 2), sample(64, 33, 0)])
    assert batch.images.shape == (2, 3, 64, 96)
    assert batch.images[0, :, :50, :70].eq(1).all() and batch.images[0, :, 50:].eq(0).all()
    assert batch.images[0, :, :, 70:].eq(0).all() and batch.images[1, :, :, 33:].eq(0).all()
    assert batch.images[1, :, :, :33].eq(1).all()
    assert [t.boxes.shape[0] for t in batch.targets] == [2, 0] and batch.metas[1].img_shape == (64, 33)
    assert collate([sample(64, 64, 1)]).images.shape == (1, 3, 64, 64)


# ---------------------------------------------------------------------------------------------- loader
def _loader_batches(ds, workers, seed):
    torch.manual_seed(seed)
    dl = build_dataloader(ds, batch_size=2, workers=workers, shuffle=True, drop_last=True, seed=seed,
                          distributed=False, collate_fn=functools.partial(collate, size_divisor=32))
    return [(b.images.clone(), [m.image_id for m in b.metas]) for _ in range(2) for b in dl]


@pytest.mark.parametrize("workers", [0, 1])
def test_loader_is_reproducible(tmp_path, workers):
    root = ensure_demo_dataset(tmp_path / "demo", num_train=6, num_val=1)
    ds = CocoDetection(root / "annotations/instances_train.json", root / "train",
                       NanoDetTransform((64, 64), train=True), filter_empty=False)
    a = _loader_batches(ds, workers, seed=3)
    ds2 = CocoDetection(root / "annotations/instances_train.json", root / "train",
                        NanoDetTransform((64, 64), train=True), filter_empty=False)
    b = _loader_batches(ds2, workers, seed=3)
    assert len(a) == 6  # 2 epochs × 3 batches
    for (ia, ida), (ib, idb) in zip(a, b):
        assert ida == idb and torch.equal(ia, ib)
    # Epoch 2 does not replay epoch 1's augmentation for the same image.
    first = {i: img for img, ids in a[:3] for i, img in zip(ids, img)}
    second = {i: img for img, ids in a[3:] for i, img in zip(ids, img)}
    assert all(not torch.equal(first[i], second[i]) for i in first)


# ---------------------------------------------------------------------------------------------- parity (opt-in)
NANODET_REPO = Path(os.environ.get("NANODET_REPO", "/nonexistent"))  # an official checkout, opt-in


def _load_official(name: str):
    spec = importlib.util.spec_from_file_location(f"_official_{name}", NANODET_REPO / f"nanodet/data/transform/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _ReplayRandom:
    """Stands in for the ``random`` module of the official code, replaying the draws our transform makes."""

    def __init__(self, rng: np.random.Generator, color: bool = False):
        self.rng = rng
        self.values = None
        if color:  # ours draws 3 gates, then the brightness, contrast and saturation values
            self.gates = list(rng.random(3) < 0.5)
            self.values = [rng.uniform(-0.2, 0.2), rng.uniform(0.6, 1.4), rng.uniform(0.5, 1.2)]
            self.op = -1

    def uniform(self, a, b):
        return self.rng.uniform(a, b) if self.values is None else self.values[self.op]

    def random(self):
        return self.rng.random()

    def randint(self, a, b):  # the colour gates, one per op in order
        self.op += 1
        return int(self.gates[self.op])


@pytest.mark.parity
@pytest.mark.skipif(not (NANODET_REPO / "nanodet/data/transform/warp.py").is_file(), reason="set NANODET_REPO to an official nanodet checkout")
def test_parity_with_official_shape_transform_and_color():
    warp, color = _load_official("warp"), _load_official("color")
    cfg = dict(perspective=0.0005, scale=(0.6, 1.4), stretch=((0.8, 1.2), (0.8, 1.2)), rotation=10, shear=4,
               translate=0.2, flip=0.5)
    ours = NanoDetTransform((96, 64), train=True, **cfg)
    img = np.random.default_rng(0).integers(0, 256, size=(70, 110, 3), dtype=np.uint8)
    boxes = np.array([[5, 6, 50, 60], [60, 10, 109, 69]], np.float32)
    norm = [[103.53, 116.28, 123.675], [57.375, 57.12, 58.395]]
    flips = set()
    for seed in range(8):
        warp.random = _ReplayRandom(np.random.default_rng(seed))
        meta = warp.ShapeTransform(False, **cfg)({"img": img.copy(), "gt_bboxes": boxes.copy()}, (96, 64))
        out = ours(img, boxes, np.array([0, 1]), np.random.default_rng(seed))
        np.testing.assert_allclose(out["warp_matrix"], meta["warp_matrix"], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(out["boxes"].numpy(), meta["gt_bboxes"], atol=1e-4)
        flips.add(bool(out["warp_matrix"][0, 0] < 0))
        # Colour: the official code on its own warped image, fed the colour draws ours makes after the shape ones.
        rng = np.random.default_rng(seed)
        ours.warp_matrix(110, 70, rng)
        color.random = _ReplayRandom(rng, color=True)
        official = color.color_aug_and_norm(
            {"img": meta["img"]}, dict(brightness=0.2, contrast=[0.6, 1.4], saturation=[0.5, 1.2], normalize=norm)
        )["img"]
        np.testing.assert_allclose(out["img"].numpy().transpose(1, 2, 0), official, atol=1e-4)
    assert flips == {True, False}
