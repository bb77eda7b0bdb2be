"""Read a COCO detection annotation file and check its structure, with messages that name the entry.

Structural problems (bad JSON, missing keys, wrong types, ids beyond int64, unknown or duplicate ids, an
``iscrowd`` that is not 0/1, a ``file_name`` no file system can hold) raise :class:`DatasetError` naming the
file and the entry's index, when the file is read: never later, at the first validation of a run. Box
*values* are not judged here: a malformed ``bbox`` becomes a NaN row that :func:`box_drop_reasons` counts as
a drop, so one bad box never stops a run.
"""
from __future__ import annotations

import json
import math
import reprlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detcli.data.paths import bad_name, escapes

from detcli.fileio import open_regular
from detcli.errors import DatasetError

ID_LIMIT = 2**63  # ids are int64 in every array (and in pycocotools' C++ twin): |id| < 2**63

# Why an annotation is not a training target; the order is the order of the checks.
KEEP = 0
DROP_REASONS: tuple[str, ...] = (
    "malformed_bbox",  # not a list of 4 finite numbers
    "non_positive_area",  # ``area`` ≤ 0 (nanodet's check)
    "smaller_than_1px",  # w < 1 or h < 1 (nanodet's check)
    "outside_image",  # nothing left after clipping to the image
    "crowd",  # iscrowd / ignore: excluded from targets (nanodet's gt_bboxes_ignore)
)


@dataclass
class CocoAnnotations:
    """A checked COCO file.

    Attributes:
        path: the annotation file.
        images: image records ``{id, file_name, width, height}`` sorted by id.
        cat_ids: sorted category ids; label ``i`` ↔ ``cat_ids[i]``.
        class_names: names in label order.
        ann_ids, ann_image_ids, ann_labels: (A,) int64.
        ann_xywh: (A, 4) float64 COCO boxes; a row of NaN where ``bbox`` is malformed.
        ann_area: (A,) float64 ``area`` (w·h where missing).
        ann_crowd: (A,) bool.
        coco_dict: the dataset as a dict for pycocotools (malformed boxes removed, missing ``area``
            filled with w·h, every record reduced to its checked fields: images to id/file_name/width/height,
            annotations to id/image_id/category_id/bbox/area/iscrowd(/ignore), categories to
            id/name/supercategory; no ``info``), so COCOeval can use and deep-copy it.
    """

    path: Path
    images: list[dict[str, Any]]
    cat_ids: list[int]
    class_names: list[str]
    ann_ids: np.ndarray
    ann_image_ids: np.ndarray
    ann_labels: np.ndarray
    ann_xywh: np.ndarray
    ann_area: np.ndarray
    ann_crowd: np.ndarray
    coco_dict: dict[str, Any]


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_id(v: Any) -> bool:
    """An integer that fits the int64 arrays ids are kept in."""
    return _is_int(v) and -ID_LIMIT < v < ID_LIMIT


def _is_flag(v: Any) -> bool:
    """``iscrowd`` / ``ignore``: 0 or 1 (also 0.0/1.0 and JSON ``true``/``false``), as pycocotools reads them."""
    return isinstance(v, (int, float)) and v in (0, 1)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


_ID_RULE = "needs an integer '{}' (a 64-bit id: between -2**63 and 2**63)"


def _fail(path: Path, msg: str) -> DatasetError:
    return DatasetError(f"annotation file {path}: {msg}")


def escapes_image_dir(file_name: str) -> bool:
    """True when an image's ``file_name`` is absolute or climbs out of the image folder with ``..``
    (:func:`detcli.data.paths.escapes`, the one rule for every format).

    Such names are refused, never opened: a dataset may only read files inside its own image folder.
    A symlink inside the folder is the dataset owner's choice and is followed (images are only decoded).
    """
    return escapes(file_name)


def _read_json(path: Path) -> Any:
    try:
        with open_regular(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise DatasetError(f"annotation file {path} does not exist") from None
    except json.JSONDecodeError as e:
        raise _fail(path, f"invalid JSON at line {e.lineno}, column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise _fail(path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise _fail(path, "nested too deeply to read (a COCO file is a few levels deep)") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise _fail(path, f"invalid JSON ({e})") from None
    except OSError as e:
        raise DatasetError(f"annotation file {path} cannot be read: {e.strerror or e}") from None


def _first_bad(path: Path, items: list, key: str, check, what: str) -> None:
    """Raise naming the first entry of ``items`` that fails ``check`` and how many do."""
    bad = [i for i, it in enumerate(items) if not check(it)]
    if bad:
        i = bad[0]
        ident = f" (id {reprlib.repr(items[i]['id'])})" if isinstance(items[i], dict) and "id" in items[i] else ""
        more = f" ({len(bad)} entries have this problem)" if len(bad) > 1 else ""
        raise _fail(path, f"{key}[{i}]{ident}: {what}; got {_short(items[i])}{more}")


def _short(v: Any, n: int = 160) -> str:
    try:
        s = json.dumps(v, default=str)
    except (ValueError, RecursionError):  # an int of more than 4300 digits, or nesting
        s = f"a {type(v).__name__} too large to show"
    return s if len(s) <= n else s[: n - 3] + "..."


def _check_unique(path: Path, ids: list[int], key: str) -> None:
    seen: set[int] = set()
    for i, v in enumerate(ids):
        if v in seen:
            raise _fail(path, f"{key}[{i}]: duplicate id {v}")
        seen.add(v)


def _parse_bbox(b: Any) -> tuple[float, float, float, float] | None:
    if not isinstance(b, (list, tuple)) or len(b) != 4 or not all(_is_num(v) for v in b):
        return None
    if not all(math.isfinite(v) for v in b):
        return None
    return float(b[0]), float(b[1]), float(b[2]), float(b[3])


def load_coco_json(path: str | Path) -> CocoAnnotations:
    """Read and check a COCO detection file (see module docstring for what is an error)."""
    path = Path(path)
    return coco_annotations(_read_json(path), path)


def coco_annotations(data: Any, path: Path) -> CocoAnnotations:
    """Check a COCO detection dict (as ``json.load`` gives it) and index it; ``path`` names it in messages.

    The YOLO and Pascal VOC readers build such a dict in memory and come through here too.
    """
    if not isinstance(data, dict):
        raise _fail(path, f"expected a JSON object at the top level, got {type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise _fail(path, f"missing the '{key}' key (a COCO detection file has images, annotations, categories)")
        if not isinstance(data[key], list):
            raise _fail(path, f"'{key}' must be a list, got {type(data[key]).__name__}")
    images, anns, cats = data["images"], data["annotations"], data["categories"]

    # categories
    if not cats:
        raise _fail(path, "'categories' is empty")
    _first_bad(path, cats, "categories", lambda c: isinstance(c, dict), "must be an object")
    _first_bad(path, cats, "categories", lambda c: _is_id(c.get("id")), _ID_RULE.format("id"))
    _first_bad(path, cats, "categories", lambda c: isinstance(c.get("name"), str), "needs a string 'name'")
    _check_unique(path, [c["id"] for c in cats], "categories")

    # images
    _first_bad(path, images, "images", lambda m: isinstance(m, dict), "must be an object")
    _first_bad(path, images, "images", lambda m: _is_id(m.get("id")), _ID_RULE.format("id"))
    _first_bad(path, images, "images", lambda m: isinstance(m.get("file_name"), str) and m["file_name"],
               "needs a non-empty string 'file_name'")
    _first_bad(path, images, "images", lambda m: bad_name(m["file_name"]) is None,
               "its 'file_name' cannot name a file (a NUL character, or longer than a file system allows)")
    for key in ("width", "height"):
        _first_bad(path, images, "images", lambda m: _is_num(m.get(key)) and m[key] > 0,
                   f"needs a positive number '{key}'")
    _check_unique(path, [m["id"] for m in images], "images")

    # annotations: structure only; the bbox values are judged later
    _first_bad(path, anns, "annotations", lambda a: isinstance(a, dict), "must be an object")
    for key in ("id", "image_id", "category_id"):
        _first_bad(path, anns, "annotations", lambda a: _is_id(a.get(key)), _ID_RULE.format(key))
    _first_bad(path, anns, "annotations", lambda a: "bbox" in a, "needs a 'bbox' [x, y, w, h]")
    for key in ("iscrowd", "ignore"):
        _first_bad(path, anns, "annotations", lambda a: _is_flag(a.get(key, 0)), f"'{key}' must be 0 or 1")
    _check_unique(path, [a["id"] for a in anns], "annotations")
    image_ids = {m["id"] for m in images}
    _first_bad(path, anns, "annotations", lambda a: a["image_id"] in image_ids,
               "image_id is not among the images")
    cat_ids = sorted(c["id"] for c in cats)
    cat_set = set(cat_ids)
    _first_bad(path, anns, "annotations", lambda a: a["category_id"] in cat_set,
               f"category_id is not among the categories {cat_ids[:20]}")

    cat2label = {cid: i for i, cid in enumerate(cat_ids)}
    name_by_id = {c["id"]: c["name"] for c in cats}
    n = len(anns)
    xywh = np.full((n, 4), np.nan)
    area = np.zeros(n)
    clean_anns = []
    for i, a in enumerate(anns):
        b = _parse_bbox(a["bbox"])
        if b is None:
            continue
        xywh[i] = b
        ar = a.get("area")
        area[i] = float(ar) if _is_num(ar) and math.isfinite(ar) else b[2] * b[3]
        clean = {k: a[k] for k in ("id", "image_id", "category_id", "bbox")}
        clean.update(area=ar if ar == area[i] else float(area[i]), iscrowd=int(a.get("iscrowd", 0)))
        if "ignore" in a:
            clean["ignore"] = int(a["ignore"])
        clean_anns.append(clean)

    # Every record reduced to its checked fields: pycocotools deep-copies ``info`` and the categories, and a
    # deeply nested extra field anywhere (one that json could still parse) would end an evaluation with a
    # RecursionError; ``info`` and ``licenses`` are not needed to score boxes.
    image_records = [{"id": m["id"], "file_name": m["file_name"], "width": m["width"], "height": m["height"]}
                     for m in images]
    coco_dict = {
        "images": image_records,
        "categories": [{"id": c["id"], "name": c["name"], "supercategory": str(c.get("supercategory", ""))}
                       for c in cats],
        "annotations": clean_anns,
    }
    return CocoAnnotations(
        path=path,
        images=sorted((dict(m) for m in image_records), key=lambda m: m["id"]),
        cat_ids=cat_ids,
        class_names=[name_by_id[c] for c in cat_ids],
        ann_ids=np.array([a["id"] for a in anns], dtype=np.int64),
        ann_image_ids=np.array([a["image_id"] for a in anns], dtype=np.int64),
        ann_labels=np.array([cat2label[a["category_id"]] for a in anns], dtype=np.int64),
        ann_xywh=xywh,
        ann_area=area,
        ann_crowd=np.array([bool(a.get("iscrowd", 0) or a.get("ignore", 0)) for a in anns], dtype=bool),
        coco_dict=coco_dict,
    )


def box_drop_reasons(
    xywh: np.ndarray, area: np.ndarray, crowd: np.ndarray, img_w: np.ndarray, img_h: np.ndarray
) -> np.ndarray:
    """Why each annotation is not a training target.

    Args:
        xywh: (A, 4) COCO boxes, NaN rows for malformed ones.
        area: (A,) ``area`` field.
        crowd: (A,) iscrowd / ignore flags.
        img_w, img_h: (A,) size of each annotation's image.
    Returns:
        (A,) int64: ``KEEP`` (0) or ``1 + index`` into :data:`DROP_REASONS` (first failing check).
    """
    x, y, w, h = (xywh[:, i] for i in range(4))
    malformed = np.isnan(xywh).any(axis=1)
    with np.errstate(invalid="ignore"):
        cw = np.minimum(x + w, img_w) - np.maximum(x, 0)
        ch = np.minimum(y + h, img_h) - np.maximum(y, 0)
        checks = [malformed, area <= 0, (w < 1) | (h < 1), (cw <= 0) | (ch <= 0), crowd]
    reasons = np.zeros(len(xywh), dtype=np.int64)
    for code in range(len(checks), 0, -1):  # the first failing check wins
        reasons[checks[code - 1]] = code
    return reasons
