"""Statistics of a split's labels, for ``labels.jpg`` and ``detcli train --check``.

Everything is read from a :class:`~detcli.data.coco.CocoDetection`'s in-memory annotations (the training
targets: crowd and malformed boxes already left out), in original image pixels. The duplicate-image check
reads every file's bytes once, and decodes them when asked (``train --check``: a truncated image is found
before a run meets it), with the decoder every command uses (:func:`duplicate_files`).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from detcli.fileio import open_regular, read_regular_bytes
SIZE_EDGES = (0, 8, 16, 32, 64, 96, 128, 256, 512, np.inf)
# width / height bin edges
ASPECT_EDGES = (0, 1 / 4, 1 / 2, 2 / 3, 3 / 2, 2, 4, np.inf)
ASPECT_LABELS = ("<1/4", "1/4-1/2", "1/2-2/3", "2/3-3/2", "3/2-2", "2-4", ">4")


@dataclass
class LabelStats:
    """The boxes of a split.

    Attributes:
        class_names: (K,) names in label order.
        boxes: (N, 4) float64 xyxy, original pixels.
        labels: (N,) int64 class indices.
        image_index: (N,) int64 index of each box's image in the dataset.
        image_sizes: (I, 2) float64 (width, height) of each image, as its annotation file says.
        file_names: (I,) image file names, relative to ``img_dir``.
        img_dir: the split's image folder.
    """

    class_names: list[str]
    boxes: np.ndarray
    labels: np.ndarray
    image_index: np.ndarray
    image_sizes: np.ndarray
    file_names: list[str]
    img_dir: Path

    @property
    def widths(self) -> np.ndarray:
        return self.boxes[:, 2] - self.boxes[:, 0]

    @property
    def heights(self) -> np.ndarray:
        return self.boxes[:, 3] - self.boxes[:, 1]

    def sqrt_area(self) -> np.ndarray:
        """(N,) sqrt(w·h) in pixels."""
        return np.sqrt(self.widths * self.heights)

    def aspect(self) -> np.ndarray:
        """(N,) w / h."""
        return self.widths / self.heights

    def per_class(self) -> np.ndarray:
        """(K,) boxes per class."""
        return np.bincount(self.labels, minlength=len(self.class_names))

    def boxes_per_image(self) -> np.ndarray:
        """(I,) boxes of each image."""
        return np.bincount(self.image_index, minlength=len(self.file_names))

    def images_without_labels(self) -> list[str]:
        """File names of the images with no box."""
        return [self.file_names[i] for i in np.flatnonzero(self.boxes_per_image() == 0)]

    def duplicate_boxes(self) -> list[dict[str, Any]]:
        """Boxes that repeat another box of the same image and class with identical coordinates: one entry
        per repeated box (``file_name``, ``class``, ``box`` xyxy, ``copies``)."""
        rows = np.concatenate([self.image_index[:, None].astype(np.float64), self.labels[:, None].astype(np.float64),
                               self.boxes], axis=1)
        if not len(rows):
            return []
        unique, counts = np.unique(rows, axis=0, return_counts=True)
        return [
            {"file_name": self.file_names[int(r[0])], "class": self.class_names[int(r[1])],
             "box": [round(float(v), 2) for v in r[2:]], "copies": int(n)}
            for r, n in zip(unique[counts > 1], counts[counts > 1])
        ]


def label_stats(dataset) -> LabelStats:
    """:class:`LabelStats` of a :class:`~detcli.data.coco.CocoDetection` (its served images and targets)."""
    boxes, labels, index, sizes, names = [], [], [], [], []
    for i in range(len(dataset)):
        b, lab = dataset.annotation(i)
        info = dataset.image_info(i)
        boxes.append(np.asarray(b, dtype=np.float64).reshape(-1, 4))
        labels.append(np.asarray(lab, dtype=np.int64).reshape(-1))
        index.append(np.full(len(lab), i, dtype=np.int64))
        sizes.append((float(info["width"]), float(info["height"])))
        names.append(str(info["file_name"]))
    return LabelStats(
        class_names=list(dataset.class_names),
        boxes=np.concatenate(boxes) if boxes else np.zeros((0, 4)),
        labels=np.concatenate(labels) if labels else np.zeros(0, np.int64),
        image_index=np.concatenate(index) if index else np.zeros(0, np.int64),
        image_sizes=np.asarray(sizes, dtype=np.float64).reshape(-1, 2),
        file_names=names,
        img_dir=Path(dataset.img_dir),
    )


def class_histogram(values: np.ndarray, labels: np.ndarray, num_classes: int, edges) -> np.ndarray:
    """(K, B) counts of ``values`` (N,) per class (``labels`` (N,)) in the bins ``[edges[b], edges[b+1])``."""
    bins = np.clip(np.searchsorted(np.asarray(edges, dtype=np.float64), values, side="right") - 1, 0, len(edges) - 2)
    out = np.zeros((num_classes, len(edges) - 1), dtype=np.int64)
    np.add.at(out, (labels, bins), 1)
    return out


def size_labels() -> list[str]:
    """Column names of the sqrt(area) bins, e.g. ``8-16``, ``512+``."""
    e = SIZE_EDGES
    return [f"{e[i]:g}-{e[i + 1]:g}" if np.isfinite(e[i + 1]) else f"{e[i]:g}+" for i in range(len(e) - 1)]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-1 of a file's bytes (a regular file only: :func:`~detcli.fileio.open_regular`)."""
    h = hashlib.sha1()
    with open_regular(path) as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def duplicate_files(paths: Iterable[Path], decode: bool = False) -> tuple[list[list[int]], list[tuple[int, str]]]:
    """Files with identical bytes: groups of indices into ``paths`` (each group in the order given, groups in
    the order of their first file), and the indices of the files that could not be read with the reason.

    ``decode``: also decode each file's bytes as an image (:func:`~detcli.data.image_io.decode_image`); one that
    does not decode (corrupt, truncated) is unreadable too, still hashed.
    """
    from detcli.data.image_io import decode_image  # OpenCV: only when images are looked at

    by_digest: dict[str, list[int]] = {}
    unreadable: list[tuple[int, str]] = []
    for i, p in enumerate(paths):
        try:
            data = read_regular_bytes(p)
        except OSError as e:
            unreadable.append((i, e.strerror or type(e).__name__))
            continue
        by_digest.setdefault(hashlib.sha1(data).hexdigest(), []).append(i)
        if decode and decode_image(data) is None:
            unreadable.append((i, "corrupt or truncated: it does not decode as an image"))
    return [g for g in by_digest.values() if len(g) > 1], unreadable


__all__ = ["LabelStats", "label_stats", "class_histogram", "size_labels", "duplicate_files", "file_digest",
           "SIZE_EDGES", "ASPECT_EDGES", "ASPECT_LABELS"]
