"""Paths stay inside their dataset (VOC, YOLO): a name from a data file never leads out of it, a file whose text
is parsed must really be inside it (symlinks resolved), and nothing outside is opened or shown.

Every case puts a marker file *outside* the dataset folder that the broken data points at. In-process tests
record every file Python opens (an audit hook) and check the marker is not among them and that its text is in
no message; CLI cases (``detcli train --check``) check exit code 2, the file and line named, no "Traceback",
and no marker text; with a FIFO as the marker, opening it would block, so a run that ends at all did not
open it.
"""
from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest

from detcli.data.build import dataset_for_split
from detcli.data.dataset_config import resolve_dataset
from detcli.data.paths import Roots, escapes, within
from detcli.errors import DatasetError
from tests.support.cli_subprocess import run_cli_forked
from tests.support.voc_yolo_files import voc_root, voc_xml, write_image, yolo_root

SECRET = "MARKER-7f3a-never-shown"

_OPENED: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _OPENED is not None and event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.path.abspath(os.fsdecode(args[0])))


sys.addaudithook(_audit)  # cannot be removed: it records only inside opened_files()


@contextlib.contextmanager
def opened_files():
    """Every path Python opens inside the block (``open``, ``io.open``, ``os.open``)."""
    global _OPENED
    _OPENED = []
    try:
        yield _OPENED
    finally:
        _OPENED = None


def marker(outside: Path, name: str, text: str | None = None) -> Path:
    """A file outside the dataset; ``text`` defaults to a VOC annotation whose class name is the secret."""
    outside.mkdir(parents=True, exist_ok=True)
    path = outside / name
    path.write_text(text if text is not None else voc_xml([(SECRET, 0, 1, 1, 9, 9)]))
    return path


def refused_unopened(build, outside: Path, expected: str) -> str:
    """``build()`` raises a DatasetError matching ``expected``, opens nothing under ``outside`` and shows no
    marker text; returns the message."""
    with opened_files() as opened, pytest.raises(DatasetError, match=expected) as err:
        build()
    assert not [p for p in opened if within(p, outside)], opened
    assert SECRET not in str(err.value)
    return str(err.value)


def build_all(spec) -> None:
    cfg = resolve_dataset(spec)
    for split in (cfg.train, cfg.val):
        if split is not None:
            dataset_for_split(split, None, filter_empty=False)


OK = [("cat", 0, 1, 1, 9, 9)]


# ---------------------------------------------------------------------------------------------- the rule
@pytest.mark.parametrize("name, out", [
    ("a", False), ("sub/a", False), ("sub/../a", False), ("../a", True), ("../../elsewhere/notes", True),
    ("/etc/passwd", True), ("sub/../../a", True), ("C:\\x", True),
])
def test_a_name_from_a_data_file_escapes_when_absolute_or_climbing(name, out):
    assert escapes(name) is out


def test_roots_judge_files_by_where_they_really_are(tmp_path):
    root, outside = tmp_path / "data", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    target = marker(outside, "t.txt", "x")
    (root / "sub" / "in.txt").write_text("x")
    (root / "sub" / "link.txt").symlink_to(target)
    (root / "linked").symlink_to(outside, target_is_directory=True)
    roots = Roots([root])
    assert roots.holds(root / "sub" / "link.txt") and roots.really_hold(root / "sub" / "in.txt")
    assert not roots.really_hold(root / "sub" / "link.txt") and not roots.really_hold(root / "linked" / "t.txt")
    with pytest.raises(DatasetError, match=r"label file x leads out of the dataset .* through a symlink"):
        roots.check(root / "sub" / "link.txt", "label file x")


# ---------------------------------------------------------------------------------------------- VOC
@pytest.mark.parametrize("bad_id", ["../../outside/notes", "ABSOLUTE"])
def test_voc_ids_that_leave_the_root_are_refused_unopened(tmp_path, bad_id):
    outside = tmp_path / "outside"
    notes = marker(outside, "notes.xml")
    if bad_id == "ABSOLUTE":
        bad_id = str(notes.with_suffix(""))
    root = voc_root(tmp_path / "data" / "VOC", {"1": OK}, {"train": ["1"], "val": ["1"]})
    (root / "ImageSets" / "Main" / "val.txt").write_text(f"1\n{bad_id}\n")
    refused_unopened(lambda: build_all(root), outside,
                     r"val\.txt, line 2: image id .* cannot be used \(it leads out of the VOC root\)")


def test_voc_xml_and_image_sets_that_are_symlinks_out_are_refused(tmp_path):
    outside = tmp_path / "outside"
    root = voc_root(tmp_path / "data" / "VOC", {"1": OK, "2": OK}, {"train": ["1"], "val": ["1", "2"]})
    (root / "Annotations" / "2.xml").unlink()
    (root / "Annotations" / "2.xml").symlink_to(marker(outside, "notes.xml"))
    refused_unopened(lambda: build_all(root), outside, r"annotation file .*2\.xml leads out of the dataset")

    (root / "Annotations" / "2.xml").unlink()
    (root / "Annotations" / "2.xml").write_text(voc_xml(OK))
    main = root / "ImageSets" / "Main"
    (main / "val.txt").unlink()
    (main / "val.txt").symlink_to(marker(outside, "list.txt", f"{SECRET}\n"))
    refused_unopened(lambda: build_all(root), outside, r"image set file .*val\.txt leads out of the dataset")


def test_voc_yaml_entries_stay_in_their_root_unless_written_absolute(tmp_path):
    outside = tmp_path / "outside"
    other = voc_root(outside / "VOC", {"9": [(SECRET, 0, 1, 1, 9, 9)]}, {"val": ["9"]})
    root = voc_root(tmp_path / "data" / "VOC", {"1": OK}, {"train": ["1"], "val": ["1"]})
    y = tmp_path / "data" / "voc.yaml"
    y.write_text("format: voc\npath: VOC\ntrain: train\nval: ../../outside/VOC/ImageSets/Main/val.txt\n")
    refused_unopened(lambda: resolve_dataset(y), outside, r"val: .* leads out of the dataset root .*VOC with '\.\.'")
    y.write_text("format: voc\npath: VOC\ntrain: train\nval: ../val\n")
    refused_unopened(lambda: resolve_dataset(y), outside, r"val: '\.\./val' is not an image set name")
    # an absolute path the user wrote is the user's choice: that root is read
    y.write_text(f"format: voc\npath: VOC\ntrain: train\nval: {other}/ImageSets/Main/val.txt\nnames: [cat, x]\n")
    assert resolve_dataset(y).val.image_sets == [(other / "ImageSets" / "Main" / "val.txt").resolve()]
    assert root.is_dir()


# ---------------------------------------------------------------------------------------------- YOLO
def test_a_yolo_label_file_that_is_a_symlink_out_is_refused_unopened(tmp_path):
    outside = tmp_path / "outside"
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n", "bad": None})
    (tmp_path / "data" / "labels" / "val" / "bad.txt").symlink_to(marker(outside, "secret.txt", f"{SECRET}\n"))
    refused_unopened(lambda: build_all(yaml), outside, r"label file .*val/bad\.txt leads out of the dataset")


def test_a_labels_folder_that_is_a_symlink_out_is_refused(tmp_path):
    outside = tmp_path / "outside"
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    labels = tmp_path / "data" / "labels" / "val"
    (outside / "val").mkdir(parents=True)
    (outside / "val" / "ok.txt").write_text(f"{SECRET}\n")
    (labels / "ok.txt").unlink()
    labels.rmdir()
    labels.symlink_to(outside / "val", target_is_directory=True)
    refused_unopened(lambda: build_all(yaml), outside, r"label file .*ok\.txt leads out of the dataset")


@pytest.mark.parametrize("line", ["../outside/x.jpg", "ABSOLUTE", "images/../../outside/x.jpg"])
def test_yolo_image_list_lines_stay_in_the_dataset(tmp_path, line):
    outside = tmp_path / "outside"
    x = write_image(outside / "x.jpg")
    marker(outside, "x.txt", f"{SECRET}\n")  # the label the image would have
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "data" / "val.txt").write_text(f"images/val/ok.jpg\n{str(x) if line == 'ABSOLUTE' else line}\n")
    yaml.write_text("train: images/train\nval: val.txt\nnames: [a, b]\n")
    refused_unopened(lambda: build_all(yaml), outside,
                     r"image list .*val\.txt, line 2: .* is outside the dataset \(.*data\)")


def test_an_absolute_line_inside_the_dataset_is_fine(tmp_path):
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n", "two": "1 0.5 0.5 0.2 0.2\n"})
    two = tmp_path / "data" / "images" / "val" / "two.jpg"
    (tmp_path / "data" / "val.txt").write_text(f"{two}\n./images/val/ok.jpg\n")
    yaml.write_text("train: images/train\nval: val.txt\nnames: [a, b]\n")
    val = dataset_for_split(resolve_dataset(yaml).val, None, filter_empty=False)
    assert sorted(val.image_info(i)["file_name"] for i in range(len(val))) == ["ok.jpg", "two.jpg"]


def test_yolo_entries_and_lists(tmp_path):
    outside = tmp_path / "outside"
    elsewhere = yolo_root(outside / "other", {"e": "0 0.5 0.5 0.2 0.2\n"}).parent
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    yaml.write_text("train: images/train\nval: ../outside/other/images/val\nnames: [a, b]\n")
    refused_unopened(lambda: resolve_dataset(yaml), outside, r"val: '\.\./outside/other/images/val' leads out of "
                                                             r"the dataset root")
    (tmp_path / "data" / "list.txt").symlink_to(marker(outside, "list.txt", f"{SECRET}.jpg\n"))
    yaml.write_text("train: images/train\nval: list.txt\nnames: [a, b]\n")
    refused_unopened(lambda: build_all(yaml), outside, r"image list .*list\.txt leads out of the dataset")
    # an absolute entry written in data.yaml is the user's choice, with its labels next to its images
    yaml.write_text(f"train: images/train\nval: {elsewhere / 'images' / 'val'}\nnames: [a, b]\n")
    val = dataset_for_split(resolve_dataset(yaml).val, None, filter_empty=False)
    assert len(val) == 1 and val.summary().instances == 1


# ---------------------------------------------------------------------------------------------- CLI
def check_cli(data: Path, cwd: Path):
    return run_cli_forked("train", "--preset", "nanodet-plus-m", "--data", str(data), "--check", cwd=cwd, timeout=120)


def assert_refused(out, *expected: str) -> None:
    text = " ".join(out.stderr.split())
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    for e in expected:
        assert e in text, text
    assert "Traceback" not in out.stdout + out.stderr and SECRET not in out.stdout + out.stderr


@pytest.mark.parametrize("kind", ["text", "fifo"])
def test_cli_refuses_a_voc_id_that_climbs_out(tmp_path, kind):
    """The issue's case: ``../../elsewhere/notes`` opened ``Annotations/../../elsewhere/notes.xml``."""
    notes = tmp_path / "data" / "elsewhere" / "notes.xml"  # two levels above Annotations/: outside the VOC root
    notes.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(notes)  # opening it would block: the run ending at all shows it was not opened
    else:
        notes.write_text(voc_xml([(SECRET, 0, 1, 1, 9, 9)]))
    root = voc_root(tmp_path / "data" / "VOC", {"1": OK}, {"train": ["1"], "val": ["1"]})
    (root / "ImageSets" / "Main" / "val.txt").write_text("1\n../../elsewhere/notes\n")
    assert_refused(check_cli(root, tmp_path), "val.txt, line 2: image id '../../elsewhere/notes' cannot be used "
                                              "(it leads out of the VOC root)")


def test_cli_refuses_a_yolo_label_symlinked_out(tmp_path):
    fifo = tmp_path / "outside" / "secret.txt"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n", "bad": None})
    (tmp_path / "data" / "labels" / "train" / "bad.txt").symlink_to(fifo)
    assert_refused(check_cli(yaml, tmp_path), "labels/train/bad.txt leads out of the dataset")


def test_cli_refuses_an_image_list_line_outside(tmp_path):
    marker(tmp_path / "outside", "x.txt", f"{SECRET}\n")
    write_image(tmp_path / "outside" / "x.jpg")
    yaml = yolo_root(tmp_path / "data", {"ok": "0 0.5 0.5 0.2 0.2\n"})
    (tmp_path / "data" / "train.txt").write_text("images/train/ok.jpg\n../outside/x.jpg\n")
    yaml.write_text("train: train.txt\nval: images/val\nnames: [a, b]\n")
    assert_refused(check_cli(yaml, tmp_path), "train.txt, line 2: '../outside/x.jpg' is outside the dataset")
