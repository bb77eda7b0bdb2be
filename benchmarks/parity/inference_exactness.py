"""Which parts of the optimised inference model (``detcli.models.fuse``) change a number, on the golden fixtures.

For each preset, the golden weights (``tests/golden/<preset>.json``: official key names + seed) are written as an
official checkpoint and loaded through ``load_for_inference`` (the ``--weights`` path); the fixture's input runs
through the model as loaded (the reference: float32, NCHW, what the official code runs) and through each variant
of :func:`detcli.models.fuse.fuse_for_inference`:

- ``exact``: ``fold=False, channels_last=False`` (training modules dropped, inference mode, priors cached):
  ``detcli predict/eval --exact``;
- ``channels_last``: NHWC weights and input only;
- ``fold``: BatchNorms folded (in float64, cast to float32) only;
- ``fold+channels_last``: the default path on CPU.

Per variant: whether the raw outputs (class logits, box regression, score factor) are bitwise equal, the worst
``|Δ| / max(1, |value|)``, how many elements differ, and the final detections (``predict`` at the fixture's test
settings): their count against the reference's and how many are identical (same label, box and score bit for bit).
No timing (see ``benchmarks/speed/inference_latency.py`` for that).

Usage::

    python -m benchmarks.parity.inference_exactness                        # every golden preset, 1 thread
    python -m benchmarks.parity.inference_exactness --preset rtmdet-s --preset defcn-r50-fpn --threads 2
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]

from tests.golden.checkpoints import write_official_checkpoint  # noqa: E402
from tests.golden.weights import fixture_state_dict, golden_input  # noqa: E402

from detcli.inference.loading import load_for_inference  # noqa: E402
from detcli.models.fuse import fuse_for_inference  # noqa: E402
from detcli.structures import Detections, ImageMeta  # noqa: E402

GOLDEN = ROOT / "tests" / "golden"
VARIANTS = {
    "exact": dict(fold=False, channels_last=False),
    "channels_last": dict(fold=False, channels_last=True),
    "fold": dict(fold=True, channels_last=False),
    "fold+channels_last": dict(fold=True, channels_last=True),
}


def load(preset: str, directory: Path):
    """(model as loaded from the golden official checkpoint, the fixture's input (B, 3, H, W), its test cfg)."""
    doc = json.loads((GOLDEN / f"{preset}.json").read_text())
    path, _ = write_official_checkpoint(doc, fixture_state_dict(doc), directory)
    loaded = load_for_inference(path, preset, [], torch.device("cpu"))
    path.unlink()
    if "input_shape" in doc:
        images = golden_input(doc["input_shape"], doc["seed"])
    else:
        with np.load(GOLDEN / f"{preset}.npz") as npz:
            images = torch.from_numpy(npz["input"])
    return loaded.model, images, doc.get("test_cfg") or {}


def raw(model, images: torch.Tensor) -> list[torch.Tensor]:
    with torch.inference_mode():
        out = model(images)
    return [t for t in out if t is not None]


def detections(model, images: torch.Tensor, cfg: dict) -> list[Detections]:
    h, w = images.shape[-2:]
    metas = [ImageMeta(i, f"{i}.jpg", (h, w), (h, w), np.eye(3).tolist()) for i in range(len(images))]
    settings = model.postprocess_cfg.replace(score_thr=cfg.get("score_thr"), iou_thr=(cfg.get("nms") or {}).get(
        "iou_threshold"), max_det=cfg.get("max_per_img"))  # the official test_cfg the fixture records
    return model.predict(images, metas, settings)


def identical(a: Detections, b: Detections) -> int:
    """How many detections of ``a`` have a bitwise-equal twin (label, box, score) in ``b``."""
    keys = {(int(c), *s.tolist(), float(x)) for c, s, x in zip(b.labels, b.boxes, b.scores)}
    return sum((int(c), *s.tolist(), float(x)) in keys for c, s, x in zip(a.labels, a.boxes, a.scores))


def compare(preset: str, directory: Path) -> None:
    model, images, cfg = load(preset, directory)
    ref_raw, ref_det = raw(model, images), detections(model, images, cfg)
    n_ref = sum(len(d.scores) for d in ref_det)
    for name, options in VARIANTS.items():
        variant = fuse_for_inference(model, **options)
        got = raw(variant, images)
        equal = all(torch.equal(a, b) for a, b in zip(got, ref_raw))
        rel = max(float(((a - b).abs() / b.abs().clamp(min=1)).max()) for a, b in zip(got, ref_raw))
        differ = sum(int((a != b).sum()) for a, b in zip(got, ref_raw))
        total = sum(b.numel() for b in ref_raw)
        dets = detections(variant, images, cfg)
        n = sum(len(d.scores) for d in dets)
        same = sum(identical(d, r) for d, r in zip(dets, ref_det))
        print(f"{preset:24s} {name:19s} raw bitwise {'yes' if equal else 'no ':3s}  max rel {rel:.2e}  "
              f"differing {differ}/{total}  detections {n}/{n_ref}, identical {same}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", action="append", help="golden preset (repeatable; default: all)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    presets = args.preset or sorted(p.stem for p in GOLDEN.glob("*.json"))
    print(f"torch {torch.__version__}, {args.threads} thread(s)")
    with tempfile.TemporaryDirectory() as tmp:
        for preset in presets:
            compare(preset, Path(tmp))


if __name__ == "__main__":
    main()
