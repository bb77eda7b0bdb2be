"""Boxes with labels on BGR pictures: the one drawing of detections and ground truths in detcli.

``predict`` (:func:`draw_detections`), the training batch mosaics (:mod:`detcli.plots.batches`) and the
``inspect-anchors`` panels (:mod:`detcli.inspect.draw`) draw their boxes here: one colour per class
(:func:`~detcli.plots.palette.class_color`), labels placed inside the picture and clear of each other
(:func:`place_labels`), text in any script (:mod:`detcli.plots.text`).
"""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from detcli.plots.palette import class_color, text_color_on
from detcli.plots.text import Text, draw_texts, text_size
from detcli.structures import Detections

Rect = tuple[int, int, int, int]  # x1, y1, x2, y2 in pixels, x2/y2 exclusive
Color = tuple[int, int, int]  # BGR 0-255


def place_labels(boxes: list[Rect], sizes: list[tuple[int, int]], image_size: tuple[int, int]) -> list[Rect]:
    """Where each box's label goes: inside the image and clear of the labels placed before it.

    A label sits on top of its box, inside the box's top edge when there is no room above, shifted left or
    up as far as needed to stay inside the image. A label that would overlap one placed earlier moves just
    below it (as far as the image allows), so two detections on one box show two readable labels.

    Args:
        boxes: detection boxes (x1, y1, x2, y2), in placement order (the most important first).
        sizes: (w, h) of each label.
        image_size: (w, h) of the image.

    Returns:
        One (x1, y1, x2, y2) per label; a label wider (taller) than the image starts at its left (top) edge.
    """
    img_w, img_h = image_size
    placed: list[Rect] = []
    for (bx1, by1, _, _), (w, h) in zip(boxes, sizes):
        x = _clamp(bx1, 0, img_w - w)
        y = _clamp(by1 - h if by1 - h >= 0 else by1, 0, img_h - h)
        while True:  # y grows at every step: ends after at most len(placed) moves
            hit = next((r for r in placed if x < r[2] and r[0] < x + w and y < r[3] and r[1] < y + h), None)
            if hit is None or hit[3] + h > img_h:
                break
            y = hit[3]
        placed.append((x, y, x + w, y + h))
    return placed


def _clamp(v: int, lo: int, hi: int) -> int:
    return max(lo, min(v, hi))


def draw_boxes(
    img: np.ndarray, boxes: Sequence[Sequence[float]], colors: Sequence[Color], line_width: int
) -> np.ndarray:
    """Box outlines (antialiased) into ``img`` (H, W, 3) uint8 BGR, in order (a later box covers an earlier
    one); ``boxes`` (K, 4) xyxy pixels, rounded. Changed in place and returned."""
    for box, color in zip(boxes, colors):
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        cv2.rectangle(img, (x1, y1), (x2, y2), tuple(int(c) for c in color), line_width, cv2.LINE_AA)
    return img


def draw_labelled_boxes(
    img: np.ndarray, boxes: Sequence[Sequence[float]], texts: Sequence[str], colors: Sequence[Color],
    line_width: int, px: int,
) -> np.ndarray:
    """Boxes with a label each on a filled background of the box's colour, into ``img`` (changed in place).

    Args:
        img: (H, W, 3) uint8 BGR.
        boxes: (K, 4) xyxy pixels, the most important first: its box is drawn last (on top), its label placed
            first (:func:`place_labels`) and drawn last.
        texts: K label texts; colors: K BGR colours.
        line_width: of the box outlines; px: font size of the labels.
    """
    h, w = img.shape[:2]
    rects_in = [tuple(int(round(float(v))) for v in box) for box in boxes]
    sizes = [(tw + 2, th + 2) for tw, th in (text_size(t, px) for t in texts)]
    rects = place_labels(rects_in, sizes, (w, h))
    draw_boxes(img, rects_in[::-1], list(colors)[::-1], line_width)
    labels = [Text((r[0] + 1, r[1] + 1), t, text_color_on(c), background=c, pad=1)
              for r, t, c in zip(rects, texts, colors)]
    return draw_texts(img, labels[::-1], px)  # the best label last: on top where the image is too small


def class_name(class_names: Sequence[str], label: int) -> str:
    """``class_names[label]``, or ``class<label>`` for a label outside them."""
    return class_names[label] if 0 <= label < len(class_names) else f"class{label}"


def draw_detections(img_bgr: np.ndarray, det: Detections, class_names: list[str]) -> np.ndarray:
    """A copy of ``img_bgr`` with boxes and ``"name score"`` labels on a filled background (any script).

    Line width and text size grow with the image size. Boxes are drawn lowest score first (the best on top),
    then the labels over every box, placed by :func:`place_labels` with the highest score first, all in one
    :func:`~detcli.plots.text.draw_texts` pass.

    Args:
        img_bgr: (H, W, 3) uint8; det: boxes (K, 4) xyxy in the image's pixels, scores (K,), labels (K,).
    """
    out = np.ascontiguousarray(img_bgr).copy()
    h, w = out.shape[:2]
    boxes = det.boxes.detach().cpu().reshape(-1, 4).round().int().tolist()
    scores = det.scores.detach().cpu().tolist()
    labels = [int(c) for c in det.labels.detach().cpu().tolist()]
    order = np.argsort(scores, kind="stable")[::-1].tolist()  # best first
    return draw_labelled_boxes(
        out, [boxes[i] for i in order], [f"{class_name(class_names, labels[i])} {scores[i]:.2f}" for i in order],
        [class_color(labels[i]) for i in order], line_width=max(round((h + w) / 2 * 0.003), 2),
        px=max(round((h + w) / 2 * 0.03), 12),
    )


__all__ = ["Rect", "class_color", "class_name", "draw_boxes", "draw_detections", "draw_labelled_boxes",
           "place_labels"]
