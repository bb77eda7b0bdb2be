"""Plain containers that travel between data → model → engine.

Coordinates are always absolute pixels, boxes are always ``xyxy``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor


@dataclass
class ImageMeta:
    """What the engine needs to map predictions back to the original image.

    Attributes:
        image_id: COCO image id.
        file_name: path of the image file (as read).
        ori_shape: (h, w) of the decoded original image.
        img_shape: (h, w) of the transformed image *before* batch padding; pixels beyond it are padding. A
            pipeline that pads each image itself (RTMDet's ``Pad`` to 640 with 114) reports the padded size,
            as mmdet's ``img_shape``.
        warp_matrix: (3, 3) float64 homography taking original-image pixels to network-input pixels.
    """

    image_id: int
    file_name: str
    ori_shape: tuple[int, int]
    img_shape: tuple[int, int]
    warp_matrix: "list[list[float]]"


@dataclass
class Target:
    """Ground truth of one image in network-input pixels.

    Attributes:
        boxes: (G, 4) float32 xyxy.
        labels: (G,) int64 contiguous class indices in [0, num_classes).
        ignore_boxes: (K, 4) float32 xyxy regions that are no target but whose priors an assigner may leave out
            of the loss (MMDetection's ``gt_instances_ignore``, e.g. COCO crowd boxes; used by MaxIoU with
            ``ignore_iof_thr`` > 0), or None for none.
    """

    boxes: Tensor
    labels: Tensor
    ignore_boxes: Tensor | None = None

    def to(self, device: torch.device | str) -> "Target":
        ignore = None if self.ignore_boxes is None else self.ignore_boxes.to(device)
        return Target(self.boxes.to(device), self.labels.to(device), ignore)


@dataclass
class Batch:
    """A collated batch.

    Attributes:
        images: (B, 3, H, W) float32, normalised, zero-padded to a multiple of the batch divisor.
        targets: B targets.
        metas: B metas.
        skipped: metas of the images of this batch that could not be read (evaluation leaves them out of
            ``images`` and counts them, see ``CocoDetection(unreadable="skip")``).
        pad_shapes: B (H_i, W_i), each image's own padded size (its ``img_shape`` rounded up to the divisor: the
            tensor it has in a batch of one); empty when unknown. See :func:`detcli.data.collate.split_by_shape`.
    """

    images: Tensor
    targets: list[Target]
    metas: list[ImageMeta] = field(default_factory=list)
    skipped: list[ImageMeta] = field(default_factory=list)
    pad_shapes: list[tuple[int, int]] = field(default_factory=list)

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(self.images.to(device, non_blocking=True), [t.to(device) for t in self.targets], self.metas,
                     self.skipped, self.pad_shapes)


@dataclass
class Detections:
    """Detections of one image.

    Attributes:
        boxes: (K, 4) float32 xyxy.
        scores: (K,) float32.
        labels: (K,) int64.
    """

    boxes: Tensor
    scores: Tensor
    labels: Tensor


# ------------------------------------------------------------------ the detector contract's tensors
class HeadOutput(NamedTuple):
    """Raw head output, flattened over levels in prior order.

    Attributes:
        cls_logits: (B, N, C) class logits (sigmoid classes, no background channel).
        bbox_reg: (B, N, K) box regression in the family's own coding: NanoDet-Plus K = 4(R+1) GFL distance-bin
            logits (sides l, t, r, b), RetinaNet K = 4 DeltaXYWH deltas, RTMDet K = 4 side distances in pixels.
        score_factor: (B, N, 1) optional per-prior logit whose sigmoid multiplies every class score
            (DeFCN's 3D-Max-Filtering "filter"); None for the families that have none.
    """

    cls_logits: Tensor
    bbox_reg: Tensor
    score_factor: Tensor | None = None


class Priors(NamedTuple):
    """The N priors of one input size, in the order of the head output rows.

    Attributes:
        points: (N, 4) ``[x, y, stride_w, stride_h]`` in input pixels: the cell point of point priors, the
            centre of anchor boxes (the layout of mmdet ``MlvlPointGenerator(with_stride=True)`` and NanoDet).
        boxes: (N, 4) ``xyxy`` anchor boxes, or None for point priors.
        levels: (N,) int64 pyramid level of each prior (0 = finest).
        level_sizes: ``(H_l, W_l)`` feature-map size of each level.
        per_cell: priors per feature-map cell (A anchors; 1 for point priors).
    """

    points: Tensor
    boxes: Tensor | None
    levels: Tensor
    level_sizes: tuple[tuple[int, int], ...]
    per_cell: int

    @classmethod
    def on_grid(
        cls, points: Tensor, boxes: Tensor | None, level_sizes: tuple[tuple[int, int], ...], per_cell: int
    ) -> Priors:
        """Priors laid out level after level on the given grids (``levels`` follows from the sizes)."""
        levels = torch.cat([
            torch.full((h * w * per_cell,), i, dtype=torch.long, device=points.device)
            for i, (h, w) in enumerate(level_sizes)
        ])
        return cls(points, boxes, levels, tuple(level_sizes), per_cell)

    @property
    def num(self) -> int:
        """N."""
        return int(self.points.shape[0])

    @property
    def level_counts(self) -> list[int]:
        """Priors per level, ``H_l · W_l · per_cell``."""
        return [h * w * self.per_cell for h, w in self.level_sizes]


class Decoded(NamedTuple):
    """Decoded head output.

    Attributes:
        boxes: (B, N, 4) ``xyxy`` in input pixels, not clipped.
        scores: (B, N, C) class probabilities.
    """

    boxes: Tensor
    scores: Tensor
