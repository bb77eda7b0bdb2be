"""Small Pascal VOC and YOLO datasets written on disk: images, annotation XML, label files."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def write_image(path: Path, w: int = 40, h: int = 30) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((h, w, 3), 127, dtype=np.uint8))
    return path


def voc_xml(objects: list[tuple], size: tuple[int, int] | None = (40, 30)) -> str:
    """An annotation file: objects [(name, difficult, xmin, ymin, xmax, ymax)]."""
    parts = ["<annotation>"]
    if size is not None:
        parts.append(f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>")
    for name, difficult, *box in objects:
        coords = "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box))
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>{coords}</bndbox></object>")
    return "".join(parts) + "</annotation>"


def voc_root(root: Path, images: dict[str, list[tuple]], sets: dict[str, list[str]], jpeg: bool = True) -> Path:
    """A VOC root with ``images`` {id: objects} and image sets {name: [ids]}."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for image_id, objects in images.items():
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(objects))
        if jpeg:
            write_image(root / "JPEGImages" / f"{image_id}.jpg")
    for name, ids in sets.items():
        (root / "ImageSets" / "Main" / f"{name}.txt").write_text("".join(f"{i}\n" for i in ids))
    return root


def yolo_root(root: Path, labels: dict[str, str], names="[a, b]", extra: str = "") -> Path:
    """A YOLO dataset: one 40x30 image per entry of ``labels`` {stem: label text or None (no file)} in train
    and val; returns the data.yaml."""
    for split in ("train", "val"):
        for stem, text in labels.items():
            write_image(root / "images" / split / f"{stem}.jpg")
            if text is not None:
                (root / "labels" / split).mkdir(parents=True, exist_ok=True)
                (root / "labels" / split / f"{stem}.txt").write_text(text)
    yaml = root / "data.yaml"
    yaml.write_text(f"train: images/train\nval: images/val\nnames: {names}\n{extra}")
    return yaml
