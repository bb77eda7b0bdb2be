"""Pictures of one image's label assignment: one panel per feature level, side by side, and a legend.

Each panel shows the network-input image with every GT box in its own colour, the positive priors of that
level at their points (filled dots in their GT's colour; anchor boxes drawn too for anchor priors) and the
ignored priors as grey crosses. Boxes are drawn by :mod:`detcli.plots.detections`, text with
:mod:`detcli.plots.text` (any script: σ, ·, é).
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from detcli.plots.detections import class_name, draw_boxes
from detcli.plots.palette import class_color
from detcli.plots.text import Text, draw_texts, fit

PANEL_SIDE = 400  # long side of a panel in pixels
BAR = 22  # height of a text line
TEXT_PX = 14  # font size of the text lines
IGNORED = (150, 150, 150)
BACKGROUND = (32, 32, 32)
TEXT = (235, 235, 235)


@dataclass
class ImageAssignment:
    """One image's assignment, on the CPU, ready to draw.

    Attributes:
        image_bgr: (h, w, 3) uint8, the network input without batch padding.
        gt_boxes: (G, 4) ``xyxy`` input pixels; gt_labels: (G,) class indices.
        gt_inds: (N,) the assignment (``i + 1`` positive for GT i, 0 background, -1 ignored).
        points: (N, 2) prior points; anchors: (N, 4) anchor boxes or None; levels: (N,) level of each prior.
        notes: (G,) text after a GT's positive count in the legend (e.g. why it has none).
        aux_gt_inds: (N,) an auxiliary assignment in the same coding (DeFCN's one-to-many), or None.
    """

    image_bgr: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_inds: np.ndarray
    points: np.ndarray
    anchors: np.ndarray | None
    levels: np.ndarray
    notes: list[str]
    aux_gt_inds: np.ndarray | None = None


def gt_color(k: int) -> tuple[int, int, int]:
    return class_color(k)


def level_panels(a: ImageAssignment, level_names: list[str], strides: tuple[int, ...]) -> list[np.ndarray]:
    """One BGR panel per level: a header line over the image with GTs, that level's positives and ignored priors."""
    h, w = a.image_bgr.shape[:2]
    scale = PANEL_SIDE / max(h, w)
    base = cv2.resize(a.image_bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
                      if scale < 1 else cv2.INTER_LINEAR)
    base = (base.astype(np.float32) * 0.8).astype(np.uint8)  # dimmed, so the marks stand out
    panels = []
    for lv, (name, stride) in enumerate(zip(level_names, strides)):
        img = base.copy()
        on_level = a.levels == lv
        pos = on_level & (a.gt_inds > 0)
        ign = on_level & (a.gt_inds < 0)
        for x, y in np.unique(np.round(a.points[ign] * scale).astype(int), axis=0):
            cv2.drawMarker(img, (int(x), int(y)), IGNORED, cv2.MARKER_TILTED_CROSS, 5, 1)
        draw_boxes(img, np.round(a.gt_boxes * scale), [gt_color(k) for k in range(len(a.gt_boxes))], 2)
        idx = np.flatnonzero(pos)
        if a.anchors is not None:
            draw_boxes(img, np.round(a.anchors[idx] * scale), [gt_color(int(a.gt_inds[i]) - 1) for i in idx], 1)
        aux_idx = np.flatnonzero(on_level & (a.aux_gt_inds > 0)) if a.aux_gt_inds is not None else []
        for i in aux_idx:  # rings, under the main positives' dots
            x, y = np.round(a.points[i] * scale).astype(int)
            cv2.circle(img, (int(x), int(y)), 6, gt_color(int(a.aux_gt_inds[i]) - 1), 1, cv2.LINE_AA)
        for i in idx:
            x, y = np.round(a.points[i] * scale).astype(int)
            cv2.circle(img, (int(x), int(y)), 4, (0, 0, 0), -1, cv2.LINE_AA)
            cv2.circle(img, (int(x), int(y)), 3, gt_color(int(a.gt_inds[i]) - 1), -1, cv2.LINE_AA)
        header = f"{name} stride {stride}: {len(idx)} pos"
        header += f" (+{len(aux_idx)} aux)" if a.aux_gt_inds is not None else ""
        header += f", {int(ign.sum())} ignored"
        panels.append(np.vstack([text_bar([header], img.shape[1]), img]))
    return panels


def legend(a: ImageAssignment, class_names: list[str], level_names: list[str], width: int) -> np.ndarray:
    """The key to the marks, then one line per GT in its colour: class, size, positives per level, notes."""
    key = ("● positive prior (its GT's colour)" + ("   □ positive anchor box" if a.anchors is not None else "")
           + ("   ○ auxiliary positive" if a.aux_gt_inds is not None else "")
           + "   × ignored prior   thick box: GT")
    lines, colors = [key], [TEXT]
    for k, (box, label) in enumerate(zip(a.gt_boxes, a.gt_labels)):
        owned = a.gt_inds == k + 1
        per_level = [f"{n} {int((owned & (a.levels == lv)).sum())}" for lv, n in enumerate(level_names)
                     if (owned & (a.levels == lv)).any()]
        bw, bh = box[2] - box[0], box[3] - box[1]
        name = class_name(class_names, int(label))
        text = f"GT {k} {name} {bw:.0f}×{bh:.0f}: {int(owned.sum())} pos"
        text += f" ({', '.join(per_level)})" if per_level else ""
        if a.aux_gt_inds is not None:
            text += f", {int((a.aux_gt_inds == k + 1).sum())} aux"
        text += f" {a.notes[k]}" if a.notes[k] else ""
        lines.append(text)
        colors.append(gt_color(k))
    return text_bar(lines, width, colors)


def text_bar(lines: list[str], width: int, colors: list[tuple[int, int, int]] | None = None) -> np.ndarray:
    """Lines of text on a dark bar ``width`` pixels wide (one line every ``BAR`` pixels); a line too long is cut
    with '…'."""
    bar = np.full((BAR * len(lines) + 4, width, 3), BACKGROUND, dtype=np.uint8)
    texts = [Text((5, BAR * i + 3), fit(line, TEXT_PX, width - 10), TEXT if colors is None else colors[i])
             for i, line in enumerate(lines)]
    return draw_texts(bar, texts, TEXT_PX)


def hstack(panels: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Panels side by side (tops aligned), ``gap`` pixels apart."""
    height = max(p.shape[0] for p in panels)
    out = []
    for i, p in enumerate(panels):
        if p.shape[0] < height:
            p = np.vstack([p, np.full((height - p.shape[0], p.shape[1], 3), BACKGROUND, dtype=np.uint8)])
        out.append(p)
        if i < len(panels) - 1:
            out.append(np.full((height, gap, 3), BACKGROUND, dtype=np.uint8))
    return np.hstack(out)


def vstack(blocks: list[np.ndarray]) -> np.ndarray:
    """Blocks one under the other, left-aligned, padded to the widest."""
    width = max(b.shape[1] for b in blocks)
    return np.vstack([
        np.hstack([b, np.full((b.shape[0], width - b.shape[1], 3), BACKGROUND, dtype=np.uint8)])
        if b.shape[1] < width else b
        for b in blocks
    ])


def assignment_sheet(a: ImageAssignment, title: list[str], class_names: list[str], level_names: list[str],
                     strides: tuple[int, ...]) -> np.ndarray:
    """Title lines, the level panels side by side, the legend: one BGR picture."""
    row = hstack(level_panels(a, level_names, strides))
    return vstack([text_bar(title, row.shape[1]), row, legend(a, class_names, level_names, row.shape[1])])
