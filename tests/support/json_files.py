"""Editing a JSON file in place (the data-file failure tests)."""
from __future__ import annotations

import json
from pathlib import Path


def edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
