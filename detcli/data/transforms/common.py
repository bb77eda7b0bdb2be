"""Geometry and normalisation shared by every family's transform.

A transform describes its geometry as one 3×3 homography ``M`` taking original-image pixels
to network-input pixels (``ImageMeta.warp_matrix``); boxes follow the image through
:func:`warp_boxes`, and predictions come back through :func:`inverse_warp_boxes`.
"""
from __future__ import annotations

from typing import Sequence, TypeVar

import cv2
import numpy as np
import torch
from torch import Tensor

BoxesT = TypeVar("BoxesT", np.ndarray, Tensor)

# ImageNet statistics in BGR order on a 0..255 scale, as in the NanoDet and mmdet configs.
IMAGENET_MEAN_BGR = (103.53, 116.28, 123.675)
IMAGENET_STD_BGR = (57.375, 57.12, 58.395)

# Corner order x1y1, x2y2, x1y2, x2y1 (columns of an xyxy box), as nanodet's warp_boxes.
_CORNER_COLS = [0, 1, 2, 3, 0, 3, 2, 1]


def resize_matrix(src_wh: tuple[int, int], dst_wh: tuple[int, int]) -> np.ndarray:
    """Stretch resize (aspect ratio not kept) from ``src_wh`` to ``dst_wh`` as a (3, 3) float64 matrix.

    Same as nanodet's ``get_resize_matrix(keep_ratio=False)``: ``diag(dst_w / src_w, dst_h / src_h, 1)``.
    """
    m = np.eye(3)
    m[0, 0] = dst_wh[0] / src_wh[0]
    m[1, 1] = dst_wh[1] / src_wh[1]
    return m


def _corners(boxes: np.ndarray) -> np.ndarray:
    """(G, 4) xyxy → (G·4, 3) homogeneous corner points."""
    pts = np.ones((len(boxes) * 4, 3))
    pts[:, :2] = boxes[:, _CORNER_COLS].reshape(-1, 2)
    return pts


def transform_boxes(boxes: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Map xyxy boxes through a homography, taking the min/max of the 4 warped corners (no clipping).

    Args:
        boxes: (G, 4) xyxy.
        matrix: (3, 3).
    Returns:
        (G, 4) float64 xyxy.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        return np.zeros((0, 4))
    pts = _corners(boxes) @ np.asarray(matrix, dtype=np.float64).T
    xy = (pts[:, :2] / pts[:, 2:3]).reshape(-1, 4, 2)
    return np.concatenate([xy.min(axis=1), xy.max(axis=1)], axis=1)


def clip_boxes(boxes: BoxesT, width: float, height: float) -> BoxesT:
    """Clip xyxy boxes to ``[0, width] × [0, height]`` (numpy or torch, returns a new array)."""
    if isinstance(boxes, Tensor):
        out = boxes.clone()
        out[:, 0::2] = out[:, 0::2].clamp(0, width)
        out[:, 1::2] = out[:, 1::2].clamp(0, height)
        return out
    out = np.array(boxes, copy=True)
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def warp_boxes(boxes: np.ndarray, matrix: np.ndarray, width: int, height: int) -> np.ndarray:
    """Warp xyxy boxes by ``matrix`` and clip them to the destination image, as nanodet's ``warp_boxes``.

    Degenerate (zero-area) boxes are kept, as in the official code.

    Args:
        boxes: (G, 4) xyxy in source pixels.
        matrix: (3, 3) source → destination.
        width, height: destination image size.
    Returns:
        (G, 4) float32 xyxy in destination pixels.
    """
    return clip_boxes(transform_boxes(boxes, matrix), width, height).astype(np.float32)


def inverse_warp_boxes(boxes: BoxesT, warp_matrix: np.ndarray | Sequence, ori_shape: tuple[int, int]) -> BoxesT:
    """Map boxes from network-input pixels back to the original image.

    Each box's 4 corners go through ``inverse(warp_matrix)``; the result is the min/max box,
    clipped to the original image (nanodet's ``warp_boxes(boxes, inv(M), w, h)`` in its post-processing).

    Args:
        boxes: (K, 4) xyxy in input pixels, numpy array or tensor (any device).
        warp_matrix: (3, 3) original → input (``ImageMeta.warp_matrix``).
        ori_shape: (h, w) of the original image.
    Returns:
        (K, 4) xyxy in original pixels, same type, dtype and device as ``boxes``.
    """
    inv = np.linalg.inv(np.asarray(warp_matrix, dtype=np.float64))
    h, w = ori_shape
    if isinstance(boxes, Tensor):
        if boxes.numel() == 0:
            return boxes.reshape(0, 4).clone()
        m = torch.as_tensor(inv, dtype=torch.float64, device=boxes.device)
        b = boxes.to(torch.float64).reshape(-1, 4)
        pts = torch.ones((len(b), 4, 3), dtype=torch.float64, device=b.device)
        pts[..., :2] = b[:, _CORNER_COLS].reshape(-1, 4, 2)
        pts = pts @ m.T
        xy = pts[..., :2] / pts[..., 2:3]
        out = torch.cat([xy.amin(dim=1), xy.amax(dim=1)], dim=1)
        return clip_boxes(out, w, h).to(boxes.dtype)
    arr = np.asarray(boxes)
    return clip_boxes(transform_boxes(arr, inv), w, h).astype(arr.dtype if arr.dtype.kind == "f" else np.float32)


def normalize(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Per-channel ``(img − mean) / std`` on an (H, W, 3) image; channel order is the caller's (BGR here).

    Returns:
        (H, W, 3) float32.
    """
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, 1, -1)
    std_a = np.asarray(std, dtype=np.float32).reshape(1, 1, -1)
    return ((img.astype(np.float32) - mean_a) / std_a).astype(np.float32)


def normalize_chw(img: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """(H, W, 3) image → (3, H, W) float32 tensor of per-channel ``(img − mean) / std`` computed in float32.

    Equal to ``to_chw_tensor(normalize(img, mean, std))`` bit for bit (the same two float32 operations per
    value), but each channel is one contiguous pass with a scalar instead of a broadcast over a trailing
    axis of 3, and no intermediate (H, W, 3) copies: ~5× faster on a 320×320 image.
    """
    planes = cv2.split(img.astype(np.float32, copy=False))
    out = np.empty((len(planes), img.shape[0], img.shape[1]), dtype=np.float32)
    for c, plane in enumerate(planes):
        np.subtract(plane, np.float32(mean[c]), out=out[c])
        np.divide(out[c], np.float32(std[c]), out=out[c])
    return torch.from_numpy(out)


def to_chw_tensor(img: np.ndarray) -> Tensor:
    """(H, W, 3) array → contiguous (3, H, W) float32 tensor."""
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1), dtype=np.float32))
