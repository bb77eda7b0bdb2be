"""The check that runs after every export: the exported file against PyTorch on the same input.

Graph outputs are compared by :func:`compare_raw` (raw head outputs) and :func:`compare_detections` (end-to-end
outputs); two :class:`~detcli.inference.predictor.Predictor` runtimes by :func:`compare_predictors`, through the
prediction loop.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from detcli.inference.loop import predict_batch
from detcli.inference.predictor import Predictor
from detcli.postprocess import PostprocessConfig
from detcli.structures import Batch, Detections

RAW_TOLERANCE = {"float32": 1e-4, "float16": 1e-2}  # max |Δ| / max(1, |value|) of the raw head outputs
BOX_TOLERANCE = {"float32": 1e-2, "float16": 1.0}  # input pixels
SCORE_TOLERANCE = {"float32": 1e-4, "float16": 1e-2}


@dataclass
class ParityReport:
    """Numbers of the check (also written to the JSON beside the model).

    Attributes:
        input: what was fed ("random normal, seed 0" or the image used).
        raw_max_abs_diff: max |PyTorch − exported| over the raw head outputs.
        raw_tolerance: the limit for the dtype, on ``raw_max_scaled_diff``.
        raw_max_scaled_diff: max |PyTorch − exported| / max(1, |PyTorch|): absolute for values up to 1, relative
            above (RTMDet's raw outputs are distances in pixels, in the hundreds, where float32 itself rounds by
            more than 1e-4).
        detections: per image (end-to-end mode): counts, labels equal, max |Δbox|, max |Δscore|; None in raw mode.
        passed: everything within tolerance.
    """

    input: str
    dtype: str
    raw_max_abs_diff: float
    raw_tolerance: float
    detections: list[dict[str, Any]] | None = None
    raw_max_scaled_diff: float = float("nan")
    passed: bool = False
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """The fields as JSON values: a NaN or infinite figure (nothing to compare) becomes None."""
        return _json_floats(asdict(self))


def _json_floats(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_floats(v) for v in value]
    return value


def non_finite(t: Tensor, what: str) -> str | None:
    """``"<what>: 3 NaN/inf values, the first at (0, 12, 4)"``, or None when every value is finite."""
    bad = ~torch.isfinite(t) if t.dtype.is_floating_point else torch.zeros(t.shape, dtype=torch.bool)
    if not bool(bad.any()):
        return None
    first = tuple(int(i) for i in bad.nonzero()[0])
    return f"{what}: {int(bad.sum())} NaN/inf value(s), the first at {first}"


def compare_raw(reference: list[Tensor], exported: list[np.ndarray | Tensor], report: ParityReport,
                names: list[str] | None = None) -> None:
    """Max |Δ| of the raw outputs, and the check: |Δ| ≤ tolerance · max(1, |PyTorch value|) everywhere.
    A NaN or infinity on either side fails it (``names``: the outputs', for the message)."""
    diff = scaled = 0.0
    names = names or [f"output {k}" for k in range(len(reference))]
    said = len(report.problems)
    for name, ref, got in zip(names, reference, exported):
        got = torch.as_tensor(np.asarray(got) if not isinstance(got, Tensor) else got.cpu())
        if tuple(got.shape) != tuple(ref.shape):
            report.problems.append(f"raw output shape {tuple(got.shape)} != PyTorch {tuple(ref.shape)}")
            diff = scaled = float("inf")
            continue
        bad = [m for m in (non_finite(ref.detach().cpu(), f"PyTorch {name}"), non_finite(got, f"exported {name}"))
               if m is not None]
        if bad:
            report.problems.extend(bad)
            diff = scaled = float("inf")
            continue
        if ref.numel():
            ref = ref.detach().float().cpu()
            delta = (ref - got.float()).abs()
            diff = max(diff, float(delta.max()))
            scaled = max(scaled, float((delta / ref.abs().clamp(min=1.0)).max()))
    report.raw_max_abs_diff, report.raw_max_scaled_diff = diff, scaled
    if scaled > report.raw_tolerance and len(report.problems) == said:  # else: a shape or NaN/inf, said above
        report.problems.append(f"raw outputs differ by {diff:.3g} (> {report.raw_tolerance:g} · max(1, |value|))")


def compare_detections(
    reference: list[Tensor], exported: list[np.ndarray | Tensor], report: ParityReport, max_det: int
) -> None:
    """End-to-end outputs (num_dets, boxes, scores, labels), per image: every detection of one side has a partner
    on the other (same label, box and score within tolerance). A detection may go without a partner only when
    float noise can explain it: another detection of its class (either side) has the same score within
    tolerance but another box — a tie that NMS may resolve either way, with the suppressions that follow — or
    its score is within tolerance of the ``max_det`` cut-off."""
    ref = [t.detach().cpu() for t in reference]
    got = [torch.as_tensor(np.asarray(t) if not isinstance(t, Tensor) else t.cpu()) for t in exported]
    box_tol, score_tol = BOX_TOLERANCE[report.dtype], SCORE_TOLERANCE[report.dtype]
    rows = []
    for i in range(ref[0].shape[0]):
        n_ref, n_got = int(ref[0][i]), int(got[0][i])
        a = [t[i, :n_ref].float() if t.dtype.is_floating_point else t[i, :n_ref] for t in ref[1:]]
        b = [t[i, :n_got].float() if t.dtype.is_floating_point else t[i, :n_got] for t in got[1:]]
        bad = [m for side, dets in (("PyTorch", a), ("exported", b)) for name, t in zip(("boxes", "scores"), dets)
               if (m := non_finite(t, f"image {i}: {side} {name}")) is not None]
        if bad:  # no detection of a NaN box or score can be compared: the check fails
            report.problems.extend(bad)
            rows.append({"image": i, "pytorch": n_ref, "exported": n_got, "matched": 0, "unmatched_ties_or_cutoff": 0,
                         "max_box_diff": float("inf"), "max_score_diff": float("inf"), "match": False})
            continue
        box_d = (a[0][:, None] - b[0][None]).abs().amax(-1) if n_ref and n_got else torch.zeros(n_ref, n_got)
        same_score = (a[2][:, None] == b[2][None]) & ((a[1][:, None] - b[1][None]).abs() <= score_tol)
        matched, lone_ref, lone_got = _pair(same_score & (box_d <= box_tol), np.arange(n_ref), np.arange(n_got))
        both = [torch.cat([x, y]) for x, y in zip(a, b)]  # every detection of the image, either side
        cutoff = min(float(a[1].min()) if n_ref == max_det else -1.0, float(b[1].min()) if n_got == max_det else -1.0)
        lone = [j for j in lone_ref] + [n_ref + j for j in lone_got]
        unexplained = [j for j in lone if not (_has_tie(both, j, box_tol, score_tol) or
                                               (cutoff >= 0 and float(both[1][j]) <= cutoff + score_tol))]
        rows_i, cols_i = (np.array([p[k] for p in matched], dtype=int) for k in (0, 1))
        row: dict[str, Any] = {
            "image": i, "pytorch": n_ref, "exported": n_got, "matched": len(matched),
            "unmatched_ties_or_cutoff": len(lone) - len(unexplained),
            "max_box_diff": float(box_d[rows_i, cols_i].max()) if len(matched) else 0.0,
            "max_score_diff": float((a[1][rows_i] - b[1][cols_i]).abs().max()) if len(matched) else 0.0,
        }
        row["match"] = not unexplained
        if unexplained:
            report.problems.append(f"image {i}: {len(unexplained)} detections without a partner (PyTorch "
                                   f"{len(lone_ref)}, exported {len(lone_got)} unmatched)")
        rows.append(row)
    report.detections = rows


def detections_as_outputs(dets: list[Detections]) -> list[Tensor]:
    """B detections → the end-to-end outputs :func:`compare_detections` reads: num_dets (B,), boxes (B, K, 4),
    scores (B, K), labels (B, K), zero-padded to the largest count K."""
    k = max([1] + [len(d.scores) for d in dets])
    boxes, scores = torch.zeros(len(dets), k, 4), torch.zeros(len(dets), k)
    labels = torch.zeros(len(dets), k, dtype=torch.int64)
    for i, d in enumerate(dets):
        n = len(d.scores)
        boxes[i, :n], scores[i, :n], labels[i, :n] = d.boxes.cpu(), d.scores.cpu(), d.labels.cpu()
    return [torch.tensor([len(d.scores) for d in dets]), boxes, scores, labels]


def compare_predictors(
    reference: Predictor, exported: Predictor, batch: Batch, device: torch.device | str,
    cfg: PostprocessConfig | None, report: ParityReport,
) -> None:
    """Both runtimes through the prediction loop (:func:`~detcli.inference.loop.predict_batch`: detections in
    original pixels) on the same batch with the same settings (None: each one's own), compared per image as
    :func:`compare_detections` does."""
    max_det = (cfg or reference.postprocess_cfg).max_det
    ref = detections_as_outputs(predict_batch(reference, batch, device, cfg))
    got = detections_as_outputs(predict_batch(exported, batch, device, cfg))
    compare_detections(ref, got, report, max_det)


def _has_tie(dets: list[Tensor], j: int, box_tol: float, score_tol: float) -> bool:
    """Detection ``j`` has a same-class detection of (nearly) the same score and another box."""
    boxes, scores, labels = dets
    same = (labels == labels[j]) & ((scores - scores[j]).abs() <= score_tol)
    return bool((same & ((boxes - boxes[j]).abs().amax(-1) > box_tol)).any())


def _pair(ok: Tensor, rows: np.ndarray, cols: np.ndarray) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Largest one-to-one pairing of ``rows`` × ``cols`` where ``ok``; returns the pairs and the leftovers."""
    from scipy.optimize import linear_sum_assignment

    if len(rows) == 0 or len(cols) == 0:
        return [], rows, cols
    sub = ok.numpy()[np.ix_(rows, cols)]
    r, c = linear_sum_assignment(sub, maximize=True)
    keep = sub[r, c]
    pairs = [(int(rows[x]), int(cols[y])) for x, y in zip(r[keep], c[keep])]
    used_r = np.array([p[0] for p in pairs], dtype=int)
    used_c = np.array([p[1] for p in pairs], dtype=int)
    return pairs, np.setdiff1d(rows, used_r).astype(int), np.setdiff1d(cols, used_c).astype(int)
