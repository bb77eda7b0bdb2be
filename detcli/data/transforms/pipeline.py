"""A transform as a list of steps over a :class:`Sample`, MMDetection-style, behind the family-neutral contract.

Every family's transform is a callable ``(img_bgr, boxes, labels, rng) -> dict`` (see
:class:`~detcli.data.coco.CocoDetection`). :class:`Pipeline` is such a callable built from small steps, each
``(Sample, rng) -> Sample | None``; a step that returns None drops the sample (mmdet's ``RandomCrop`` with no
box left), and the dataset then loads another one (:meth:`CocoDetection.get`, mmengine's refetch).

Multi-image steps (:class:`~detcli.data.transforms.mosaic.CachedMosaic`,
:class:`~detcli.data.transforms.mixup.CachedMixUp`) see other samples through a
:class:`~detcli.data.transforms.cache.ResultsCache` of the samples that reached them earlier in the same
process (a DataLoader worker keeps its own copy of the pipeline, so its own caches). :meth:`Pipeline.set_epoch`
empties every cache: each epoch starts from the same state whether it runs in fresh workers or not, which
keeps ``--resume`` exact.

Steps never modify their input arrays (a cache may hold them).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, Sequence

import cv2
import numpy as np
import torch
from torch import Tensor


@dataclass(frozen=True)
class Sample:
    """One image and its targets between two steps.

    Attributes:
        img: (H, W, 3) uint8 BGR.
        boxes: (G, 4) float32 xyxy in ``img`` pixels.
        labels: (G,) int64.
        matrix: (3, 3) float64 homography from the original pixels of this sample's own image to ``img`` pixels
            (for a mosaic: of the image the mosaic was built around; ``ImageMeta.warp_matrix``).
    """

    img: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    matrix: np.ndarray

    @classmethod
    def from_arrays(cls, img: np.ndarray, boxes: np.ndarray, labels: np.ndarray) -> "Sample":
        """A sample with copied targets and an identity matrix (the dataset's arrays are never touched)."""
        return cls(
            img=img,
            boxes=np.array(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.array(labels, dtype=np.int64).reshape(-1),
            matrix=np.eye(3),
        )

    @property
    def width(self) -> int:
        return int(self.img.shape[1])

    @property
    def height(self) -> int:
        return int(self.img.shape[0])

    def with_(self, **changes: Any) -> "Sample":
        return replace(self, **changes)


class Step(Protocol):
    def __call__(self, sample: Sample, rng: np.random.Generator | None) -> Sample | None: ...


def clip_and_keep(boxes: np.ndarray, width: float, height: float) -> tuple[np.ndarray, np.ndarray]:
    """Clip xyxy boxes to ``[0, width] × [0, height]`` and say which keep an area.

    After clipping, mmdet's ``is_inside`` (x1 < W, y1 < H, x2 > 0, y2 > 0) drops exactly the boxes that lay
    outside the image; requiring x2 > x1 and y2 > y1 drops those too and, in addition, any zero-width or
    zero-height box (the dataset drops them on loading, so on real data the two rules agree).

    Args:
        boxes: (G, 4) xyxy.
    Returns:
        (G, 4) float32 clipped boxes (all of them), (G,) bool mask of the boxes to keep.
    """
    out = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out, keep


def translation(dx: float, dy: float) -> np.ndarray:
    """(3, 3) float64 ``x → x + dx, y → y + dy``."""
    m = np.eye(3)
    m[0, 2], m[1, 2] = dx, dy
    return m


def scaling(sx: float, sy: float) -> np.ndarray:
    """(3, 3) float64 ``diag(sx, sy, 1)``."""
    return np.diag([float(sx), float(sy), 1.0])


def normalization_table(mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(256, 3) float32: entry [v, c] = ``(float32(v) − mean[c]) / std[c]`` in float32, the value that
    :func:`~detcli.data.transforms.common.normalize` gives a pixel v of channel c."""
    values = np.arange(256, dtype=np.float32)[:, None]
    return ((values - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)).astype(np.float32)


def normalize_to_chw(img: np.ndarray, table: np.ndarray, to_rgb: bool = False) -> Tensor:
    """(H, W, 3) uint8 BGR → (3, H, W) float32 tensor through a :func:`normalization_table` (one lookup per
    pixel, written channel by channel: equal to ``to_chw_tensor(normalize(img, mean, std))``, ~8× faster).

    ``to_rgb``: channel c of the output (and column c of ``table``) is the image's channel 2 − c.
    """
    planes = cv2.split(img)
    out = np.empty((3, img.shape[0], img.shape[1]), dtype=np.float32)
    for c in range(3):
        cv2.LUT(planes[2 - c if to_rgb else c], np.ascontiguousarray(table[:, c]), dst=out[c])
    return torch.from_numpy(out)


class Pipeline:
    """Steps applied in order, then per-channel normalisation: a transform of the dataset contract.

    Args:
        steps: ``(Sample, rng) -> Sample | None`` callables, in order.
        mean, std: per channel, 0..255 scale, in the order the network sees (``to_rgb`` flips BGR first).
        to_rgb: feed the network RGB.
    """

    def __init__(
        self,
        steps: Sequence[Step],
        mean: Sequence[float],
        std: Sequence[float],
        to_rgb: bool = False,
    ) -> None:
        self.steps = list(steps)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.to_rgb = to_rgb
        self.table = normalization_table(self.mean, self.std)

    def run(self, sample: Sample, rng: np.random.Generator | None) -> Sample | None:
        """The steps alone: the sample before normalisation (uint8), or None when a step dropped it."""
        for step in self.steps:
            sample = step(sample, rng)
            if sample is None:
                return None
        return sample

    def set_epoch(self, epoch: int) -> None:
        """Start an epoch: every multi-image step forgets the samples it has seen."""
        for step in self.steps:
            reset = getattr(step, "reset", None)
            if callable(reset):
                reset()

    def __call__(
        self,
        img: np.ndarray,
        boxes: np.ndarray,
        labels: np.ndarray,
        rng: np.random.Generator | None = None,
    ) -> dict[str, Any] | None:
        """Transform one image and its boxes.

        Args:
            img: (H, W, 3) uint8 BGR.
            boxes: (G, 4) float32 xyxy in original pixels.
            labels: (G,) integer class indices.
            rng: source of randomness (required when a step draws).
        Returns:
            None when the sample was dropped, else a dict with ``img`` (3, h, w) float32 tensor, ``boxes``
            (G', 4) float32 tensor (inside the image), ``labels`` (G',) int64 tensor, ``warp_matrix`` (3, 3)
            float64 (original → input of this image), ``img_shape`` (h, w) of the output.
        """
        out = self.run(Sample.from_arrays(img, boxes, labels), rng)
        if out is None:
            return None
        return {
            "img": normalize_to_chw(out.img, self.table, self.to_rgb),
            "boxes": torch.from_numpy(np.ascontiguousarray(out.boxes, dtype=np.float32)),
            "labels": torch.from_numpy(np.ascontiguousarray(out.labels, dtype=np.int64)),
            "warp_matrix": out.matrix,
            "img_shape": (out.height, out.width),
        }

    def __repr__(self) -> str:
        inner = ",\n  ".join(repr(s) for s in self.steps)
        return f"Pipeline(\n  {inner})"
