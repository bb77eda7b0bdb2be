"""The colour of class k, the same in every picture detcli draws.

Boxes and labels (``predict``, ``train_batch*.jpg``, ``inspect-anchors``), the ``labels.jpg`` bars and
histograms and the per-class PR/F1/P/R curves all take their colour from :func:`class_color`, so class k reads
the same everywhere. Hues are spaced by the golden ratio: neighbouring classes differ strongly and a class
keeps its colour however many classes there are.
"""
from __future__ import annotations

import colorsys

GOLDEN = 0.618033988749895


def class_color(label: int) -> tuple[int, int, int]:
    """BGR 0-255 of class ``label`` (OpenCV order): a stable, saturated hue per class."""
    r, g, b = colorsys.hsv_to_rgb((int(label) * GOLDEN) % 1.0, 0.85, 0.95)
    return int(b * 255), int(g * 255), int(r * 255)


def class_rgb(label: int) -> tuple[float, float, float]:
    """The same colour as :func:`class_color`, as RGB in [0, 1] (matplotlib's ``color=``)."""
    b, g, r = class_color(label)
    return r / 255, g / 255, b / 255


def text_color_on(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white: whichever reads better on a background of colour ``bgr``."""
    return (0, 0, 0) if sum(bgr) / 3 > 150 else (255, 255, 255)


__all__ = ["class_color", "class_rgb", "text_color_on"]
