"""``train_batch0.jpg`` …: a batch as the network gets it (after augmentation), boxes and class names drawn.

The first look that tells a user the boxes line up with the objects. Images are de-normalised with the
preset's mean/std and channel order and shown up to their ``img_shape`` (batch padding cut off), tiled in a
square grid, boxes and class names drawn by :mod:`detcli.plots.detections`. Class names and file names are drawn
in any script (:mod:`detcli.plots.text`).
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from detcli.fileio import atomic_write
from detcli.plots.detections import class_name, draw_labelled_boxes
from detcli.plots.palette import class_color
from detcli.plots.text import Text, draw_texts, fit, text_size
from detcli.structures import Batch

MAX_IMAGES = 16
TILE = 320  # long side of one tile in pixels
GAP = 2
TEXT_PX = 10  # font size of the class and file names


def to_bgr_uint8(image: np.ndarray, mean, std, channel_order: str) -> np.ndarray:
    """(3, H, W) normalised float → (H, W, 3) BGR uint8: ``pixel * std + mean`` in the network's channel order."""
    img = image.transpose(1, 2, 0) * np.asarray(std, dtype=np.float32) + np.asarray(mean, dtype=np.float32)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[:, :, ::-1]) if channel_order == "rgb" else img


def _tile(img: np.ndarray, boxes: np.ndarray, labels: np.ndarray, class_names: list[str], title: str) -> np.ndarray:
    """One image (H, W, 3) BGR with its (G, 4) xyxy boxes and (G,) labels, resized to ``TILE`` on its long side,
    on a grey ``TILE`` × ``TILE`` square; ``title`` at the bottom."""
    h, w = img.shape[:2]
    scale = TILE / max(h, w, 1)
    img = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    labels = [int(v) for v in labels]
    draw_labelled_boxes(img, np.round(boxes * scale).reshape(-1, 4), [class_name(class_names, k) for k in labels],
                        [class_color(k) for k in labels], line_width=1, px=TEXT_PX)
    title = fit(title, TEXT_PX, img.shape[1] - 6)
    title_y = img.shape[0] - text_size(title, TEXT_PX)[1] - 2
    draw_texts(img, [Text((3, title_y), title, (255, 255, 255), background=(0, 0, 0), pad=1)], TEXT_PX)
    out = np.full((TILE, TILE, 3), 114, dtype=np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    return out


def batch_mosaic(batch: Batch, mean, std, channel_order: str, class_names: list[str],
                 max_images: int = MAX_IMAGES) -> np.ndarray:
    """The first ``max_images`` images of ``batch`` (on any device) with their targets: one BGR uint8 picture.

    Args:
        batch: images (B, 3, H, W) normalised; targets with boxes (G, 4) xyxy in input pixels.
        mean, std, channel_order: the preset's ``input`` section.
    """
    n = min(len(batch.targets), max_images)
    images = batch.images[:n].detach().float().cpu().numpy()
    cols = max(1, math.ceil(math.sqrt(n)))
    rows = max(1, math.ceil(n / cols))
    sheet = np.full((rows * (TILE + GAP) - GAP, cols * (TILE + GAP) - GAP, 3), 255, dtype=np.uint8)
    for i in range(n):
        h, w = batch.metas[i].img_shape if i < len(batch.metas) else images[i].shape[1:]
        img = to_bgr_uint8(images[i][:, :h, :w], mean, std, channel_order)
        t = batch.targets[i]
        name = Path(batch.metas[i].file_name).name if i < len(batch.metas) else ""
        tile = _tile(img, t.boxes.detach().float().cpu().numpy(), t.labels.cpu().numpy(), class_names, name)
        r, c = divmod(i, cols)
        sheet[r * (TILE + GAP): r * (TILE + GAP) + TILE, c * (TILE + GAP): c * (TILE + GAP) + TILE] = tile
    return sheet


def save_jpeg(image_bgr: np.ndarray, path: str | Path, quality: int = 90) -> Path:
    """Write a BGR uint8 image as JPEG, atomically."""
    ok, data = cv2.imencode(".jpg", image_bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError(f"OpenCV could not encode {path}")
    payload = data.tobytes()
    return atomic_write(path, lambda f: f.write(payload))


__all__ = ["batch_mosaic", "save_jpeg", "to_bgr_uint8"]
