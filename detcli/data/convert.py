"""Write a COCO dataset in the YOLO or the Pascal VOC layout (what ``--data`` reads back; see yolo.py, voc.py).

    from detcli.data.convert import coco_to_yolo, coco_to_voc
    coco_to_yolo("path/to/coco_dataset.yaml", "shapes-yolo")   # → shapes-yolo/data.yaml
    coco_to_voc("demo", "shapes-voc")                          # → shapes-voc/data.yaml (format: voc)

Class order is the COCO file's (sorted category ids): YOLO class ``k`` and VOC name ``names[k]`` are the
``k``-th category, and the written YAML lists the names in that order, so a model trained on one copy
evaluates on another. Images are hard-linked where the file system allows, else copied.

What each layout cannot hold: YOLO has no crowd boxes (they are left out) and no box beyond the image
(boxes are clipped to it); VOC stores crowd boxes as ``difficult`` (both are ignored in training and
evaluation) and wants JPEGs (other images are re-encoded at quality 95).
"""
from __future__ import annotations

import os
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import cv2
import numpy as np

from detcli.data.coco_json import CocoAnnotations, escapes_image_dir, load_coco_json
from detcli.data.dataset_config import DatasetConfig, Split, resolve_dataset
from detcli.data.image_io import read_image_bgr
from detcli.errors import DatasetError


def coco_to_yolo(data: DatasetConfig | str | Path, out: str | Path) -> Path:
    """Write ``data`` (a COCO dataset: its config, YAML, folder or 'demo') as ``out/images/<split>/…``,
    ``out/labels/<split>/….txt`` and ``out/data.yaml``; returns the data.yaml.

    A label line is ``class cx cy w h`` (fractions of the image size, 10 significant digits); an image
    without boxes gets no label file (a background image).
    """
    splits, out = _coco_splits(data), _empty_folder(out)
    names = None
    for kind, (split, coco) in splits.items():
        names = coco.class_names
        for m, rows in _per_image(coco):
            name = _checked_name(m["file_name"], split)
            _link(split.img_dir / name, out / "images" / kind / name)
            lines = []
            for label, (x, y, w, h), crowd in rows:
                x0, y0 = np.clip([x / m["width"], y / m["height"]], 0, 1)
                x1, y1 = np.clip([(x + w) / m["width"], (y + h) / m["height"]], 0, 1)
                if crowd or x1 <= x0 or y1 <= y0:
                    continue
                values = ((x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0)
                lines.append(f"{label} " + " ".join(f"{v:.10g}" for v in values))
            if lines:
                target = (out / "labels" / kind / name).with_suffix(".txt")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_text("\n".join(lines) + "\n", encoding="utf-8")
    yaml = out / "data.yaml"
    yaml.write_text(
        "# YOLO dataset written by detcli.data.convert.coco_to_yolo\n"
        + "".join(f"{kind}: images/{kind}\n" for kind in splits)
        + "names:\n" + "".join(f"  {k}: {_yaml_str(n)}\n" for k, n in enumerate(names)),
        encoding="utf-8",
    )
    return yaml


def coco_to_voc(data: DatasetConfig | str | Path, out: str | Path) -> Path:
    """Write ``data`` (a COCO dataset) as a VOC root: ``out/Annotations/<id>.xml``, ``out/JPEGImages/<id>.jpg``,
    ``out/ImageSets/Main/<split>.txt`` and ``out/data.yaml`` (format: voc, the names in COCO order); returns
    the data.yaml. Image ids are ``<split>_<file stem>``; boxes are written 1-based (``xmin = x + 1``,
    ``xmax = x + w``), the inverse of how :mod:`detcli.data.voc` reads them.
    """
    splits, out = _coco_splits(data), _empty_folder(out)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    names, used = None, set()
    for kind, (split, coco) in splits.items():
        names = coco.class_names
        ids = []
        for m, rows in _per_image(coco):
            name = _checked_name(m["file_name"], split)
            image_id = f"{kind}_{Path(name).stem}"
            if image_id in used:
                image_id = f"{image_id}_{m['id']}"
            used.add(image_id)
            ids.append(image_id)
            _write_jpeg(split.img_dir / name, out / "JPEGImages" / f"{image_id}.jpg")
            _voc_xml(image_id, m, [(names[label], box, crowd) for label, box, crowd in rows]).write(
                out / "Annotations" / f"{image_id}.xml", encoding="utf-8")
        (out / "ImageSets" / "Main" / f"{kind}.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    yaml = out / "data.yaml"
    yaml.write_text(
        "# Pascal VOC dataset written by detcli.data.convert.coco_to_voc\nformat: voc\n"
        + "".join(f"{kind}: {kind}\n" for kind in splits)
        + "names: [" + ", ".join(_yaml_str(n) for n in names) + "]\n",
        encoding="utf-8",
    )
    return yaml


# ---------------------------------------------------------------------------------------------- helpers
def _coco_splits(data: DatasetConfig | str | Path) -> dict[str, tuple[Split, CocoAnnotations]]:
    cfg = data if isinstance(data, DatasetConfig) else resolve_dataset(data)
    out = {}
    for kind in ("train", "val"):
        split = getattr(cfg, kind)
        if split is None:
            continue
        if not isinstance(split, Split):
            raise DatasetError(f"{split.source}: the converters read COCO datasets, this split is {split.format}")
        out[kind] = (split, load_coco_json(split.ann_file))
    names = {tuple(c.class_names) for _, c in out.values()}
    if len(names) > 1:
        raise DatasetError(f"the splits have different categories: {sorted(names)}")
    return out


def _empty_folder(out: str | Path) -> Path:
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise DatasetError(f"{out} exists and is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    return out


def _per_image(coco: CocoAnnotations):
    """(image record, [(label, (x, y, w, h), crowd)]) per image; malformed boxes (NaN rows) left out."""
    rows: dict[int, list] = {m["id"]: [] for m in coco.images}
    for image_id, label, box, crowd in zip(coco.ann_image_ids, coco.ann_labels, coco.ann_xywh, coco.ann_crowd):
        if not np.isnan(box).any():
            rows[int(image_id)].append((int(label), tuple(float(v) for v in box), bool(crowd)))
    return [(m, rows[m["id"]]) for m in coco.images]


def _checked_name(file_name: str, split: Split) -> str:
    if escapes_image_dir(file_name):
        raise DatasetError(f"annotation file {split.ann_file}: image {file_name!r} is outside {split.img_dir}")
    src = split.img_dir / file_name
    if not src.is_file():
        raise DatasetError(f"annotation file {split.ann_file}: image {src} does not exist")
    return file_name


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_jpeg(src: Path, dst: Path) -> None:
    if src.suffix.lower() in (".jpg", ".jpeg"):
        _link(src, dst)
        return
    img = read_image_bgr(src)
    if img is None or not cv2.imwrite(str(dst), img, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise DatasetError(f"cannot re-encode {src} as a JPEG")


def _number(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else f"{v:.10g}"


def _voc_xml(image_id: str, image: dict, objects: list[tuple[str, tuple, bool]]) -> ET.ElementTree:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    size = ET.SubElement(root, "size")
    for tag, v in (("width", image["width"]), ("height", image["height"]), ("depth", 3)):
        ET.SubElement(size, tag).text = _number(v)
    for name, (x, y, w, h), crowd in objects:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = name
        ET.SubElement(obj, "difficult").text = "1" if crowd else "0"
        box = ET.SubElement(obj, "bndbox")
        for tag, v in (("xmin", x + 1), ("ymin", y + 1), ("xmax", x + w), ("ymax", y + h)):
            ET.SubElement(box, tag).text = _number(v)
    ET.indent(root)
    return ET.ElementTree(root)


def _yaml_str(name: str) -> str:
    """A class name as a YAML scalar (quoted: names like 'yes', '1' or 'a: b' stay strings)."""
    return "'" + name.replace("'", "''") + "'"
