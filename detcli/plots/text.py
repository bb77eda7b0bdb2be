"""Text on BGR pictures in any script (σ, ·, é, ü, 中 …): DejaVu Sans, the font matplotlib ships, drawn by PIL.

OpenCV's Hershey fonts hold ASCII glyphs only: every other character became '?' (the DeFCN subtitle read
``?(cls)??(filter)``, a class "café" read "caf?"). Here a text is placed by the top-left corner of its line
box (:func:`text_size`), and :func:`draw_texts` draws every text of one picture, with its background box, in a
single PIL round trip: the part of the array the texts cover goes to PIL once and comes back once. The font is
loaded once per size.
"""
from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ELLIPSIS = "…"


@dataclass(frozen=True)
class Text:
    """One line of text.

    Attributes:
        xy: top-left corner of its line box, in pixels.
        text: what to draw.
        color: BGR of the glyphs.
        background: BGR of a filled box under the line box grown by ``pad`` pixels on each side; None: none.
    """

    xy: tuple[int, int]
    text: str
    color: tuple[int, int, int]
    background: tuple[int, int, int] | None = None
    pad: int = 0


@functools.lru_cache(maxsize=1)
def font_file() -> str:
    """Path of DejaVuSans.ttf inside matplotlib's package data (found without importing matplotlib)."""
    spec = importlib.util.find_spec("matplotlib")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return str(path)
    from matplotlib import font_manager  # an unusual install: let matplotlib look

    return font_manager.findfont("DejaVu Sans", fallback_to_default=True)


@functools.lru_cache(maxsize=16)
def font(px: int) -> Any:
    """The PIL FreeType font at ``px`` pixels per em (cached: loading a face costs more than drawing a line)."""
    from PIL import ImageFont

    return ImageFont.truetype(font_file(), int(px))


def text_size(text: str, px: int) -> tuple[int, int]:
    """(width, height) in pixels of ``text``'s line box: its advance width by the font's ascent + descent."""
    f = font(px)
    ascent, descent = f.getmetrics()
    return math.ceil(f.getlength(text)), ascent + descent


def fit(text: str, px: int, width: int) -> str:
    """``text``, or its longest start followed by '…' that is at most ``width`` pixels wide."""
    if text_size(text, px)[0] <= width:
        return text
    lo, hi = 0, len(text)  # the longest prefix that fits with the ellipsis: binary search on its length
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if text_size(text[:mid] + ELLIPSIS, px)[0] <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + ELLIPSIS


def draw_texts(img: np.ndarray, texts: Sequence[Text], px: int) -> np.ndarray:
    """Draw ``texts`` (in order: a later one covers an earlier one) into ``img``, (H, W, 3) uint8 BGR, changed in
    place and returned. Glyphs are antialiased; what falls outside ``img`` is cut off."""
    if not texts:
        return img
    from PIL import Image, ImageDraw

    f = font(px)
    h, w = img.shape[:2]
    boxes = []
    for t in texts:
        tw, th = text_size(t.text, px)
        x, y, pad = int(t.xy[0]), int(t.xy[1]), int(t.pad) if t.background is not None else 0
        boxes.append((x - pad, y - pad, x + tw + pad, y + th + pad))
    x0, y0 = max(0, min(b[0] for b in boxes)), max(0, min(b[1] for b in boxes))
    x1, y1 = min(w, max(b[2] for b in boxes)), min(h, max(b[3] for b in boxes))
    if x1 <= x0 or y1 <= y0:
        return img
    region = Image.fromarray(np.ascontiguousarray(img[y0:y1, x0:x1, ::-1]))  # RGB, as PIL draws
    pen = ImageDraw.Draw(region)
    for t, (bx1, by1, bx2, by2) in zip(texts, boxes):
        if t.background is not None:
            pen.rectangle((bx1 - x0, by1 - y0, bx2 - x0 - 1, by2 - y0 - 1), fill=_rgb(t.background))
        pen.text((int(t.xy[0]) - x0, int(t.xy[1]) - y0), t.text, fill=_rgb(t.color), font=f, anchor="la")
    img[y0:y1, x0:x1] = np.asarray(region)[:, :, ::-1]
    return img


def _rgb(bgr: tuple[int, int, int]) -> tuple[int, int, int]:
    return int(bgr[2]), int(bgr[1]), int(bgr[0])


__all__ = ["Text", "draw_texts", "fit", "font", "font_file", "text_size"]
