"""YOLO and Pascal VOC datasets through ``--data``: the demo data written in both layouts reads back with the
COCO copy's counts and boxes, scores the same under COCO evaluation, trains and evaluates through the CLI;
broken files are named in the message."""
from __future__ import annotations

import json
import subprocess
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.data.build import dataset_for_split
from detcli.data.coco import DatasetWarning
from detcli.data.convert import coco_to_voc, coco_to_yolo
from detcli.data.dataset_config import DatasetConfig, Split, VocSplit, YoloSplit, resolve_dataset
from detcli.data.demo import ensure_demo_dataset
from detcli.data.image_size import image_size
from detcli.data.voc import VOC_CLASSES
from detcli.errors import DatasetError
from detcli.evaluation.evaluator import CocoEvaluator
from detcli.structures import Detections
from tests.support.cli_subprocess import run_cli_forked
from tests.support.voc_yolo_files import voc_root, voc_xml, yolo_root

ALL_AREA = ("AP50-95", "AP50", "AP75", "AR1", "AR10", "AR100")  # the stats that do not read the GT ``area``


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    """The demo data (16 train / 8 val images) as COCO, YOLO and VOC: format → what ``--data`` is given."""
    base = tmp_path_factory.mktemp("formats")
    coco = ensure_demo_dataset(base / "coco", num_train=16, num_val=8) / "demo.yaml"
    yolo, voc = coco_to_yolo(coco, base / "yolo"), coco_to_voc(coco, base / "voc")
    return {"coco": coco, "yolo": yolo.parent, "voc": voc.parent}


def datasets(spec) -> dict[str, object]:
    cfg = resolve_dataset(spec)
    return {k: dataset_for_split(getattr(cfg, k), None, filter_empty=False) for k in ("train", "val")}


def by_stem(ds) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Image file stem (without the VOC split prefix) → (boxes, labels) of the dataset's targets."""
    out = {}
    for i in range(len(ds)):
        stem = Path(ds.image_info(i)["file_name"]).stem.split("_")[-1]
        out[stem] = ds.annotation(i)
    return out


# ---------------------------------------------------------------------------------------------- counts, boxes
@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_converted_demo_has_the_coco_counts_and_boxes(copies, fmt):
    coco, other = datasets(copies["coco"]), datasets(copies[fmt])
    assert coco["train"].summary().empty_images >= 1  # background images are part of the comparison
    for split in ("train", "val"):
        a, b = coco[split].summary(), other[split].summary()
        assert (b.images, b.images_kept, b.instances, b.empty_images) == (a.images, a.images_kept, a.instances,
                                                                          a.empty_images)
        assert b.per_class == a.per_class and b.dropped == a.dropped and a.instances > 20
        assert other[split].class_names == coco[split].class_names
        boxes_a, boxes_b = by_stem(coco[split]), by_stem(other[split])
        assert boxes_a.keys() == boxes_b.keys()
        for stem, (box, label) in boxes_a.items():
            np.testing.assert_allclose(boxes_b[stem][0], box, atol=1e-4)  # float32 boxes
            assert boxes_b[stem][1].tolist() == label.tolist()
    assert other["val"].cat_ids == [1, 2, 3, 4, 5]  # class k → category id k + 1
    yaml = copies[fmt] / "data.yaml"
    assert resolve_dataset(yaml) == resolve_dataset(copies[fmt]) and resolve_dataset(yaml).format == fmt


def test_the_record_in_a_checkpoint_finds_the_same_data(copies):
    for fmt in ("coco", "yolo", "voc"):
        cfg = resolve_dataset(copies[fmt])
        stored = json.loads(json.dumps(cfg.model_dump(mode="json")))  # what train's dataset_info keeps
        assert DatasetConfig.model_validate(stored) == cfg and stored["val"]["format"] == fmt
    old = {"val": {"ann_file": "a.json", "img_dir": "imgs"}}  # recorded before formats existed: COCO
    assert isinstance(DatasetConfig.model_validate(old).val, Split)
    assert isinstance(resolve_dataset(copies["yolo"]).val, YoloSplit)
    assert isinstance(resolve_dataset(copies["voc"]).val, VocSplit)


# ---------------------------------------------------------------------------------------------- evaluation
def fake_detections(ds, seed: int = 0) -> dict[str, Detections]:
    """Per image stem: every target shifted by a few pixels with a random score, plus two random boxes."""
    rng = np.random.default_rng(seed)
    out = {}
    for stem, (boxes, labels) in sorted(by_stem(ds).items()):
        shifted = boxes + rng.uniform(-4, 4, size=boxes.shape)
        noise = rng.uniform(0, 200, size=(2, 2))
        extra = np.concatenate([noise, noise + rng.uniform(10, 80, size=(2, 2))], axis=1)
        out[stem] = Detections(
            torch.as_tensor(np.concatenate([shifted, extra]), dtype=torch.float32),
            torch.as_tensor(rng.uniform(0.05, 1, size=len(boxes) + 2), dtype=torch.float32),
            torch.as_tensor(np.concatenate([labels, rng.integers(0, 5, size=2)]), dtype=torch.int64),
        )
    return out


def score(ds, dets: dict[str, Detections], area_from_box: bool = False):
    coco = ds.coco
    if area_from_box:  # COCO's 'area' of the demo is the shape's pixel count; YOLO/VOC only know w·h
        for a in coco.dataset["annotations"]:
            a["area"] = a["bbox"][2] * a["bbox"][3]
        coco.createIndex()
    ev = CocoEvaluator(coco, ds.cat_ids, ds.class_names)
    for i in range(len(ds)):
        ev.add(ds.image_info(i)["id"], dets[Path(ds.image_info(i)["file_name"]).stem.split("_")[-1]])
    return ev.evaluate()


@pytest.mark.parametrize("fmt", ["yolo", "voc"])
def test_coco_evaluation_scores_every_copy_the_same(copies, fmt):
    coco, other = datasets(copies["coco"])["val"], datasets(copies[fmt])["val"]
    dets = fake_detections(coco)
    a, b = score(coco, dets), score(other, dets)
    assert 0.2 < a.stats["AP50-95"] < 0.95  # not a trivial 0 or 1
    assert {k: b.stats[k] for k in ALL_AREA} == {k: a.stats[k] for k in ALL_AREA}
    assert [(c.name, c.instances, c.ap) for c in b.per_class] == [(c.name, c.instances, c.ap) for c in a.per_class]
    # the small/medium/large numbers differ only through the GT area: with COCO's area set to w·h all 12 agree
    assert score(coco, dets, area_from_box=True).raw_stats == b.raw_stats


def test_voc_difficult_objects_are_neither_targets_nor_misses(tmp_path):
    objects = [("dog", 0, 1, 1, 10, 20), ("dog", 1, 21, 5, 38, 25)]
    root = voc_root(tmp_path / "VOC", {"a": objects}, {"train": ["a"], "val": ["a"]})
    ds = datasets(root)["val"]
    boxes, labels = ds.annotation(0)
    assert boxes.tolist() == [[0, 0, 10, 20]]  # 1-based inclusive → pixel edges (detectron2's reading)
    assert ds.summary().dropped["crowd"] == 1 and ds.summary().instances == 1
    cls = VOC_CLASSES.index("dog")
    assert ds.class_names == list(VOC_CLASSES)  # names found are VOC classes: the 20 in VOC order

    def ap(rows):
        ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names)
        ev.add(1, Detections(torch.tensor([r[:4] for r in rows], dtype=torch.float32),
                             torch.tensor([r[4] for r in rows]), torch.full((len(rows),), cls)))
        return ev.evaluate().stats["AP50"]

    assert ap([(0, 0, 10, 20, 0.9)]) == pytest.approx(1.0)
    assert ap([(0, 0, 10, 20, 0.5), (20, 4, 38, 25, 0.9)]) == pytest.approx(1.0)  # on the difficult one: ignored
    assert ap([(0, 0, 10, 20, 0.5), (1, 1, 5, 5, 0.9)]) < 0.6  # elsewhere: a false positive


# ---------------------------------------------------------------------------------------------- YOLO forms
def test_yolo_forms_users_rely_on(tmp_path):
    labels = {
        "box": "0 0.5 0.5 0.5 0.5\n",
        "poly": "1 0.1 0.2 0.6 0.2 0.4 0.8\n\n",  # a segment line: its bounding box
        "empty": "",  # an empty file: background
        "none": None,  # no file: background
    }
    yaml = yolo_root(tmp_path / "ds", labels, names="{0: a, 1: b}")
    ds = datasets(yaml)["val"]
    got = {Path(ds.image_info(i)["file_name"]).stem: ds.annotation(i) for i in range(len(ds))}
    assert got["box"][0].tolist() == [[10, 7.5, 30, 22.5]] and got["box"][1].tolist() == [0]
    np.testing.assert_allclose(got["poly"][0], [[4, 6, 24, 24]], rtol=1e-6)
    assert got["poly"][1].tolist() == [1] and len(got["empty"][0]) == len(got["none"][0]) == 0
    assert ds.summary().empty_images == 2 and ds.class_names == ["a", "b"] and ds.cat_ids == [1, 2]

    # `path` relative to the YAML; train as a list of folders; val as a .txt list of images
    (tmp_path / "ds" / "val.txt").write_text("./images/val/box.jpg\nimages/val/poly.jpg\n")
    other = tmp_path / "elsewhere" / "d.yaml"
    other.parent.mkdir()
    other.write_text("path: ../ds\ntrain: [images/train, images/val]\nval: val.txt\nnames: [a, b]\n")
    both = datasets(other)
    assert len(both["train"]) == 8 and len(both["val"]) == 2
    assert {Path(both["val"].image_info(i)["file_name"]).stem for i in range(2)} == {"box", "poly"}


def test_image_size_reads_headers_and_the_exif_rotation(tmp_path):
    img = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    for ext in (".jpg", ".png", ".bmp", ".webp", ".tif"):
        cv2.imwrite(str(tmp_path / f"x{ext}"), img)
        assert image_size(tmp_path / f"x{ext}") == (53, 37), ext
    # a JPEG with EXIF orientation 6 (turned 90°): cv2.imread turns it, and so does the size
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\0" * 4
    app1 = b"Exif\x00\x00" + tiff
    jpg = (tmp_path / "x.jpg").read_bytes()
    (tmp_path / "r.jpg").write_bytes(jpg[:2] + b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1 + jpg[2:])
    h, w = cv2.imread(str(tmp_path / "r.jpg")).shape[:2]
    assert (w, h) == (37, 53) and image_size(tmp_path / "r.jpg") == (37, 53)
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00")
    assert image_size(tmp_path / "bad.jpg") is None


# ---------------------------------------------------------------------------------------------- VOC forms
def test_voc_roots_sets_and_names(tmp_path):
    v07 = voc_root(tmp_path / "VOCdevkit" / "VOC2007", {"1": [("cat", 0, 1, 1, 9, 9)], "2": [("dog", 0, 2, 2, 8, 8)]},
                   {"trainval": ["1"], "test": ["2"], "train": ["1"], "val": ["1"]})
    voc_root(tmp_path / "VOCdevkit" / "VOC2012", {"2008_1": [("zebra", 0, 1, 1, 9, 9)]}, {"trainval": ["2008_1"]})
    bare = resolve_dataset(v07)  # a root alone: trainval / test when test.txt exists
    assert [p.name for p in bare.train.image_sets] == ["trainval.txt"] and bare.val.image_sets[0].name == "test.txt"
    assert bare.val.names == list(VOC_CLASSES)

    y = tmp_path / "voc0712.yaml"
    y.write_text("format: voc\npath: VOCdevkit\ntrain: [VOC2007/ImageSets/Main/trainval.txt, "
                 "VOC2012/ImageSets/Main/trainval.txt]\nval: VOC2007/ImageSets/Main/test.txt\n")
    cfg = resolve_dataset(y)
    assert cfg.val.names == ["cat", "dog", "zebra"]  # not all VOC classes: the names found, sorted
    train = dataset_for_split(cfg.train, None, filter_empty=False)
    assert sorted(train.image_info(i)["file_name"] for i in range(len(train))) == [
        "VOC2007/JPEGImages/1.jpg", "VOC2012/JPEGImages/2008_1.jpg"]

    y.write_text(f"path: {v07}\ntrain: train\nval: val\nnames: [dog, cat]\n")  # detected from the root
    cfg = resolve_dataset(y)
    assert cfg.format == "voc" and cfg.val.names == ["dog", "cat"]
    assert dataset_for_split(cfg.val, None, filter_empty=False).annotation(0)[1].tolist() == [1]

    with pytest.raises(DatasetError, match=r"holds the Pascal VOC roots VOC2007, VOC2012; give one of them"):
        resolve_dataset(tmp_path / "VOCdevkit")
    y.write_text(f"path: {v07}\ntrain: trianval\nval: val\n")
    with pytest.raises(DatasetError, match=r"train: image set file .*trianval\.txt does not exist \(image sets "
                                           r"there: test, train, trainval, val\)"):
        resolve_dataset(y)


# ---------------------------------------------------------------------------------------------- broken files
@pytest.mark.parametrize("text, expected", [
    ("0 0.5 0.5 0.2 0.2\n1 0.5 0.5 0.2\n", r"label file .*bad\.txt, line 2: expected 5 values \(class cx cy w h\)"),
    ("0 0.5 0.5 0.2 0.2\n\n0 0.5 x 0.2 0.2\n", r"label file .*bad\.txt, line 3: 'x' is not a number"),
    ("7 0.5 0.5 0.2 0.2\n", r"label file .*bad\.txt, line 1: class index 7 is out of range: .*data\.yaml has 2 "
                            r"names \(indices 0\.\.1\)"),
    ("-1 0.5 0.5 0.2 0.2\n", r"line 1: class index -1 is out of range"),
    ("0.5 0.5 0.5 0.2 0.2\n", r"line 1: class index '0\.5' is not a whole number"),
    ("0 120 80 30 20\n", r"line 1: coordinate 120 is outside 0\.\.1; YOLO labels are fractions"),
    ("0 0.5 0.5 0.2 0.2 0.93\n", r"got 6 \(a 6th value: a prediction file with confidences\?\)"),
])
def test_broken_yolo_labels_name_file_and_line(tmp_path, text, expected):
    yaml = yolo_root(tmp_path, {"ok": "0 0.5 0.5 0.2 0.2\n", "bad": text})
    with pytest.raises(DatasetError, match=expected):
        datasets(yaml)


def test_a_yolo_folder_without_its_yaml_says_what_to_write(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    yaml.unlink()
    with pytest.raises(DatasetError, match=r"images/ and labels/ look like a YOLO dataset, but there is no data\.yaml"):
        resolve_dataset(tmp_path / "ds")


@pytest.mark.parametrize("names, extra, expected", [
    (None, "", r"data\.yaml: no 'names': a YOLO data\.yaml lists the class names"),
    ("{0: a, 2: b}", "", r"names: class indices must run 0\.\.1 without gaps \(missing \[1\]\)"),
    ("[a, b]", "nc: 3\n", r"nc is 3 but names has 2 entries"),
    ("[a, b]", "path: nowhere\n", r"path 'nowhere' → .*nowhere is not a folder"),
])
def test_broken_yolo_yaml_says_what_is_wrong(tmp_path, names, extra, expected):
    yaml = yolo_root(tmp_path, {"ok": "0 0.5 0.5 0.2 0.2\n"}, extra=extra)
    if names is None:
        yaml.write_text("train: images/train\nval: images/val\n")
    else:
        yaml.write_text(f"train: images/train\nval: images/val\nnames: {names}\n{extra}")
    with pytest.raises(DatasetError, match=expected):
        resolve_dataset(yaml)


def test_broken_voc_files_are_named(tmp_path):
    ok = [("cat", 0, 1, 1, 9, 9)]
    root = voc_root(tmp_path / "VOC", {"1": ok, "2": ok, "3": ok}, {"train": ["1", "2"], "val": ["1", "2", "3"]})

    (root / "Annotations" / "2.xml").write_text("<annotation><object><name>cat</name></annotation>")
    with pytest.raises(DatasetError, match=r"annotation file .*2\.xml: malformed XML \(mismatched tag: line 1"):
        resolve_dataset(root)
    (root / "Annotations" / "2.xml").write_text(voc_xml([("cat", 0, 1, "one", 9, 9)]))
    with pytest.raises(DatasetError, match=r"2\.xml, object 1 \(cat\): <ymin> 'one' is not a number"):
        resolve_dataset(root)
    (root / "Annotations" / "2.xml").write_text(voc_xml([("dgo", 0, 1, 1, 9, 9)]))
    y = tmp_path / "d.yaml"
    y.write_text(f"format: voc\npath: {root}\ntrain: train\nval: val\nnames: [cat, dog]\n")
    with pytest.raises(DatasetError, match=r"2\.xml, object 1: class 'dgo' is not one of the 2 names \['cat', 'dog'\]"):
        datasets(y)
    (root / "Annotations" / "2.xml").write_text(voc_xml(ok))

    (root / "JPEGImages" / "3.jpg").unlink()  # listed with a size in its XML: reported missing, as for COCO
    val = datasets(root)["val"]
    assert len(val) == 2 and val.summary().missing_examples == ["3.jpg"]
    assert any("1 of 3 image file(s) missing" in p and "3.jpg" in p for p in val.summary().problems())
    (root / "Annotations" / "3.xml").write_text(voc_xml(ok, size=None))  # and without a size: an error
    with pytest.raises(DatasetError, match=r"3\.xml has no <size> and image .*JPEGImages/3\.jpg does not exist"):
        datasets(root)

    (root / "Annotations" / "3.xml").unlink()
    with pytest.raises(DatasetError, match=r"image set file .*val\.txt: image '3' has no annotation file .*3\.xml"):
        resolve_dataset(root)


def test_a_yolo_list_naming_missing_images_warns_and_reads_the_rest(tmp_path):
    yaml = yolo_root(tmp_path, {"ok": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "val.txt").write_text("images/val/ok.jpg\nimages/val/gone.jpg\n")
    yaml.write_text("train: images/train\nval: val.txt\nnames: [a, b]\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = datasets(yaml)["val"]
    assert len(ds) == 1
    assert any(issubclass(w.category, DatasetWarning) and "1 image(s) listed but missing" in str(w.message)
               and "gone.jpg" in str(w.message) for w in caught)


# ---------------------------------------------------------------------------------------------- CLI
def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    out = run_cli_forked(*args, cwd=cwd, timeout=300, threads=1)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return out


TINY = ("--preset", "nanodet-plus-m", "--epochs", "1", "--imgsz", "64", "--batch", "4", "--workers", "0")


def test_train_on_yolo_then_the_weights_score_the_same_on_every_copy(copies, tmp_path):
    """The same weights score the same on the COCO, YOLO and VOC copies, and on the dataset the checkpoint records."""
    train = cli("train", *TINY, "--data", str(copies["yolo"]), cwd=tmp_path)
    assert "YOLO labels converted to COCO annotations in memory" in train.stdout
    best = tmp_path / "runs" / "train" / "train" / "weights" / "best.pt"
    stats = {}
    for fmt in ("coco", "yolo", "voc", "recorded"):
        data = () if fmt == "recorded" else ("--data", str(copies[fmt]))
        ev = cli("eval", "--weights", str(best), *data, "--conf", "0", "--name", fmt, cwd=tmp_path)
        metrics = json.loads((tmp_path / "runs" / "eval" / fmt / "metrics.json").read_text())
        stats[fmt] = ({k: metrics["stats"][k] for k in ALL_AREA}, [c["instances"] for c in metrics["per_class"]])
        assert ("evaluation is COCO-style" in ev.stdout) == (fmt != "coco")
    assert stats["coco"][0]["AR100"] > 0  # --conf 0 keeps enough boxes for non-zero numbers
    assert stats["yolo"] == stats["coco"] == stats["voc"] == stats["recorded"]


def test_train_on_voc_then_eval_finds_the_recorded_voc_data(copies, tmp_path):
    train = cli("train", *TINY, "--data", str(copies["voc"]), cwd=tmp_path)
    assert "difficult objects as crowd" in train.stdout
    ev = cli("eval", cwd=tmp_path)  # the latest run's best.pt and the dataset it records
    assert "evaluating on the dataset the checkpoint was trained on: " in ev.stdout
    metrics = json.loads((tmp_path / "runs" / "eval" / "eval" / "metrics.json").read_text())
    assert metrics["annotations"].endswith("ImageSets/Main/val.txt")
    assert sum(c["instances"] for c in metrics["per_class"]) == datasets(copies["coco"])["val"].summary().instances


def test_cli_reports_a_broken_label_without_a_traceback(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n", "bad": "0 0.5 0.5\n"})
    out = run_cli_forked("train", "--preset", "nanodet-plus-m", "--data", str(yaml), "--epochs", "1", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "bad.txt, line 1: expected 5 values (class cx cy w h)" in " ".join(out.stderr.split())
