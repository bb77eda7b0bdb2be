"""The README's onnxruntime snippet, run as written, gives ``detcli predict``'s detections on the same image: one
exported model per test-time resize (NanoDet-Plus's warp, RetinaNet's keep-ratio resize, RTMDet's resize + pad
114)."""
from __future__ import annotations

import json
import re
import shutil
from contextlib import redirect_stdout
from io import StringIO
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detcli.app.export import ExportRequest, export_command
from detcli.config.loader import presets_dir
from tests.support.cli_subprocess import run_cli_forked
from tests.support.official_weights import official_checkpoint

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
torch.set_num_threads(1)

README = Path(__file__).resolve().parents[2] / "README.md"
LINE = re.compile(r"^(?P<name>.+) (?P<score>[0-9.]+) \[(?P<box>[^\]]*)\]$")


def readme_snippet() -> str:
    """The one ```python block of README.md that runs onnxruntime."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    (snippet,) = [b for b in blocks if "onnxruntime as ort" in b]
    return snippet


def run_snippet(code: str, folder: Path, monkeypatch) -> list[tuple[str, float, list[float]]]:
    """Execute ``code`` in ``folder``; its printed detections as (class, score, [x1, y1, x2, y2])."""
    monkeypatch.chdir(folder)
    out = StringIO()
    with redirect_stdout(out):
        exec(compile(code, str(README), "exec"), {"__name__": "__readme__"})
    rows = []
    for line in out.getvalue().splitlines():
        m = LINE.match(line)
        assert m, line
        rows.append((m["name"], float(m["score"]), [float(v) for v in m["box"].split(",")]))
    return rows


def street_image(path: Path) -> None:
    """A 150×100 picture with a few bright shapes on noise (not square: the keep-ratio resizes and pads matter)."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 80, (100, 150, 3), dtype=np.uint8)
    cv2.rectangle(img, (20, 15), (70, 80), (30, 200, 240), -1)
    cv2.circle(img, (110, 50), 25, (250, 250, 250), -1)
    cv2.imwrite(str(path), img)


@pytest.mark.parametrize("preset, imgsz", [("nanodet-plus-m", 96), ("retinanet-r18-fpn", 128), ("rtmdet-tiny", 96)])
def test_readme_snippet_gives_detcli_predicts_detections(tmp_path, monkeypatch, preset, imgsz):
    weights = official_checkpoint(presets_dir() / f"{preset}.yaml", tmp_path)
    out = export_command(ExportRequest(weights=weights, preset=preset, imgsz=imgsz, device="cpu"))
    shutil.copy(out, tmp_path / "best.onnx")
    shutil.copy(out.with_name(out.name + ".json"), tmp_path / "best.onnx.json")
    street_image(tmp_path / "street.jpg")
    proc = run_cli_forked("predict", "street.jpg", "--weights", "best.onnx", "--device", "cpu", "--no-save",
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    records = json.loads((tmp_path / "runs" / "predict" / "predict" / "predictions.json").read_text())
    expected = [(r["category"], r["score"], [r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2],
                                            r["bbox"][1] + r["bbox"][3]]) for r in records]
    got = run_snippet(readme_snippet(), tmp_path, monkeypatch)
    assert len(expected) >= 3, "the model should find something above 0.35 on the picture"
    assert len(got) == len(expected)
    unmatched = list(expected)
    for name, score, box in got:  # each printed detection is one of detcli's: class, score (3 decimals), box
        partner = next((e for e in unmatched if e[0] == name and abs(e[1] - score) <= 6e-4
                        and max(abs(a - b) for a, b in zip(e[2], box)) <= 0.06), None)
        assert partner is not None, (name, score, box)
        unmatched.remove(partner)
