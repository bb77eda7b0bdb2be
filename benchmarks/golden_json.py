"""The JSON layout of every golden fixture the generators write: diffable, one line per entry that matters.

``dump`` writes the document one line per top-level item; the items named in ``expand`` get one line per entry
(``{"images": 1}``: one line per image), or per entry of each entry (``{"weights_overrides": 2}``: one line per
calibrated BatchNorm of each override). Empty containers and everything deeper stay on one line, as
``json.dumps`` writes it (ASCII only, so the files are the same bytes on every platform).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

# the long parts of the end-to-end and training-step fixtures (tests/golden/end_to_end.py, train_step.py)
FIXTURE_ROWS = {"images": 1, "grads": 1, "margins": 1, "weights_overrides": 2}


def render(value: Any, depth: int, levels: int) -> str:
    """``value`` as JSON whose first ``levels`` nesting levels of dicts / lists take one line per entry, indented
    one space per ``depth`` (the closing bracket at ``depth``, the entries one deeper)."""
    if levels <= 0 or not isinstance(value, (dict, list)) or not value:
        return json.dumps(value)
    if isinstance(value, dict):
        entries = [f"{json.dumps(k)}: {render(v, depth + 1, levels - 1)}" for k, v in value.items()]
        first, last = "{", "}"
    else:
        entries = [render(v, depth + 1, levels - 1) for v in value]
        first, last = "[", "]"
    inner = "\n" + " " * (depth + 1)
    return first + inner + ("," + inner).join(entries) + "\n" + " " * depth + last


def dump(doc: Mapping[str, Any], expand: Mapping[str, int] = FIXTURE_ROWS) -> str:
    """The fixture text: one line per top-level item, ``expand[key]`` more levels of lines for those keys."""
    entries = [f"{json.dumps(k)}: {render(v, 1, expand.get(k, 0))}" for k, v in doc.items()]
    return "{\n " + ",\n ".join(entries) + "\n}\n"


def write_fixture(folder: Path, name: str, doc: Mapping[str, Any], expand: Mapping[str, int] = FIXTURE_ROWS) -> Path:
    """Write ``folder/<name>.json`` (the folder made if needed), say so, and return its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(dump(doc, expand))
    print(f"wrote {path}")
    return path
