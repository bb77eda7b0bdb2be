"""The README's Python API snippet, run as written on a demo checkpoint, predicts, saves, converts and evaluates."""
from __future__ import annotations

import re
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import torch

from tests.support.demo_checkpoint import write_confident_checkpoint

README = Path(__file__).resolve().parents[2] / "README.md"


def api_snippet() -> str:
    """The one ```python block of README.md that loads a model with ``detcli.load``."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (snippet,) = [b for b in blocks if "detcli.load(" in b]
    return snippet


def test_the_readme_api_snippet_runs_as_written(tmp_path, monkeypatch, one_thread):
    torch.manual_seed(0)
    weights = tmp_path / "runs" / "train" / "train" / "weights"
    weights.mkdir(parents=True)
    ckpt, _, val_dir = write_confident_checkpoint(tmp_path / "data", "best.pt")
    shutil.move(ckpt, weights / "best.pt")
    (tmp_path / "images").mkdir()
    names = sorted(p.name for p in val_dir.iterdir())[:2]
    for name in names:
        shutil.copy(val_dir / name, tmp_path / "images" / name)
    monkeypatch.chdir(tmp_path)
    out, scope = StringIO(), {"__name__": "__readme__"}
    with redirect_stdout(out):
        exec(compile(api_snippet(), str(README), "exec"), scope)
    printed = out.getvalue()
    assert printed.startswith("Model(nanodet-plus-m, 5 classes, input 64×64, detcli ")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names
    assert re.search(r"^AP50 \d\.\d{3}, AP50-95 \d\.\d{3} on 4 images$", printed, flags=re.M), printed
    results, coco = scope["results"], scope["coco"]
    assert len(coco) == sum(len(r) for r in results) > 0
    assert {d["image_id"] for d in coco} <= {1, 2}
