"""Small COCO datasets written on disk: JPEGs and an annotation file."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np


def write_coco(tmp: Path, images, anns, cats=None, name="ann.json") -> tuple[Path, Path]:
    """Write JPEGs for ``images`` [(file_name, w, h)] and a COCO file; returns (ann_file, img_dir)."""
    img_dir = tmp / "imgs"
    img_dir.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    recs = []
    for i, (fn, w, h) in enumerate(images, start=1):
        cv2.imwrite(str(img_dir / fn), rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8))
        recs.append({"id": i, "file_name": fn, "width": w, "height": h})
    cats = cats if cats is not None else [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
    ann_file = tmp / name
    ann_file.write_text(json.dumps({"images": recs, "annotations": anns, "categories": cats}))
    return ann_file, img_dir


def ann(i, image_id, bbox, cat=1, **kw):
    return {"id": i, "image_id": image_id, "category_id": cat, "bbox": bbox, **kw}
