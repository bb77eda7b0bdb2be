"""The built-in demo dataset: five kinds of filled shapes on cluttered backgrounds, generated locally.

Deterministic: image ``i`` of a split is drawn from its own generator seeded with
(``DEMO_SEED``, split, i), so the same code gives the same files every time, and changing the
counts does not change the images that remain. Written as COCO JSON + JPEG so any viewer opens it::

    <root>/demo.yaml
    <root>/annotations/instances_train.json, instances_val.json
    <root>/train/000000.jpg ...   <root>/val/000000.jpg ...
"""
from __future__ import annotations

import json
import math
import os
import shutil
import uuid
from pathlib import Path

import cv2
import numpy as np

DEMO_VERSION = 1
DEMO_SEED = 20240917
NUM_TRAIN = 512
NUM_VAL = 128
CLASSES = ("circle", "square", "triangle", "star", "ring")
CLASS_HUES = (0, 60, 120, 28, 150)  # OpenCV hue (0..180) each class tends to have
IMG_SIDE = (288, 416)  # each side drawn independently from this range (inclusive)
MIN_OBJ, MAX_OBJ_FRAC = 8.0, 0.65  # object size from 8 px to 65 % of the shorter side, log-uniform
MAX_OBJECTS = 8
EMPTY_PROB = 0.06  # share of images with no object
MAX_OCCLUSION = 0.3  # a new object may cover at most this share of an existing one's box (and vice versa)
MIN_VISIBLE_PX = 16
JPEG_QUALITY = 90
_MARKER = ".detcli-demo.json"
_SPLITS = {"train": 0, "val": 1}


def default_demo_root() -> Path:
    """``$DETCLI_HOME/demo-v<N>``, or ``~/.cache/detcli/demo-v<N>``."""
    home = Path(os.environ.get("DETCLI_HOME") or "~/.cache/detcli").expanduser()
    return home / f"demo-v{DEMO_VERSION}"


# ---------------------------------------------------------------------------------------------- drawing
def _poly(cx: float, cy: float, radii: np.ndarray, angle0: float) -> np.ndarray:
    """Closed polygon with vertex ``k`` at angle ``angle0 + 2πk/n`` and radius ``radii[k]``; (n, 2) fixed-point."""
    a = angle0 + 2 * np.pi * np.arange(len(radii)) / len(radii)
    pts = np.stack([cx + radii * np.cos(a), cy + radii * np.sin(a)], axis=1)
    return np.round(pts * 16).astype(np.int32)  # cv2 shift=4


def _draw_shape(canvas: np.ndarray, cls: int, cx: float, cy: float, size: float, angle: float, color, line) -> None:
    """Draw one filled shape of extent ~``size`` centred at (cx, cy) on ``canvas`` (image or id map)."""
    r = size / 2
    c16 = (int(round(cx * 16)), int(round(cy * 16)))
    if cls == 0:  # circle
        cv2.circle(canvas, c16, int(round(r * 16)), color, -1, line, shift=4)
    elif cls == 1:  # square, tilted by at most ±15° so it never turns into a diamond
        half_diag = r * 0.85 * math.sqrt(2)
        tilt = (angle / (2 * np.pi) - 0.5) * math.radians(30)
        cv2.fillPoly(canvas, [_poly(cx, cy, np.full(4, half_diag), tilt + np.pi / 4)], color, line, shift=4)
    elif cls == 2:  # triangle
        cv2.fillPoly(canvas, [_poly(cx, cy, np.full(3, r * 1.1), angle)], color, line, shift=4)
    elif cls == 3:  # five-pointed star
        radii = np.tile([r * 1.05, r * 0.45], 5)
        cv2.fillPoly(canvas, [_poly(cx, cy, radii, angle)], color, line, shift=4)
    else:  # ring: thick circle outline, the hole shows what is beneath
        thick = max(2.0, 0.3 * r)
        cv2.circle(canvas, c16, int(round((r - thick / 2) * 16)), color, int(round(thick)), line, shift=4)


def _hsv_color(h: float, s: float, v: float) -> tuple[int, int, int]:
    px = np.array([[[h % 180, s, v]]], dtype=np.uint8)
    b, g, r = cv2.cvtColor(px, cv2.COLOR_HSV2BGR)[0, 0]
    return int(b), int(g), int(r)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Smooth colour field + medium blotches + distractor lines, curves and translucent blobs (not objects)."""
    coarse = rng.integers(40, 216, size=(4, 4, 3), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC).astype(np.int16)
    mid = rng.integers(-45, 46, size=(14, 14, 3)).astype(np.float32)
    img += cv2.resize(mid, (w, h), interpolation=cv2.INTER_LINEAR).astype(np.int16)
    img = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(1, 5)):  # translucent elongated blobs
        layer = img.copy()
        ax = rng.uniform(15, 0.4 * min(w, h))
        axes = (int(ax), int(ax / rng.uniform(1.8, 4.0)))
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.ellipse(layer, centre, axes, float(rng.uniform(0, 180)), 0, 360, col, -1, cv2.LINE_AA)
        alpha = float(rng.uniform(0.25, 0.45))
        img = cv2.addWeighted(layer, alpha, img, 1 - alpha, 0)
    for _ in range(rng.integers(3, 11)):  # straight lines
        p1 = tuple(int(v) for v in rng.integers(0, (w, h)))
        p2 = tuple(int(v) for v in rng.integers(0, (w, h)))
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.line(img, p1, p2, col, int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(rng.integers(1, 5)):  # open random-walk curves
        start = rng.uniform((0, 0), (w, h))
        steps = rng.normal(0, 25, size=(int(rng.integers(3, 7)), 2))
        pts = np.round(np.cumsum(np.vstack([start, steps]), axis=0)).astype(np.int32)
        col = tuple(int(c) for c in rng.integers(0, 256, size=3))
        cv2.polylines(img, [pts], False, col, int(rng.integers(1, 3)), cv2.LINE_AA)
    return img


def _overlap_ok(box: np.ndarray, placed: list[np.ndarray]) -> bool:
    """Partial occlusion only: intersection ≤ MAX_OCCLUSION of the smaller box, against every placed box."""
    for b in placed:
        iw = min(box[2], b[2]) - max(box[0], b[0])
        ih = min(box[3], b[3]) - max(box[1], b[1])
        if iw > 0 and ih > 0:
            smaller = min((box[2] - box[0]) * (box[3] - box[1]), (b[2] - b[0]) * (b[3] - b[1]))
            if iw * ih > MAX_OCCLUSION * smaller:
                return False
    return True


def render_image(rng: np.random.Generator, noise_tile: np.ndarray) -> tuple[np.ndarray, list[tuple[int, list[int], int]]]:
    """One demo image.

    Returns:
        img: (H, W, 3) uint8 BGR.
        objects: ``(class index, [x, y, w, h] of the visible pixels, visible pixel count)`` per object.
    """
    w, h = (int(v) for v in rng.integers(IMG_SIDE[0], IMG_SIDE[1] + 1, size=2))
    img = _background(rng, w, h)
    ids = np.zeros((h, w), dtype=np.uint8)
    n = 0 if rng.random() < EMPTY_PROB else int(rng.integers(1, MAX_OBJECTS + 1))
    placed: list[np.ndarray] = []
    drawn: list[int] = []
    max_size = MAX_OBJ_FRAC * min(w, h)
    for _ in range(n):
        cls = int(rng.integers(len(CLASSES)))
        size = float(np.exp(rng.uniform(np.log(MIN_OBJ), np.log(max_size))))
        angle = float(rng.uniform(0, 2 * np.pi))
        hue = CLASS_HUES[cls] + rng.uniform(-12, 12) if rng.random() > 0.15 else rng.uniform(0, 180)
        color = _hsv_color(hue, rng.uniform(150, 255), rng.uniform(110, 255))
        for _try in range(15):
            m = 0.3 * size  # up to ~20 % of an object may leave the image
            cx, cy = rng.uniform(m, w - m), rng.uniform(m, h - m)
            box = np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])
            if _overlap_ok(box, placed):
                break
        else:
            continue
        placed.append(box)
        drawn.append(cls)
        _draw_shape(img, cls, cx, cy, size, angle, color, cv2.LINE_AA)
        _draw_shape(ids, cls, cx, cy, size, angle, len(drawn), cv2.LINE_8)

    objects = []
    for k, (cls, box) in enumerate(zip(drawn, placed), start=1):
        x0, y0 = max(int(box[0]) - 2, 0), max(int(box[1]) - 2, 0)
        x1, y1 = min(int(box[2]) + 3, w), min(int(box[3]) + 3, h)
        mask = ids[y0:y1, x0:x1] == k
        area = int(mask.sum())
        if area < MIN_VISIBLE_PX:
            continue
        rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
        bx, by = x0 + int(cols[0]), y0 + int(rows[0])
        objects.append((cls, [bx, by, int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)], area))

    oy, ox = (int(v) for v in rng.integers(0, noise_tile.shape[0] - max(h, w), size=2))
    noisy = img.astype(np.int16) + noise_tile[oy : oy + h, ox : ox + w]
    return np.clip(noisy, 0, 255).astype(np.uint8), objects


# ---------------------------------------------------------------------------------------------- writing
def _write_split(root: Path, split: str, count: int) -> None:
    img_dir = root / split
    img_dir.mkdir(parents=True)
    noise_tile = np.random.default_rng([DEMO_SEED, 99]).normal(0, 6, size=(IMG_SIDE[1] + 64,) * 2 + (3,))
    noise_tile = np.round(noise_tile).astype(np.int16)
    images, anns = [], []
    for i in range(count):
        rng = np.random.default_rng([DEMO_SEED, _SPLITS[split], i])
        img, objects = render_image(rng, noise_tile)
        name = f"{i:06d}.jpg"
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise RuntimeError(f"JPEG encoding failed for {name}")
        (img_dir / name).write_bytes(buf.tobytes())
        images.append({"id": i + 1, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        for cls, bbox, area in objects:
            anns.append(
                {"id": len(anns) + 1, "image_id": i + 1, "category_id": cls + 1, "bbox": bbox,
                 "area": area, "iscrowd": 0}
            )
    coco = {
        "info": {"description": f"detcli demo dataset v{DEMO_VERSION} ({split})", "version": str(DEMO_VERSION)},
        "images": images,
        "annotations": anns,
        "categories": [{"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)],
    }
    (root / "annotations").mkdir(exist_ok=True)
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco), encoding="utf-8")


def _marker(num_train: int, num_val: int) -> dict:
    return {"version": DEMO_VERSION, "seed": DEMO_SEED, "num_train": num_train, "num_val": num_val}


def _is_complete(root: Path, num_train: int, num_val: int) -> bool:
    try:
        return json.loads((root / _MARKER).read_text()) == _marker(num_train, num_val)
    except (OSError, ValueError):
        return False


def generate_demo_dataset(out_dir: Path, num_train: int = NUM_TRAIN, num_val: int = NUM_VAL) -> None:
    """Write the demo dataset into the empty or new folder ``out_dir`` (not atomic; see ensure_demo_dataset)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_split(out_dir, "train", num_train)
    _write_split(out_dir, "val", num_val)
    (out_dir / "demo.yaml").write_text(
        f"# detcli built-in demo dataset v{DEMO_VERSION}: {', '.join(CLASSES)}\n"
        "train:\n  ann_file: annotations/instances_train.json\n  img_dir: train\n"
        "val:\n  ann_file: annotations/instances_val.json\n  img_dir: val\n",
        encoding="utf-8",
    )
    (out_dir / _MARKER).write_text(json.dumps(_marker(num_train, num_val)))  # last: marks it complete


def ensure_demo_dataset(root: Path | None = None, num_train: int = NUM_TRAIN, num_val: int = NUM_VAL) -> Path:
    """Return the demo dataset folder, generating it first if it is absent, incomplete or outdated.

    Generation goes to a temporary sibling folder that is renamed into place, so an interrupted run
    never leaves a half dataset; concurrent callers (e.g. DDP ranks) each generate and the first rename wins.
    """
    root = Path(root).expanduser() if root is not None else default_demo_root()
    if _is_complete(root, num_train, num_val):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        generate_demo_dataset(tmp, num_train, num_val)
        if root.exists():  # outdated or incomplete: move it aside first
            old = root.parent / f".{root.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            try:
                root.rename(old)
            except OSError:
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            tmp.rename(root)
        except OSError:
            if not _is_complete(root, num_train, num_val):  # someone else's rename won but it is not ours
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root
