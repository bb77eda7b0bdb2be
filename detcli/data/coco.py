"""A COCO-format detection dataset shared by every detector family.

Built like nanodet's ``CocoDataset`` (class ids sorted → contiguous labels 0..C−1; boxes with
area ≤ 0, w < 1 or h < 1 dropped; crowd boxes kept out of the targets; images without boxes kept
unless ``filter_empty``), plus checks that name the bad file/entry instead of failing deep inside a run.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from detcli.data.coco_json import (
    DROP_REASONS,
    CocoAnnotations,
    box_drop_reasons,
    escapes_image_dir,
    load_coco_json,
)
from detcli.data.image_io import read_image_bgr
from detcli.data.summary import DatasetSummary
from detcli.errors import DatasetError
from detcli.structures import ImageMeta

_EXAMPLES = 5  # how many offending names/ids a summary lists
MAX_REFETCH = 1000  # samples a transform may drop in a row before it is an error (mmengine's max_refetch)
Unreadable = Literal["substitute", "skip", "raise"]
UNREADABLE_MODES: tuple[str, ...] = ("substitute", "skip", "raise")


class DatasetWarning(UserWarning):
    """Something in the data was skipped or looks wrong, but the run can go on."""


class CocoDetection(Dataset):
    """COCO detection dataset.

    Args:
        ann_file: COCO JSON.
        img_dir: folder the images' ``file_name`` are relative to.
        transform: ``(img_bgr uint8 (H,W,3), boxes (G,4) float32, labels (G,) int64, rng) -> dict``
            with ``img``, ``boxes``, ``labels``, ``warp_matrix``, ``img_shape`` (e.g. ``NanoDetTransform``);
            None → the raw image as float32 0..255 BGR with an identity warp. A transform may return None
            to drop the sample (RTMDet's RandomCrop left without a box): another index is then drawn from
            the sample's generator and loaded instead (mmengine's refetch). A transform with ``set_epoch``
            hears of every new training epoch through :meth:`set_epoch` (stage switches, caches).
        filter_empty: drop images without any training target (NanoDet keeps them, mmdet drops them).
        min_size: drop images whose min(width, height) is below this (mmdet's ``filter_cfg.min_size``).
        unreadable: what an image that cannot be read (corrupt, truncated, not a regular file) becomes:
            ``"substitute"``: the next readable image (training); ``"skip"``: a sample marked ``unreadable``
            (see :func:`unreadable_sample`) that :func:`~detcli.data.collate.collate` leaves out of the batch and
            the evaluator counts (evaluation, where a substitute would be scored under the wrong id);
            ``"raise"``: a :class:`DatasetError`.
        annotations: annotations already read (a YOLO or VOC split converted in memory, see
            :func:`detcli.data.build.dataset_for_split`); ``ann_file`` then only names the split.

    ``__getitem__`` returns ``{"img": (3,h,w) float32, "boxes": (G,4) float32 xyxy in transformed pixels,
    "labels": (G,) int64, "meta": ImageMeta}``. The random generator of a sample is seeded from (a draw of
    the process' torch generator, index), so runs with the same seed and worker count repeat exactly, also
    across ``--resume`` (the engine restores the torch generator; workers are re-seeded every epoch).
    """

    def __init__(
        self,
        ann_file: str | Path,
        img_dir: str | Path,
        transform: Callable[..., dict[str, Any]] | None,
        filter_empty: bool,
        min_size: int = 0,
        unreadable: Unreadable = "substitute",
        annotations: CocoAnnotations | None = None,
    ) -> None:
        if unreadable not in UNREADABLE_MODES:
            raise ValueError(f"unreadable must be one of {UNREADABLE_MODES}, got {unreadable!r}")
        self.ann_file = Path(ann_file)
        self.img_dir = Path(img_dir)
        self.transform = transform
        self.unreadable = unreadable
        if not self.img_dir.is_dir():
            raise DatasetError(f"image folder {self.img_dir} (for {self.ann_file.name}) does not exist")
        self._in_memory = annotations is not None
        coco = annotations if annotations is not None else load_coco_json(self.ann_file)
        self._coco_json = coco
        self.cat_ids: list[int] = coco.cat_ids
        self.class_names: list[str] = coco.class_names

        images = coco.images
        n_img = len(images)
        if not n_img:
            raise DatasetError(f"annotation file {self.ann_file}: 'images' is empty")
        widths = np.array([m["width"] for m in images], dtype=np.float64)
        heights = np.array([m["height"] for m in images], dtype=np.float64)
        img_pos = np.searchsorted(np.array([m["id"] for m in images], dtype=np.int64), coco.ann_image_ids)
        reasons = box_drop_reasons(coco.ann_xywh, coco.ann_area, coco.ann_crowd, widths[img_pos], heights[img_pos])

        # Group the kept boxes by image (xywh → xyxy), without a per-box loop.
        keep = reasons == 0
        order = np.argsort(img_pos[keep], kind="stable")
        xywh = coco.ann_xywh[keep][order]
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1).astype(np.float32)
        labels = coco.ann_labels[keep][order]
        splits = np.cumsum(np.bincount(img_pos[keep], minlength=n_img))[:-1]
        per_img_boxes = np.split(boxes, splits)
        per_img_labels = np.split(labels, splits)

        names = [m["file_name"] for m in images]
        outside = np.array([escapes_image_dir(n) for n in names], dtype=bool)
        exists = self._files_exist(names, outside)
        small = np.minimum(widths, heights) < min_size
        n_targets = np.array([len(b) for b in per_img_labels])
        empty = n_targets == 0
        kept_mask = exists & ~small & ~(empty if filter_empty else np.zeros(n_img, dtype=bool))
        kept = np.flatnonzero(kept_mask)

        missing = [names[i] for i in np.flatnonzero(~exists & ~outside)]
        refused = [names[i] for i in np.flatnonzero(outside)]
        if not len(kept):
            if not exists.any():
                first = f"first missing: {', '.join(missing[:3])}" if missing else ""
                if refused:
                    first += ("; " if first else "") + f"outside the image folder: {', '.join(refused[:3])}"
                raise DatasetError(
                    f"none of the {n_img} images listed in {self.ann_file} exists under {self.img_dir} ({first})"
                )
            raise DatasetError(
                f"{self.ann_file}: no image left after filtering "
                f"({len(missing)} missing, {len(refused)} outside the image folder, "
                f"{int((small & exists).sum())} smaller than {min_size} px, "
                f"{int((empty & exists).sum())} without valid boxes{' (filter_empty)' if filter_empty else ''})"
            )

        self._images = [images[i] for i in kept]
        self._boxes = [per_img_boxes[i] for i in kept]
        self._labels = [per_img_labels[i] for i in kept]
        self.corrupt: list[str] = []  # unreadable files met in this process, in order
        self.size_mismatch: list[str] = []
        self._corrupt_idx: set[int] = set()
        self._draws = 0
        self._fingerprint: str | None = None
        self._coco_api = None

        kept_labels = np.concatenate(self._labels) if self._labels else np.zeros(0, dtype=np.int64)
        per_class = np.bincount(kept_labels, minlength=len(self.class_names))
        drop_counts = np.bincount(reasons, minlength=len(DROP_REASONS) + 1)[1:]
        self._summary_counts = dict(
            images=n_img,
            images_kept=len(kept),
            instances=int(len(kept_labels)),
            empty_images=int(empty[kept].sum()),
            dropped={r: int(c) for r, c in zip(DROP_REASONS, drop_counts)},
            dropped_examples={
                r: coco.ann_ids[reasons == k + 1][:_EXAMPLES].tolist() for k, r in enumerate(DROP_REASONS)
            },
            missing_images=len(missing),
            missing_examples=missing[:_EXAMPLES],
            refused_images=len(refused),
            refused_examples=refused[:_EXAMPLES],
            filtered_empty=int((exists & ~small & empty).sum()) if filter_empty else 0,
            filtered_small=int((exists & small).sum()),
            class_names=list(self.class_names),
            per_class={name: int(c) for name, c in zip(self.class_names, per_class)},
        )

    # ------------------------------------------------------------------ construction helpers
    def _files_exist(self, names: list[str], outside: np.ndarray) -> np.ndarray:
        """(N,) bool; one directory listing for flat names, a stat for names with sub-folders (what is there but
        is not a regular file counts as present: reading it is refused, and counted as unreadable).

        Names marked ``outside`` (see :func:`escapes_image_dir`) are False without being looked at.
        """
        try:
            with os.scandir(self.img_dir) as it:
                listed = {e.name for e in it}
        except OSError as e:
            raise DatasetError(f"image folder {self.img_dir} cannot be listed: {e}") from None
        out = np.zeros(len(names), dtype=bool)
        for i, name in enumerate(names):
            if outside[i]:
                continue
            if "/" in name or os.sep in name:
                out[i] = _present(self.img_dir / name)
            else:
                out[i] = name in listed
        return out

    # ------------------------------------------------------------------ public info
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_ids(self) -> list[int]:
        """COCO ids of the images served, in index order (restrict COCOeval to these)."""
        return [m["id"] for m in self._images]

    @property
    def coco(self):
        """A ``pycocotools.coco.COCO`` of the file (malformed boxes removed, missing areas filled), for COCOeval."""
        if self._coco_api is None:
            from pycocotools.coco import COCO

            api = COCO()
            api.dataset = self._coco_json.coco_dict
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress to stdout
                api.createIndex()
            self._coco_api = api
        return self._coco_api

    def annotation(self, idx: int) -> tuple[np.ndarray, np.ndarray]:
        """Training targets of image ``idx`` in original pixels: (G, 4) float32 xyxy, (G,) int64 labels."""
        return self._boxes[idx].copy(), self._labels[idx].copy()

    def image_info(self, idx: int) -> dict[str, Any]:
        """``{id, file_name, width, height}`` as in the JSON."""
        return dict(self._images[idx])

    def summary(self) -> DatasetSummary:
        return DatasetSummary(
            ann_file=str(self.ann_file),
            img_dir=str(self.img_dir),
            size_mismatch=list(self.size_mismatch),
            corrupt_images=list(self.corrupt),
            **self._summary_counts,
        )

    def fingerprint(self) -> str:
        """Short hash of the annotation file bytes (of the converted annotations for a YOLO/VOC split) and the
        list of images served (for the run manifest)."""
        if self._fingerprint is None:
            h = hashlib.sha256()
            if self._in_memory:
                d = self._coco_json.coco_dict
                h.update(json.dumps([d["images"], d["annotations"], d["categories"]], sort_keys=True).encode())
            else:
                with open(self.ann_file, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            h.update("\n".join(m["file_name"] for m in self._images).encode())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    # ------------------------------------------------------------------ loading
    def __len__(self) -> int:
        return len(self._images)

    def _path(self, idx: int) -> Path:
        return self.img_dir / self._images[idx]["file_name"]

    def _mark_corrupt(self, idx: int) -> None:
        self._corrupt_idx.add(idx)
        self.corrupt.append(self._images[idx]["file_name"])
        what = {"substitute": "substituting another image", "skip": "skipping it", "raise": "stopping"}
        warnings.warn(f"cannot read image {self._path(idx)} (corrupt, truncated or not a regular file); "
                      f"{what[self.unreadable]}", DatasetWarning, 3)

    def _read_first_readable(self, idx: int) -> tuple[int, np.ndarray | None]:
        """(index, image) of ``idx`` or, substituting, of the next readable image; (idx, None) when skipping."""
        n = len(self)
        for step in range(n):
            j = (idx + step) % n
            if j not in self._corrupt_idx:
                img = read_image_bgr(self._path(j))
                if img is not None:
                    return j, img
                self._mark_corrupt(j)
            if self.unreadable == "skip":
                return idx, None
            if self.unreadable == "raise":
                raise DatasetError(f"cannot read image {self._path(j)} (corrupt, truncated or not a regular file)")
        raise DatasetError(f"no readable image in {self.img_dir} (all {n} failed to decode)")

    def sample_rng(self, idx: int) -> np.random.Generator:
        """Generator for the next sample at ``idx`` (see class docstring)."""
        # the seed is drawn from this process' torch generator, which the engine saves and restores and a
        # DataLoader worker gets freshly seeded each epoch: augmentations repeat exactly after --resume
        seed = int(torch.randint(0, 2**62, (1,)).item())
        self._draws += 1
        return np.random.default_rng([seed, idx])

    def set_epoch(self, epoch: int) -> bool:
        """Tell the transform a training epoch starts (0-indexed); True when its pipeline stage changed."""
        start = getattr(self.transform, "set_epoch", None)
        return bool(start(epoch)) if callable(start) else False

    def get(self, idx: int, rng: np.random.Generator | None) -> dict[str, Any]:
        """Sample ``idx`` with an explicit generator (another one when the transform drops it)."""
        for _ in range(MAX_REFETCH + 1):
            sample = self._get_once(idx, rng)
            if sample is not None:
                return sample
            if rng is None:
                raise DatasetError(f"the transform dropped image {self._path(idx)} and there is no rng to draw another")
            idx = int(rng.integers(0, len(self)))
        raise DatasetError(
            f"the transform dropped {MAX_REFETCH + 1} samples in a row (a crop that never keeps a box? "
            f"images without boxes need data.filter_empty: true)"
        )

    def _get_once(self, idx: int, rng: np.random.Generator | None) -> dict[str, Any] | None:
        j, img = self._read_first_readable(idx)
        info = self._images[j]
        if img is None:
            return unreadable_sample(int(info["id"]), str(self._path(j)), (int(info["height"]), int(info["width"])))
        h, w = img.shape[:2]
        if (h, w) != (int(info["height"]), int(info["width"])) and info["file_name"] not in self.size_mismatch:
            if not self.size_mismatch:
                warnings.warn(
                    f"image {self._path(j)} is {w}x{h} but {self.ann_file.name} says "
                    f"{info['width']}x{info['height']}; boxes are used as written",
                    DatasetWarning,
                    2,
                )
            self.size_mismatch.append(info["file_name"])
        boxes, labels = self._boxes[j], self._labels[j]
        if self.transform is None:
            out = {
                "img": torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32)),
                "boxes": torch.from_numpy(boxes.copy()),
                "labels": torch.from_numpy(labels.copy()),
                "warp_matrix": np.eye(3),
                "img_shape": (h, w),
            }
        else:
            out = self.transform(img, boxes, labels, rng)
            if out is None:
                return None
        meta = ImageMeta(
            image_id=int(info["id"]),
            file_name=str(self._path(j)),
            ori_shape=(h, w),
            img_shape=tuple(int(v) for v in out["img_shape"]),
            warp_matrix=np.asarray(out["warp_matrix"], dtype=np.float64).tolist(),
        )
        return {"img": out["img"], "boxes": out["boxes"], "labels": out["labels"], "meta": meta}

    def __getitem__(self, idx: int) -> dict[str, Any]:
        return self.get(idx, self.sample_rng(idx))


def _present(path: Path) -> bool:
    """Something is there (a file, or a FIFO or folder that reading then refuses, naming what it is)."""
    try:
        os.stat(path)
    except (OSError, ValueError):
        return False
    return True


def unreadable_sample(image_id: int, file_name: str, shape: tuple[int, int]) -> dict[str, Any]:
    """What ``CocoDetection(unreadable="skip")`` serves for an image it cannot read: no pixels (``img`` None),
    no targets, ``unreadable`` True, and the meta (``ori_shape`` as the annotations give it) that names it."""
    meta = ImageMeta(image_id=image_id, file_name=file_name, ori_shape=shape, img_shape=(0, 0),
                     warp_matrix=np.eye(3).tolist())
    return {"img": None, "boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64), "meta": meta,
            "unreadable": True}
