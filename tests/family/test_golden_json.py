"""The generators' one JSON writer (``benchmarks/fixtures/golden_json.py``) reproduces every committed fixture byte for byte."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
from benchmarks.fixtures.golden_json import dump, render  # noqa: E402

GOLDEN = REPO / "tests" / "golden"
RAW_ROWS = {"spec": 1, "checksums": 1, "aliases": 1, "bn_scales": 1}  # make_golden_fixtures.py's raw fixtures


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("e2e/*.json")) + sorted(GOLDEN.glob("train_step/*.json")),
                         ids=lambda p: f"{p.parent.name}/{p.name}")
def test_end_to_end_and_train_step_fixtures_round_trip(path):
    text = path.read_text()
    assert dump(json.loads(text)) == text


@pytest.mark.parametrize("path", sorted(GOLDEN.glob("*.json")), ids=lambda p: p.name)
def test_raw_fixtures_round_trip(path):
    text = path.read_text()
    assert dump(json.loads(text), RAW_ROWS) == text


def test_layout_by_hand():
    doc = {"a": 1, "images": {"x.jpg": [1.5], "y.jpg": []}, "weights_overrides": {"bn": {"k": [2]}, "s": "t"},
           "grads": {}, "spec": [[1, 2], {"é": 3}]}
    assert dump(doc, {"images": 1, "weights_overrides": 2, "grads": 1, "spec": 1}) == (
        '{\n "a": 1,\n "images": {\n  "x.jpg": [1.5],\n  "y.jpg": []\n },\n'
        ' "weights_overrides": {\n  "bn": {\n   "k": [2]\n  },\n  "s": "t"\n },\n'
        ' "grads": {},\n "spec": [\n  [1, 2],\n  {"\\u00e9": 3}\n ]\n}\n')
    assert render({"k": {"deeper": [1]}}, 0, 1) == '{\n "k": {"deeper": [1]}\n}'
