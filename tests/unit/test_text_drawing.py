"""Text in pictures shows every character (σ, ·, é …), not OpenCV's '?' for anything beyond ASCII."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.ft2font import FT2Font

from detcli.inspect.draw import TEXT_PX, text_bar
from detcli.models.detectors.defcn import DeFCN
from detcli.plots.batches import _tile
from detcli.plots.detections import draw_detections
from detcli.plots.text import ELLIPSIS, Text, draw_texts, fit, font_file, text_size
from detcli.structures import Detections

SUBTITLE = DeFCN.assignment_predictions  # "the head's own predictions: σ(cls)·σ(filter) for POTO, …"


def as_ascii(text: str) -> str:
    """What the OpenCV text drawing made of ``text``."""
    return text.encode("ascii", "replace").decode("ascii")


def test_the_font_has_a_glyph_for_every_character_drawn():
    face = FT2Font(font_file())
    for text in (SUBTITLE, "café", "Ünïcode ×·… ● □ ○"):
        missing = [c for c in text if face.get_char_index(ord(c)) == 0]
        assert not missing, f"{text!r}: no glyph for {missing}"
    assert "σ(cls)·σ(filter)" in SUBTITLE


def test_the_defcn_subtitle_is_drawn_as_written_not_as_question_marks():
    drawn, ascii_drawn = text_bar([SUBTITLE], 900), text_bar([as_ascii(SUBTITLE)], 900)
    assert drawn.shape == ascii_drawn.shape
    assert not np.array_equal(drawn, ascii_drawn)
    # the first character differs ('t' in both), σ differs from '?': the pictures part where the text does
    start = text_size("the head's own predictions: ", TEXT_PX)[0] + 5
    sigma = text_size("σ", TEXT_PX)[0]
    assert not np.array_equal(drawn[:, start: start + sigma], ascii_drawn[:, start: start + sigma])
    assert np.array_equal(drawn[:, :start - 2], ascii_drawn[:, :start - 2])


@pytest.mark.parametrize("char, plain", [("σ", "?"), ("·", "?"), ("é", "e"), ("é", "?")])
def test_each_character_has_its_own_glyph(char, plain):
    def draw(text: str) -> np.ndarray:
        return draw_texts(np.zeros((30, 30, 3), np.uint8), [Text((2, 2), text, (255, 255, 255))], 20)

    ink = draw(char)
    assert ink.any() and not np.array_equal(ink, draw(plain))


def test_a_class_name_with_an_accent_in_predictions_and_training_batches():
    img = np.full((120, 240, 3), 128, np.uint8)
    det = Detections(torch.tensor([[40.0, 60.0, 200.0, 110.0]]), torch.tensor([0.9]), torch.tensor([0]))
    assert not np.array_equal(draw_detections(img, det, ["café"]), draw_detections(img, det, ["caf?"]))
    boxes, labels = np.array([[40.0, 60.0, 200.0, 110.0]], np.float32), np.array([0])
    assert not np.array_equal(_tile(img, boxes, labels, ["café"], "x.jpg"), _tile(img, boxes, labels, ["caf?"], "x.jpg"))


def test_long_lines_are_cut_to_the_width_with_an_ellipsis():
    line = "GT 0 café 40×30: 3 pos " + "very long " * 30
    cut = fit(line, TEXT_PX, 300)
    assert cut.endswith(ELLIPSIS) and line.startswith(cut[:-1]) and text_size(cut, TEXT_PX)[0] <= 300
    assert fit("short", TEXT_PX, 300) == "short"


def test_texts_are_drawn_in_order_clipped_to_the_picture():
    img = np.zeros((20, 40, 3), np.uint8)
    draw_texts(img, [Text((-5, -3), "██████", (0, 0, 255)), Text((30, 10), "████", (0, 255, 0), (255, 0, 0), 1)], 14)
    assert (img[0, 0] == (0, 0, 255)).all()  # the first text, cut at the top-left corner
    assert (img[19, 39] == (0, 255, 0)).all() or (img[19, 39] == (255, 0, 0)).all()  # the second, over its box
    assert draw_texts(img.copy(), [], 14).tobytes() == img.tobytes()
    outside = img.copy()
    draw_texts(outside, [Text((100, 100), "x", (255, 255, 255))], 14)
    assert np.array_equal(outside, img)
