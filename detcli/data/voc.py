"""Pascal VOC detection datasets, read into the COCO form every detcli dataset has in memory.

A VOC root (``VOCdevkit/VOC2007``) holds ``Annotations/<id>.xml``, ``JPEGImages/<id>.jpg`` and image-set
files ``ImageSets/Main/<set>.txt`` (one image id per line). A split is one or more image-set files
(VOC2007+2012 training reads two roots).

Conversion:
- boxes: VOC's ``xmin ymin xmax ymax`` are 1-based pixel indices, both ends inclusive. As detectron2
  (``data/datasets/pascal_voc.py``) we map them to pixel edges: x0 = xmin − 1, x1 = xmax, so COCO
  ``[x, y, w, h]`` = ``[xmin − 1, ymin − 1, xmax − xmin + 1, ymax − ymin + 1]``. (mmdet's ``XMLDataset``
  subtracts 1 from all four, which makes its boxes 1 px narrower.) ``area`` = w·h.
- ``difficult=1`` objects become ``iscrowd=1``: they are not training targets, and COCO evaluation ignores
  detections matched to them, which is how VOC's own evaluation treats them. (One difference: for a crowd
  box pycocotools measures the overlap as the share of the detection inside it, not IoU.)
- classes: the dataset YAML's ``names``, else the names found in the XML of the splits, sorted, or the 20
  VOC classes in VOC order when the names found are among them. Class ``k`` → COCO category id ``k + 1``.
- image size: ``<size>`` of the XML, or the JPEG's header where the XML has none.

Paths stay inside the VOC root (:mod:`detcli.data.paths`): an image id is a name under ``Annotations/`` and
``JPEGImages/`` (an absolute id or one that climbs out with ``..`` is an error naming the image-set file and
line, and nothing it names is opened); image-set files and XML files must really be inside the root, symlinks
resolved (they are parsed, and their text can appear in messages). A YAML's relative image-set entry may not
climb out of its ``path``; an absolute one is the user's explicit choice. Only regular files are read.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detcli.data.coco_json import CocoAnnotations, coco_annotations
from detcli.data.image_size import image_size
from detcli.data.paths import Roots, bad_name, escapes, read_regular_text
from detcli.fileio import open_regular
from detcli.data.yaml_fields import brief, entries, parse_names, yaml_root
from detcli.errors import DatasetError

VOC_CLASSES = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable", "dog",
    "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)


@dataclass
class VocObject:
    name: str
    difficult: bool
    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass
class VocRecord:
    """One parsed ``Annotations/<id>.xml``; ``width``/``height`` None where ``<size>`` is absent or zero."""

    xml: Path
    filename: str | None
    width: int | None
    height: int | None
    objects: list[VocObject] = field(default_factory=list)


def is_voc_root(path: Path) -> bool:
    """A folder with ``Annotations/``, ``JPEGImages/`` and ``ImageSets/Main/``."""
    return all((path / sub).is_dir() for sub in ("Annotations", "JPEGImages", os.path.join("ImageSets", "Main")))


def image_set_file(root: Path, name: str) -> Path:
    return root / "ImageSets" / "Main" / f"{name}.txt"


def available_sets(root: Path) -> list[str]:
    """Image sets of a VOC root (per-class lists like ``dog_train.txt`` left out)."""
    main = root / "ImageSets" / "Main"
    return sorted(p.stem for p in main.glob("*.txt") if "_" not in p.stem) if main.is_dir() else []


def set_root(set_file: Path) -> Path:
    """The VOC root of ``<root>/ImageSets/Main/<set>.txt``."""
    return set_file.parent.parent.parent


def check_image_set(set_file: Path, where: str, root: Path | None = None) -> Path:
    """``set_file`` made absolute, after checking it exists inside a VOC root and really lies inside ``root``
    (default: its own VOC root, ``<root>/ImageSets/Main/<set>.txt``), symlinks resolved; it is not opened."""
    set_file = Path(os.path.abspath(set_file))
    if os.path.exists(set_file) and not set_file.is_file():
        raise DatasetError(f"{where}: image set file {set_file} is not a regular file")
    if not set_file.is_file():
        sets = available_sets(set_root(set_file))
        hint = f" (image sets there: {', '.join(sets)})" if sets else ""
        raise DatasetError(f"{where}: image set file {set_file} does not exist{hint}")
    Roots([root if root is not None else set_root(set_file)]).check(set_file, f"{where}: image set file {set_file}")
    set_file = set_file.resolve()
    root = set_root(set_file)
    if set_file.parent.name != "Main" or not is_voc_root(root):
        raise DatasetError(f"{where}: {set_file} is not in <VOC root>/ImageSets/Main/ next to Annotations/ "
                           f"and JPEGImages/")
    return set_file


def read_image_set(set_file: Path) -> list[str]:
    """Image ids of an image-set file, one per line (blank lines skipped).

    Raises:
        DatasetError: unreadable, or a line that is not one id naming a file inside the root (absolute, climbing
            out with ``..``, a NUL character, too long), naming the file and line.
    """
    ids = []
    for n, line in enumerate(read_regular_text(set_file, "image set file").splitlines(), start=1):
        tokens = line.split()
        if len(tokens) > 1:
            raise DatasetError(f"image set file {set_file}, line {n}: expected one image id, got "
                               f"{brief(line.strip())} (a per-class list? give ImageSets/Main/<set>.txt)")
        for token in tokens:
            problem = "it leads out of the VOC root" if escapes(token) else bad_name(token)
            if problem:
                raise DatasetError(f"image set file {set_file}, line {n}: image id {brief(token)} cannot be used "
                                   f"({problem}): an id names <id>.xml in Annotations/ and <id>.jpg in JPEGImages/")
        ids += tokens
    return ids


def _number(obj: ET.Element, tag: str, where: str) -> float:
    node = obj.find(tag)
    if node is None or node.text is None or not node.text.strip():
        raise DatasetError(f"{where}: <{tag}> is missing")
    try:
        return float(node.text)
    except ValueError:
        raise DatasetError(f"{where}: <{tag}> {node.text.strip()!r} is not a number") from None


def _size(root: ET.Element, tag: str) -> int | None:
    node = root.find(f"size/{tag}")
    try:
        v = int(float(node.text)) if node is not None and node.text else 0
    except ValueError:
        return None
    return v if v > 0 else None


def parse_voc_xml(path: Path) -> VocRecord:
    """Read one annotation file.

    Raises:
        DatasetError: the file is missing or not well-formed XML, or an object lacks its name or a
            box coordinate (the message names the file and the object).
    """
    try:
        with open_regular(path) as f:
            tree = ET.parse(f)
    except FileNotFoundError:
        raise DatasetError(f"annotation file {path} does not exist") from None
    except ET.ParseError as e:
        raise DatasetError(f"annotation file {path}: malformed XML ({e})") from None
    except OSError as e:
        raise DatasetError(f"annotation file {path} cannot be read: {e.strerror or e}") from None
    root = tree.getroot()
    fname = root.findtext("filename")
    record = VocRecord(path, fname.strip() if fname else None, _size(root, "width"), _size(root, "height"))
    for k, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        where = f"annotation file {path}, object {k}" + (f" ({name})" if name else "")
        if not name:
            raise DatasetError(f"{where}: <name> is missing")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DatasetError(f"{where}: <difficult> is {difficult!r}, expected 0 or 1")
        box = obj.find("bndbox")
        if box is None:
            raise DatasetError(f"{where}: <bndbox> is missing")
        xmin, ymin, xmax, ymax = (_number(box, t, where) for t in ("xmin", "ymin", "xmax", "ymax"))
        record.objects.append(VocObject(name, difficult == "1", xmin, ymin, xmax, ymax))
    return record


def split_records(set_files: list[Path]) -> list[tuple[Path, str, VocRecord]]:
    """(VOC root, image id, parsed XML) of every image of the image-set files, in their order."""
    out = []
    for set_file in set_files:
        root = set_root(set_file)
        inside = Roots([root])
        for image_id in read_image_set(set_file):
            xml = root / "Annotations" / f"{image_id}.xml"
            if not os.path.lexists(xml):
                raise DatasetError(f"image set file {set_file}: image {image_id!r} has no annotation file {xml}")
            inside.check(xml, f"annotation file {xml}")
            out.append((root, image_id, parse_voc_xml(xml)))
    if not out:
        raise DatasetError(f"image set file {set_files[0]}: no image ids")
    return out


def collect_names(set_files: list[Path]) -> list[str]:
    """Class names for splits without given ``names``: the 20 VOC classes in VOC order when every name
    found in their XML is one of them, else the names found, sorted."""
    found = {o.name for _, _, rec in split_records(set_files) for o in rec.objects}
    if not found:
        raise DatasetError(f"no object in the annotation files of {', '.join(map(str, set_files))}: "
                           f"give the class names in a dataset YAML (names: [...])")
    return list(VOC_CLASSES) if found <= set(VOC_CLASSES) else sorted(found)


def voc_yaml_splits(data: dict[str, Any], path: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """Check a VOC dataset YAML (already parsed) → ({"train"?, "val"}: image-set files, names). Keys::

        format: voc                # optional when `path` (or the YAML's folder) is a VOC root
        path: VOCdevkit/VOC2007    # optional: default the YAML's folder
        train: trainval            # an image set of `path`, or image-set files relative to `path`:
        val: test                  #   [VOC2007/ImageSets/Main/trainval.txt, VOC2012/ImageSets/Main/trainval.txt]
        names: [...]               # optional: default as in collect_names
    """
    where = f"dataset file {path}"
    root = yaml_root(data, path)
    if "val" not in data:
        raise DatasetError(f"{where}: no 'val' (the image set to evaluate on, e.g. val: test)")
    names = parse_names(data["names"], where) if "names" in data else None
    return _splits(root, {k: entries(data, k) for k in ("train", "val")}, names, where)


def voc_root_splits(root: Path) -> tuple[dict[str, list[Path]], list[str]]:
    """A VOC root given alone: train on ``trainval`` and evaluate on ``test`` when ``test.txt`` exists
    (VOC2007 with its test set), else ``train`` / ``val``; class names as in :func:`collect_names`."""
    sets = available_sets(root)
    pair = next(((t, v) for t, v in (("trainval", "test"), ("train", "val")) if t in sets and v in sets), None)
    if pair is None:
        raise DatasetError(
            f"{root}: a Pascal VOC root needs ImageSets/Main/train.txt and val.txt (or trainval.txt and test.txt); "
            f"found {', '.join(sets) or 'no image set'}; or write a dataset YAML with format: voc, train: and val:"
        )
    return _splits(root, {"train": [pair[0]], "val": [pair[1]]}, None, f"VOC root {root}")


def _splits(root: Path, given: dict[str, list[Any]], names: list[str] | None,
            where: str) -> tuple[dict[str, list[Path]], list[str]]:
    sets: dict[str, list[Path]] = {}
    for key, values in given.items():
        files = []
        for e in values:
            if not isinstance(e, str) or not e.strip():
                raise DatasetError(f"{where}: {key}: expected an image set name or an image-set .txt file, "
                                   f"got {brief(e)}")
            given_path = Path(e).expanduser()
            if e.endswith(".txt") and given_path.is_absolute():  # written by the user: its own root
                files.append(check_image_set(given_path, f"{where}: {key}"))
            elif e.endswith(".txt"):
                if escapes(e):
                    raise DatasetError(f"{where}: {key}: {brief(e)} leads out of the dataset root {root} with '..': "
                                       f"a relative entry names a file inside path:, or write the absolute path")
                files.append(check_image_set(root / given_path, f"{where}: {key}", root))
            elif is_voc_root(root):
                if escapes(e) or "/" in e or "\\" in e:
                    raise DatasetError(f"{where}: {key}: {brief(e)} is not an image set name (a file name in "
                                       f"{root / 'ImageSets' / 'Main'} without .txt)")
                files.append(check_image_set(image_set_file(root, e), f"{where}: {key}", root))
            else:
                raise DatasetError(f"{where}: {key}: {brief(e)} names an image set, but {root} is not a VOC root "
                                   f"(Annotations/, JPEGImages/, ImageSets/Main/); "
                                   f"give <root>/ImageSets/Main/<set>.txt")
        if files:
            sets[key] = files
    if "val" not in sets:
        raise DatasetError(f"{where}: val: no image set given")
    return sets, names if names is not None else collect_names([f for files in sets.values() for f in files])


def _image_path(root: Path, image_id: str, record: VocRecord) -> Path:
    """``JPEGImages/<id>.jpg``; else the XML's ``<filename>`` when that file exists there."""
    path = root / "JPEGImages" / f"{image_id}.jpg"
    if not path.is_file() and record.filename:
        other = root / "JPEGImages" / record.filename
        if other.is_file() and Path(record.filename).name == record.filename:
            return other
    return path


def load_voc_split(set_files: list[Path], names: list[str]) -> tuple[CocoAnnotations, Path]:
    """Read a VOC split into COCO annotations (see the module docstring) and the folder its names are under.

    Args:
        set_files: absolute image-set files (:func:`check_image_set`).
        names: class names; an object named otherwise is an error naming its file.
    Returns:
        (annotations, image folder): ``JPEGImages`` of a single root, else the roots' common folder.
        A listed image without its JPEG stays listed (the dataset reports it missing, as for COCO) when
        the XML gives its size; without a size either it is an error naming both files.
    """
    label = {n: k for k, n in enumerate(names)}
    records = split_records(set_files)
    roots = sorted({str(r / "JPEGImages") for r, _, _ in records})
    img_dir = Path(roots[0]) if len(roots) == 1 else Path(os.path.commonpath(roots))
    images, anns = [], []
    for root, image_id, rec in records:
        path = _image_path(root, image_id, rec)
        w, h = rec.width, rec.height
        if w is None or h is None:
            size = image_size(path) if path.is_file() else None
            if size is None:
                raise DatasetError(f"annotation file {rec.xml} has no <size> and image {path} "
                                   f"{'cannot be read' if path.is_file() else 'does not exist'}")
            w, h = size
        images.append({"id": len(images) + 1, "file_name": path.relative_to(img_dir).as_posix(),
                       "width": w, "height": h})
        for k, o in enumerate(rec.objects, start=1):
            if o.name not in label:
                raise DatasetError(f"annotation file {rec.xml}, object {k}: class {o.name!r} is not one of the "
                                   f"{len(names)} names {names[:25]}")
            bw, bh = o.xmax - o.xmin + 1, o.ymax - o.ymin + 1
            anns.append({"id": len(anns) + 1, "image_id": len(images), "category_id": label[o.name] + 1,
                         "bbox": [o.xmin - 1, o.ymin - 1, bw, bh], "area": bw * bh, "iscrowd": int(o.difficult)})
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
    }
    return coco_annotations(coco, set_files[0]), img_dir
