"""Ultralytics YOLO detection datasets, read into the COCO form every detcli dataset has in memory.

Layout (https://docs.ultralytics.com/datasets/detect/)::

    data.yaml        path: ../datasets/shapes   (optional; default the YAML's folder; relative to that folder)
                     train: images/train        (a folder, a .txt list of image paths, or a list of those)
                     val: images/val
                     names: [circle, square]    (or {0: circle, 1: square})
    images/train/a.jpg  ↔  labels/train/a.txt   (the last /images/ of the path becomes /labels/, suffix .txt)

A label file has one object per line, ``class cx cy w h`` as fractions of the image width/height, class
indices from 0. Conversion: YOLO class ``k`` → COCO category id ``k + 1``; the box → pixel ``[x, y, w, h]``
with the image size read from the file header (EXIF orientation applied, as the images are decoded),
rounded to 1e-4 px (:data:`PIXEL_DECIMALS`); ``area`` = w·h. A polygon line ``class x1 y1 x2 y2 x3 y3 …``
(a segmentation label) gives its bounding box, as Ultralytics does. An image without a label file, or
with an empty one, is a background image.

Paths stay inside the dataset (:mod:`detcli.data.paths`): a relative ``train:``/``val:`` entry may not climb
out of ``path`` with ``..`` (an absolute one is the user's explicit choice, as in Ultralytics, and its dataset
folder joins the roots); a line of an image list names an image inside those roots (relative to the list's
folder, or absolute inside them); image lists and label files must really be inside them, symlinks resolved
(they are parsed, and their text can appear in messages). Only regular files are read.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

from detcli.data.coco_json import CocoAnnotations, coco_annotations
from detcli.data.image_size import image_size
from detcli.data.paths import Roots, bad_name, escapes, read_regular_text, within
from detcli.data.yaml_fields import brief, entries, parse_names, yaml_root
from detcli.errors import DatasetError

IMAGE_SUFFIXES = (".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp")  # what OpenCV decodes
COORD_SLACK = 0.01  # coordinates may overshoot 0..1 by this much (converter rounding); more is an error
# Pixel coordinates are rounded to 1e-4 px: a whole-pixel box written as fractions comes back whole, so its
# area falls on the same side of COCO evaluation's small/medium/large bounds (32², 96²) as the original's.
PIXEL_DECIMALS = 4
_EXAMPLES = 5


def yolo_yaml_splits(data: dict[str, Any], path: Path) -> tuple[dict[str, list[Path]], list[str], Path]:
    """Check a YOLO ``data.yaml`` (already parsed) → ({"train"?, "val"}: image sources, names, root).

    Sources are absolute: folders, ``.txt`` image lists, or image files, each checked to exist; a relative
    one must stay inside the root (``path``), an absolute one is taken as written.
    """
    where = f"dataset file {path}"
    if "names" not in data:
        raise DatasetError(
            f"{where}: no 'names': a YOLO data.yaml lists the class names (names: [cat, dog] or "
            f"names: {{0: cat, 1: dog}}); for a Pascal VOC dataset add 'format: voc'"
        )
    names = parse_names(data["names"], where)
    if "nc" in data and data["nc"] != len(names):
        raise DatasetError(f"{where}: nc is {brief(data['nc'])} but names has {len(names)} entries")
    root = yaml_root(data, path)
    if "val" not in data:
        raise DatasetError(f"{where}: no 'val' (the images to evaluate on, e.g. val: images/val)")
    splits = {}
    for key in ("train", "val"):
        if data.get(key) is None:
            continue
        sources = []
        for e in entries(data, key):
            if not isinstance(e, str) or not e.strip():
                raise DatasetError(f"{where}: {key}: expected a folder, a .txt list of images or a list of those, "
                                   f"got {brief(e)}")
            text = e.strip()
            given = Path(text).expanduser()
            if not given.is_absolute() and escapes(text):
                raise DatasetError(f"{where}: {key}: {brief(text)} leads out of the dataset root {root} with '..': "
                                   f"a relative entry names something inside path:, or write the absolute path")
            p = (root / given).absolute()
            if not p.exists():
                raise DatasetError(f"{where}: {key}: {p} does not exist (paths are relative to {root})")
            sources.append(p)
        splits[key] = sources
    return splits, names, root


def dataset_roots(root: Path, sources: list[Path]) -> Roots:
    """The folders a split may read: the root (``path``) and, for each source outside it (an absolute entry of
    the YAML), its dataset folder: the folder above its last ``images`` folder (where ``labels`` is), else the
    source folder itself, or the folder of a list or image file."""
    extra = []
    for s in sources:
        if within(s, root):
            continue
        parts = s.parts
        if "images" in parts[:-1] or (s.is_dir() and parts[-1] == "images"):
            last = len(parts) - 1 - parts[::-1].index("images")
            extra.append(Path(*parts[:last]))
        else:
            extra.append(s if s.is_dir() else s.parent)
    return Roots([root, *extra])


def label_path(image: str | Path) -> str:
    """Ultralytics' rule: the last ``/images/`` of the path becomes ``/labels/``, the suffix ``.txt``."""
    s = str(image)
    sa, sb = f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}"
    if sa in s:
        s = sb.join(s.rsplit(sa, 1))
    return os.path.splitext(s)[0] + ".txt"


def image_files(sources: list[Path], roots: Roots) -> tuple[list[str], list[str]]:
    """Images of a split (normalised absolute paths, sorted, without repeats), and the paths a ``.txt`` list
    names that do not exist.

    A folder is searched recursively (symlinked folders followed once); a ``.txt`` file lists one image per
    line, relative to the list's folder unless absolute; any other file is one image. ``roots``
    (:func:`dataset_roots`) confine the lists: a list must really be inside them, and so must every image it
    names.

    Raises:
        DatasetError: a list outside the roots, unreadable, or with a line naming a file outside them.
    """
    found: list[str] = []
    missing: list[str] = []
    for src in sources:
        if src.is_dir():
            found += _walk_images(src)
        elif src.suffix.lower() == ".txt":
            roots.check(src, f"image list {src}")
            for n, line in enumerate(read_regular_text(src, "image list").splitlines(), start=1):
                line = line.strip()
                if line:
                    p = _list_entry(src, n, line, roots)
                    (found if os.path.isfile(p) else missing).append(p)
        else:
            found.append(os.path.normpath(src.absolute()))
    return sorted(set(found)), missing


def _list_entry(src: Path, n: int, line: str, roots: Roots) -> str:
    """The image a line of an image list names (relative to the list's folder), checked to be in ``roots``."""
    problem = bad_name(line)
    if problem:
        raise DatasetError(f"image list {src}, line {n}: {brief(line)} cannot name a file ({problem})")
    p = os.path.normpath(os.path.join(src.parent.absolute(), line))
    if not roots.holds(p):
        raise DatasetError(f"image list {src}, line {n}: {brief(line)} is outside the dataset ({roots}); a list "
                           f"names images inside it, relative to the list's folder")
    return p


def _walk_images(folder: Path) -> list[str]:
    out, seen = [], set()
    for dirpath, dirnames, filenames in os.walk(os.path.normpath(folder.absolute()), followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a symlink loop
            dirnames[:] = []
            continue
        seen.add(real)
        out += [os.path.join(dirpath, n) for n in filenames if os.path.splitext(n)[1].lower() in IMAGE_SUFFIXES]
    return out


def read_label_file(path: Path, names: list[str], source: Path) -> list[tuple[int, tuple[float, float, float, float]]]:
    """Objects of one label file: [(class index, (x0, y0, x1, y1) as fractions of the image)].

    Raises:
        DatasetError: naming the file and line, for a line that does not parse, a class index that is not
            in ``names`` (``source``, the data.yaml, is named with the number of names), or coordinates
            outside 0..1 (beyond :data:`COORD_SLACK`).
    """
    out = []
    for n, line in enumerate(read_regular_text(path, "label file").splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            values = []
        if len(values) < len(tokens) or not math.isfinite(sum(values)):
            _number_error(tokens, _at(path, n))
        cls, coords = values[0], values[1:]
        if len(coords) != 4 and (len(coords) < 6 or len(coords) % 2):
            hint = " (a 6th value: a prediction file with confidences?)" if len(coords) == 5 else ""
            raise DatasetError(f"{_at(path, n)}: expected 5 values (class cx cy w h) or a class and 3 or more "
                               f"x y pairs (a polygon), got {len(tokens)}{hint}")
        if not cls.is_integer():
            raise DatasetError(f"{_at(path, n)}: class index {tokens[0]!r} is not a whole number")
        if not 0 <= cls < len(names):
            raise DatasetError(f"{_at(path, n)}: class index {int(cls)} is out of range: {source} has "
                               f"{len(names)} names (indices 0..{len(names) - 1})")
        if not -COORD_SLACK <= min(coords) <= max(coords) <= 1 + COORD_SLACK:
            bad = next(v for v in coords if not -COORD_SLACK <= v <= 1 + COORD_SLACK)
            raise DatasetError(f"{_at(path, n)}: coordinate {bad:g} is outside 0..1; YOLO labels are fractions "
                               f"of the image width and height, not pixels")
        if len(coords) == 4:
            cx, cy, w, h = coords
            box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
        else:
            xs, ys = coords[0::2], coords[1::2]
            box = (min(xs), min(ys), max(xs), max(ys))
        out.append((int(cls), box))
    return out


def _at(path: Path, line: int) -> str:
    return f"label file {path}, line {line}"


def _number_error(tokens: list[str], where: str) -> None:
    """Raise for the first token of a line that is not a finite number (the line's numbers overflowed if none)."""
    for t in tokens:
        try:
            v = float(t)
        except ValueError:
            raise DatasetError(f"{where}: {t!r} is not a number (a line is: class cx cy w h)") from None
        if not math.isfinite(v):
            raise DatasetError(f"{where}: {t!r} is not a finite number")
    raise DatasetError(f"{where}: numbers too large")


def load_yolo_split(sources: list[Path], names: list[str], source: Path,
                    root: Path | None = None) -> tuple[CocoAnnotations, Path]:
    """Read a YOLO split into COCO annotations (see the module docstring) and the folder its names are under.

    Args:
        sources: folders, ``.txt`` image lists or image files (:func:`image_files`).
        names: class names (index = YOLO class).
        source: the data.yaml, named in messages and as the annotations' ``path``.
        root: the dataset root (the YAML's ``path``; default the YAML's folder), see :func:`dataset_roots`.
    Returns:
        (annotations, image folder): image ``file_name``s are relative to the folder, the deepest one
        holding every image. Listed images that do not exist or whose header cannot be read are left out
        with a :class:`~detcli.data.coco.DatasetWarning` naming a few.
    """
    from detcli.data.coco import DatasetWarning

    roots = dataset_roots(Path(root) if root is not None else Path(source).parent, sources)
    files, missing = image_files(sources, roots)
    images, anns, unreadable = [], [], []
    for path in files:
        size = image_size(path)
        if size is None:
            unreadable.append(path)
            continue
        w, h = size
        image_id = len(images) + 1
        images.append({"id": image_id, "path": path, "width": w, "height": h})
        lbl = label_path(path)
        if not os.path.lexists(lbl):
            continue  # a background image
        roots.check(lbl, f"label file {lbl}")
        for cls, box in read_label_file(Path(lbl), names, source):
            x0, y0, x1, y1 = (round(v * side, PIXEL_DECIMALS) for v, side in zip(box, (w, h, w, h)))
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": cls + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": (x1 - x0) * (y1 - y0), "iscrowd": 0})
    for what, paths in (("listed but missing", missing), ("unreadable (no image size)", unreadable)):
        if paths:
            warnings.warn(f"{source}: {len(paths)} image(s) {what}, left out: "
                          + ", ".join(str(p) for p in paths[:_EXAMPLES]), DatasetWarning, 2)
    if not images:
        looked = ", ".join(str(s) for s in sources)
        raise DatasetError(f"dataset file {source}: no readable image in {looked} "
                           f"(image files end in {', '.join(IMAGE_SUFFIXES)})")
    img_dir = os.path.commonpath([os.path.dirname(m["path"]) for m in images])
    for m in images:
        m["file_name"] = os.path.relpath(m.pop("path"), img_dir).replace(os.sep, "/")
    coco = {
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(names)],
    }
    return coco_annotations(coco, source), Path(img_dir)
