"""Every data file failure is a message: YAML alias bombs, FIFOs named like images, 300 000 boxes in one image,
COCO fields that used to pass the reader and fail later (ids ≥ 2**63, ``iscrowd: "yes"``, 5000-character
``file_name``\\ s, ``info`` 700 deep), class names PyYAML reads as booleans, and unreadable images that
evaluation skips and counts instead of dying.

CLI cases run ``detcli train --check`` (it resolves and reads the data as ``train`` does, and trains nothing):
exit code 2, the file or field named, no "Traceback".
"""
from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.config.loader import load_preset
from detcli.config.yaml_text import MAX_ALIAS_EXPANSION, alias_expansion, parse_yaml
from detcli.data.build import dataset_for_split
from detcli.data.coco import CocoDetection, DatasetWarning
from detcli.data.collate import collate
from detcli.data.dataset_config import resolve_dataset
from detcli.data.image_io import read_image_bgr
from detcli.data.image_size import image_size
from detcli.data.label_stats import LabelStats, duplicate_files
from detcli.errors import DatasetError, PresetError
from detcli.evaluation.evaluator import CocoEvaluator
from detcli.fileio import NotRegularFile, open_regular
from detcli.structures import Detections
from tests.support.cli_subprocess import run_cli_forked
from tests.support.coco_files import ann, write_coco
from tests.support.json_files import edit_json
from tests.support.voc_yolo_files import voc_root, yolo_root

FIFO_TIMEOUT = pytest.mark.timeout(120)  # a FIFO that is opened blocks: the test fails instead of hanging


def check_cli(data: Path, cwd: Path, *extra: str):
    return run_cli_forked("train", "--preset", "nanodet-plus-m", "--data", str(data), "--check", *extra, cwd=cwd,
                          timeout=240)


def assert_refused(out, *expected: str) -> None:
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    for e in expected:
        assert e in text, text
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-3000:]


def coco_copy(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data.parent, root)
    return root


# ---------------------------------------------------------------------------------------------- YAML aliases
def bomb(levels: int = 9) -> str:
    """Anchors ``l0`` … ``l<levels>``: ``*l9`` expands to 10⁹ values."""
    rows = ["l0: &l0 [x, x, x, x, x, x, x, x, x, x]"]
    rows += [f"l{k}: &l{k} [{', '.join([f'*l{k - 1}'] * 10)}]" for k in range(1, levels + 1)]
    return "\n".join(rows) + "\n"


def test_alias_expansion_is_counted_without_expanding():
    node = parse_yaml("a: &a [1, 2]\nb: [*a, *a, *a]\n", "t", DatasetError)[1]
    assert alias_expansion(node) == 9  # three aliases of a 3-node list (the list and its two items)
    from yaml import SafeLoader

    assert alias_expansion(SafeLoader(bomb()).get_single_node()) > 10**9
    with pytest.raises(DatasetError, match=r"t: YAML aliases \(\*name\) expand to more than 100,000 values"):
        parse_yaml(bomb(), "t", DatasetError)
    with pytest.raises(DatasetError, match=r"t: a YAML alias \(\*name\) sits inside the value it names"):
        parse_yaml("a: &a [1, *a]\n", "t", DatasetError)
    merge = "a: &a {x: 1}\n" + "".join(f"b{k}: &b{k} {{<<: [{', '.join([f'*b{k - 1}' if k else '*a'] * 10)}]}}\n"
                                       for k in range(8))
    with pytest.raises(DatasetError, match=r"expand to more than"):  # merge keys copy on construction: refused first
        parse_yaml(merge, "t", DatasetError)
    assert MAX_ALIAS_EXPANSION == 100_000


def test_ordinary_anchors_still_work(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("base: nanodet-plus-m\nsched: &s {epochs: 3}\n")  # unknown key: the anchor is read first
    with pytest.raises(PresetError, match=r"sched .*unknown field"):
        load_preset(preset)
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    yaml.write_text("classes: &c [a, b]\ntrain: images/train\nval: images/val\nnames: *c\n")
    assert resolve_dataset(yaml).val.names == ["a", "b"]


@pytest.mark.parametrize("key", ["names", "nc", "path", "train"])
def test_cli_refuses_an_alias_bomb_in_a_data_yaml(tmp_path, key):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    fields = {"names": "[a, b]", "train": "images/train", "val": "images/val"}
    fields[key] = "*l9"
    yaml.write_text(bomb() + "".join(f"{k}: {v}\n" for k, v in fields.items()))
    assert_refused(check_cli(yaml, tmp_path), f"dataset file {yaml}: YAML aliases (*name) expand to more than")


def test_cli_refuses_an_alias_bomb_in_a_preset_and_in_a_set_value(tmp_path):
    (tmp_path / "p.yaml").write_text("base: nanodet-plus-m\n" + bomb() + "name: *l9\n")
    out = run_cli_forked("train", "--preset", "p.yaml", "--check", cwd=tmp_path, timeout=120)
    assert_refused(out, "preset p.yaml: YAML aliases (*name) expand to more than")
    flow = "[&a [1,1,1,1,1,1,1,1,1,1], " + ", ".join(
        f"&{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi")) + "]"
    out = run_cli_forked("train", "--preset", "nanodet-plus-m", "--set", f"train.epochs={flow}", "--check",
                         cwd=tmp_path, timeout=120)
    assert_refused(out, "train.epochs (from --set)")  # read as text, and the text is not a number


# ---------------------------------------------------------------------------------------------- class names
def test_yolo_class_names_are_always_the_text_written(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    yaml.write_text("train: images/train\nval: images/val\nnames: [no, on, yes, off, 1e3, 'y', ~cat]\n")
    assert resolve_dataset(yaml).val.names == ["no", "on", "yes", "off", "1e3", "y", "~cat"]
    yaml.write_text("train: images/train\nval: images/val\nnames: {0: no, 1: Yes, 2: 007}\n")
    assert resolve_dataset(yaml).val.names == ["no", "Yes", "007"]
    yaml.write_text("train: images/train\nval: images/val\nnames: [a, ~]\n")  # an empty name is still an error
    with pytest.raises(DatasetError, match=r"names\[1\]: a class name must be a non-empty string, got None"):
        resolve_dataset(yaml)


def test_voc_class_names_are_always_the_text_written(tmp_path):
    root = voc_root(tmp_path / "VOC", {"1": [("no", 0, 1, 1, 9, 9), ("yes", 0, 2, 2, 8, 8)]},
                    {"train": ["1"], "val": ["1"]})
    y = tmp_path / "voc.yaml"
    y.write_text(f"format: voc\npath: {root}\ntrain: train\nval: val\nnames: [yes, no]\n")
    cfg = resolve_dataset(y)
    assert cfg.val.names == ["yes", "no"]
    assert dataset_for_split(cfg.val, None, filter_empty=False).annotation(0)[1].tolist() == [1, 0]


def test_the_yolo_note_names_the_evaluator_detcli_uses():
    from detcli.data.dataset_config import VocSplit, YoloSplit

    assert "faster-coco-eval when installed, else pycocotools" in YoloSplit(data_file="d.yaml", images=[],
                                                                             names=["a"]).note
    assert "faster-coco-eval or pycocotools" in VocSplit(image_sets=["s.txt"], names=["a"]).note


# ---------------------------------------------------------------------------------------------- FIFOs
@FIFO_TIMEOUT
def test_a_fifo_is_never_opened_by_any_reader(tmp_path):
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile, match=r"not a regular file \(a FIFO\)"):
        open_regular(fifo)
    assert read_image_bgr(fifo) is None and image_size(fifo) is None
    assert duplicate_files([fifo], decode=True) == ([], [(0, "not a regular file (a FIFO)")])
    with pytest.raises(DatasetError, match=r"annotation file .*x\.jpg cannot be read: not a regular file"):
        CocoDetection(fifo, tmp_path, None, filter_empty=False)
    yaml = tmp_path / "data.yaml"
    os.mkfifo(yaml)
    with pytest.raises(DatasetError, match=r"dataset file .*data\.yaml is not a regular file"):
        resolve_dataset(yaml)


@FIFO_TIMEOUT
def test_yolo_fifos_are_left_out_or_named(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    os.mkfifo(tmp_path / "ds" / "images" / "val" / "x.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        val = dataset_for_split(resolve_dataset(yaml).val, None, filter_empty=False)
    assert len(val) == 1
    assert any("unreadable (no image size), left out" in str(w.message) and "x.jpg" in str(w.message)
               for w in caught if issubclass(w.category, DatasetWarning))
    os.mkfifo(tmp_path / "ds" / "labels" / "val" / "y.txt")
    shutil.copy(tmp_path / "ds" / "images" / "val" / "ok.jpg", tmp_path / "ds" / "images" / "val" / "y.jpg")
    with pytest.raises(DatasetError, match=r"label file .*y\.txt cannot be read: not a regular file \(a FIFO\)"):
        dataset_for_split(resolve_dataset(yaml).val, None, filter_empty=False)


@FIFO_TIMEOUT
def test_cli_check_reports_a_fifo_and_a_truncated_image_instead_of_hanging(tmp_path, tiny_data):
    root = coco_copy(tiny_data, tmp_path)
    (root / "val" / "000001.jpg").unlink()
    os.mkfifo(root / "val" / "000001.jpg")
    jpg = (root / "val" / "000002.jpg").read_bytes()
    (root / "val" / "000002.jpg").write_bytes(jpg[: len(jpg) // 2])
    out = check_cli(root, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = " ".join(out.stdout.split())
    assert "000001.jpg: not a regular file (a FIFO)" in text, text[-3000:]
    assert "000002.jpg: corrupt or truncated" in text and "Traceback" not in out.stderr
    report = json.loads((tmp_path / "runs" / "check" / "check" / "report.json").read_text())
    reasons = {Path(r["file"]).name: r["reason"] for r in report["unreadable_images"]}
    assert reasons == {"000001.jpg": "not a regular file (a FIFO)",
                       "000002.jpg": "corrupt or truncated: it does not decode as an image"}


# ---------------------------------------------------------------------------------------------- 300 000 boxes
def test_boxes_per_image_are_binned(monkeypatch, tmp_path):
    from detcli.plots import labels as plots

    n = 300_000
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 500, (n, 2))
    stats = LabelStats(class_names=["a"], boxes=np.concatenate([xy, xy + rng.uniform(2, 40, (n, 2))], axis=1),
                       labels=np.zeros(n, np.int64), image_index=np.r_[np.zeros(n - 3, np.int64), [1, 1, 2]],
                       image_sizes=np.full((4, 2), 600.0), file_names=["a", "b", "c", "d"], img_dir=tmp_path)
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    plots.plot_labels(stats, tmp_path / "labels.jpg")
    per_image = figures[0].axes[1]
    assert per_image.get_xlabel() == "boxes per image (bars 6000 counts wide)"
    bars = per_image.patches
    assert len(bars) == plots.MAX_COUNT_BARS == 50
    assert sum(b.get_height() for b in bars) == 4  # every image in one bar: 0, 2, 1 and 299 997 boxes
    assert [int(b.get_height()) for b in bars][0] == 3 and int(bars[-1].get_height()) == 1
    edges = plots.count_bins(7)
    assert edges.tolist() == [-0.5, 0.5, 1.5, 2.5, 3.5, 4.5, 5.5, 6.5, 7.5]  # few counts: one bar each


def test_cli_check_with_300000_boxes_in_one_image(tmp_path):
    yaml = yolo_root(tmp_path / "ds", {"a": None, "b": "0 0.5 0.5 0.2 0.2\n"})
    rng = np.random.default_rng(0)
    rows = np.concatenate([np.zeros((300_000, 1)), rng.uniform(0.3, 0.7, (300_000, 2)),
                           rng.uniform(0.05, 0.2, (300_000, 2))], axis=1)
    np.savetxt(tmp_path / "ds" / "labels" / "train" / "a.txt", rows, fmt=["%d", "%.5f", "%.5f", "%.5f", "%.5f"])
    out = check_cli(yaml, tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    report = json.loads((tmp_path / "runs" / "check" / "check" / "report.json").read_text())
    assert report["splits"]["train"]["boxes"] == 300_001 and report["splits"]["val"]["boxes"] == 1
    assert cv2.imread(str(tmp_path / "runs" / "check" / "check" / "labels.jpg")) is not None


# ---------------------------------------------------------------------------------------------- COCO fields
@pytest.mark.parametrize("edit, expected", [
    (lambda d: d["images"][0].update(id=2**63), "images[0] (id 9223372036854775808): needs an integer 'id' (a 64-bit"),
    (lambda d: d["annotations"][1].update(id=2**64), "annotations[1] (id 18446744073709551616): needs an integer 'id'"),
    (lambda d: d["annotations"][0].update(image_id=-2**63 - 1), "annotations[0] (id 1): needs an integer 'image_id'"),
    (lambda d: d["categories"][0].update(id=2**70), "categories[0] (id 1180591620717411303424): needs an integer"),
    (lambda d: d["annotations"][2].update(iscrowd="yes"), "annotations[2] (id 3): 'iscrowd' must be 0 or 1"),
    (lambda d: d["annotations"][0].update(ignore=2), "annotations[0] (id 1): 'ignore' must be 0 or 1"),
    (lambda d: d["images"][1].update(file_name="x" * 5000 + ".jpg"),
     "images[1] (id 2): its 'file_name' cannot name a file"),
    (lambda d: d["images"][1].update(file_name="a\0.jpg"), "images[1] (id 2): its 'file_name' cannot name a file"),
])
def test_cli_names_a_coco_field_that_would_fail_later(tmp_path, tiny_data, edit, expected):
    root = coco_copy(tiny_data, tmp_path)
    edit_json(root / "annotations" / "instances_val.json", edit)
    assert_refused(check_cli(root, tmp_path), f"annotations/instances_val.json: {expected}")


def test_a_huge_integer_is_a_json_error(tmp_path):
    f = tmp_path / "ann.json"
    f.write_text('{"images": [{"id": ' + "1" * 5000 + "}]}")
    with pytest.raises(DatasetError, match=r"ann\.json: invalid JSON \(Exceeds the limit"):
        CocoDetection(f, tmp_path, None, filter_empty=False)


def test_crowd_flags_and_extra_fields_reach_cocoeval_clean(tmp_path):
    anns = [ann(1, 1, [1, 1, 20, 20], iscrowd=True), ann(2, 1, [5, 5, 20, 20], iscrowd=0.0, ignore=1),
            ann(3, 2, [1, 1, 20, 20], segmentation=json.loads("[" * 600 + "]" * 600))]
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 50, 40)], anns)
    edit_json(f, lambda data: data.update(info=json.loads("[" * 700 + "]" * 700), licenses=[{"deep": [[[]]]}]))
    ds = CocoDetection(f, d, None, filter_empty=False)
    assert ds.summary().dropped["crowd"] == 2
    gt = ds.coco.dataset
    assert set(gt) == {"images", "annotations", "categories"}  # no `info` for COCOeval's deepcopy
    assert [a["iscrowd"] for a in gt["annotations"]] == [1, 0, 0] and "segmentation" not in gt["annotations"][2]
    ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names)
    ev.add(2, Detections(torch.tensor([[1.0, 1, 21, 21]]), torch.tensor([0.9]), torch.tensor([0])))
    assert ev.evaluate().stats["AP50"] == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------- unreadable images
def test_evaluation_skips_an_unreadable_image_and_counts_its_boxes_as_missed(tmp_path):
    f, d = write_coco(tmp_path, [("a.jpg", 50, 40), ("b.jpg", 50, 40)],
                      [ann(1, 1, [1, 1, 20, 20]), ann(2, 2, [5, 5, 20, 20])])
    data = (d / "b.jpg").read_bytes()
    (d / "b.jpg").write_bytes(data[: len(data) // 2])
    ds = CocoDetection(f, d, None, filter_empty=False, unreadable="skip")
    with pytest.warns(DatasetWarning, match=r"b\.jpg .*skipping it"):
        batch = collate([ds[0], ds[1]])
    assert [m.image_id for m in batch.metas] == [1] and [m.image_id for m in batch.skipped] == [2]
    assert batch.images.shape[0] == 1 and batch.to("cpu").skipped == batch.skipped
    alone = collate([ds[1]])
    assert alone.images.shape == (0, 3, 1, 1) and alone.metas == [] and len(alone.skipped) == 1

    perfect = Detections(torch.tensor([[1.0, 1, 21, 21]]), torch.tensor([0.9]), torch.tensor([0]))
    ev = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names)
    ev.add(1, perfect)
    ev.skip(2, str(d / "b.jpg"))
    result = ev.evaluate()
    # as pycocotools scores the whole set for a results file without image 2: its box is a miss
    assert result.num_images == 2 and result.unreadable_images == [str(d / "b.jpg")]
    assert result.stats["AR100"] == pytest.approx(0.5) and result.per_class[0].instances == 2
    assert result.to_dict()["unreadable_images"] == [str(d / "b.jpg")]
    empty = CocoEvaluator(ds.coco, ds.cat_ids, ds.class_names)
    empty.add(1, perfect)
    empty.add(2, Detections(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)))
    assert empty.evaluate().raw_stats == result.raw_stats
    with pytest.raises(DatasetError, match=r"cannot read image .*b\.jpg"), pytest.warns(DatasetWarning):
        CocoDetection(f, d, None, filter_empty=False, unreadable="raise")[1]


def _skip_worker(rank: int, port: int, queue) -> None:
    import torch.distributed as dist

    from tests.support.evaluator_cases import _det, _evaluator

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    ev = _evaluator()
    if rank == 0:
        ev.add(1, _det([[10, 10, 70, 70]], [0.9], [1]))
    else:  # rank 1 could not read image 2
        ev.skip(2, "b.jpg")
    ev.gather()
    result = ev.evaluate()
    queue.put((rank, result.unreadable_images, result.num_images))
    dist.destroy_process_group()


def test_unreadable_images_are_gathered_across_ranks():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    queue = mp.get_context("fork").SimpleQueue()  # forked, as in test_eval_predict's gather test
    mp.start_processes(_skip_worker, args=(port, queue), nprocs=2, start_method="fork")
    got = dict((r, rest) for r, *rest in (queue.get() for _ in range(2)))
    assert got == {0: [["b.jpg"], 2], 1: [["b.jpg"], 2]}
