"""``detcli train --check``: a pre-flight report of the data a training run would read, without training.

It resolves the preset and the data exactly as ``detcli train`` does and prints the same dataset tables, then,
per split: box size (sqrt area, px) and aspect (w/h) histograms per class, the images without labels and the
duplicate boxes (same class, identical coordinates, same image); over both splits: duplicate images (same
bytes, also between train and val) and images that do not decode (every file is read once and decoded with
the decoder training and evaluation use, so a truncated val image is found here, not at the first validation).
Writes ``labels.jpg`` (train) / ``labels_val.jpg``, and ``report.json`` into ``runs/check/checkN``. Exits 0
whatever it finds in the data it can read; data files that cannot be read are an error.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detcli.console import Reporter
from detcli.errors import DetcliError

SHOWN = 10  # examples listed per finding


def check_command(req) -> dict[str, Any]:
    """Run the report for a :class:`~detcli.app.train.TrainRequest`; returns what ``report.json`` holds."""
    from detcli.app.train import print_dataset_summary
    from detcli.config.loader import load_preset
    from detcli.data.build import build_dataset
    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.label_stats import label_stats
    from detcli.engine.run_dir import new_run_dir
    from detcli.fileio import atomic_write_json
    from detcli.plots.labels import plot_labels

    reporter = Reporter(force_plain=req.force_plain)
    reporter.header("train --check", req.device or "auto")
    if req.resume is not None:
        raise DetcliError("--check looks at the data of a new run: give --preset (and --data), not --resume")
    preset, _ = load_preset(req.preset, req.overrides)
    data_spec = req.data or ("files" if req.files is not None else "demo")
    data = req.files if req.files is not None else resolve_dataset(data_spec)
    splits = [(kind, split) for kind, split in (("train", data.train), ("val", data.val)) if split is not None]
    stats = {}
    for kind, split in splits:
        ds = build_dataset(preset, split, train=kind == "train", imgsz=req.imgsz)
        print_dataset_summary(reporter, kind, ds)
        if kind == "train" and (preset.data.filter_empty or preset.data.min_size):
            # the report looks at every listed image, also those the run filters out
            unfiltered = preset.model_copy(update={"data": preset.data.model_copy(
                update={"filter_empty": False, "min_size": 0})})
            ds = build_dataset(unfiltered, split, train=True, imgsz=req.imgsz)
        stats[kind] = label_stats(ds)
    out = new_run_dir(req.project, req.name, exist_ok=req.exist_ok)
    report: dict[str, Any] = {"preset": preset.name, "data": data.model_dump(mode="json"), "splits": {}}
    for kind, s in stats.items():
        report["splits"][kind] = _report_split(reporter, kind, s, filtered=kind == "train" and preset.data.filter_empty)
        name = "labels.jpg" if kind == "train" else f"labels_{kind}.jpg"
        plot_labels(s, out / name, title=f"{kind} labels: {s.img_dir}")
    report["duplicate_images"], report["unreadable_images"] = _duplicate_images(reporter, stats)
    atomic_write_json(out / "report.json", report)
    files = ", ".join(sorted(p.name for p in out.iterdir()))
    reporter.info(f"Report saved to {out}: {files}. Nothing was trained.")
    return report


def _report_split(reporter: Reporter, kind: str, s, filtered: bool) -> dict[str, Any]:
    from detcli.data.label_stats import ASPECT_EDGES, ASPECT_LABELS, SIZE_EDGES, class_histogram, size_labels

    k = len(s.class_names)
    sizes, aspects = s.sqrt_area(), s.aspect()
    size_hist = class_histogram(sizes, s.labels, k, SIZE_EDGES)
    aspect_hist = class_histogram(aspects, s.labels, k, ASPECT_EDGES)
    names = [*s.class_names, "all"]
    size_rows = []
    for c, name in enumerate(names):
        sel = sizes[s.labels == c] if c < k else sizes
        hist = size_hist[c] if c < k else size_hist.sum(axis=0)
        spread = [float(sel.min()), float(np.median(sel)), float(sel.max())] if sel.size else ["-"] * 3
        size_rows.append([name, int(sel.size), *spread, *hist.tolist()])
    reporter.table(f"{kind}: box size per class, sqrt(area) in px of the original image (COCO: small < 32 ≤ "
                   "medium < 96 ≤ large)", ["class", "boxes", "min", "median", "max", *size_labels()], size_rows)
    aspect_rows = [[name, int(h.sum()), *h.tolist()]
                   for name, h in zip(names, [*aspect_hist, aspect_hist.sum(axis=0)])]
    reporter.table(f"{kind}: box aspect per class, width / height", ["class", "boxes", *ASPECT_LABELS], aspect_rows)

    empty = s.images_without_labels()
    if empty:
        note = " (data.filter_empty: the run leaves them out)" if filtered else " (kept: they train as background)"
        reporter.info(f"{kind}: {len(empty)} of {len(s.file_names)} image(s) without labels{note}: "
                      + _examples(empty))
    else:
        reporter.info(f"{kind}: every image has at least one label")
    dup = s.duplicate_boxes()
    if dup:
        extra = sum(d["copies"] - 1 for d in dup)
        reporter.warn(f"{kind}: {extra} duplicate box(es) (same image, class and coordinates): " + _examples(
            [f"{d['file_name']} {d['class']} {d['box']} x{d['copies']}" for d in dup]))
    else:
        reporter.info(f"{kind}: no duplicate boxes")
    return {
        "images": len(s.file_names), "boxes": int(len(s.labels)),
        "instances": dict(zip(s.class_names, s.per_class().tolist())),
        "size_bins": size_labels(), "size_histogram": dict(zip(names, [r[5:] for r in size_rows])),
        "aspect_bins": list(ASPECT_LABELS), "aspect_histogram": dict(zip(names, [r[2:] for r in aspect_rows])),
        "images_without_labels": empty, "duplicate_boxes": dup,
    }


def _duplicate_images(reporter: Reporter, stats: dict) -> tuple[list[list[str]], list[dict[str, str]]]:
    """Read, hash and decode every image file of every split; report the groups of identical files and the
    files that cannot be read or decoded."""
    from detcli.data.label_stats import duplicate_files

    entries = [(kind, name, s.img_dir / name) for kind, s in stats.items() for name in s.file_names]
    bar = reporter.progress([p for _, _, p in entries], total=len(entries), description="reading images")
    groups, unreadable = duplicate_files(bar, decode=True)
    named = [[f"{entries[i][0]}: {entries[i][1]}" for i in g] for g in groups]
    if named:
        across = sum(len({entries[i][0] for i in g}) > 1 for g in groups)
        reporter.warn(
            f"{len(groups)} group(s) of identical image files ({sum(len(g) - 1 for g in groups)} duplicate(s)"
            + (f"; {across} shared between splits" if across else "") + "): "
            + _examples([" = ".join(g) for g in named])
        )
    else:
        reporter.info(f"no duplicate images among {len(entries)} file(s)")
    for i, reason in unreadable[:SHOWN]:
        reporter.warn(f"{entries[i][0]}: cannot read {entries[i][2]}: {reason}")
    if len(unreadable) > SHOWN:
        reporter.warn(f"… {len(unreadable) - SHOWN} more unreadable image(s) in report.json")
    if unreadable:
        reporter.info("training substitutes the next readable image for an unreadable one; evaluation scores it "
                      "with no detection (its boxes count as missed)")
    return named, [{"split": entries[i][0], "file": str(entries[i][2]), "reason": r} for i, r in unreadable]


def _examples(items: list[str]) -> str:
    shown = "; ".join(items[:SHOWN])
    return shown + (f"; … ({len(items) - SHOWN} more in report.json)" if len(items) > SHOWN else "")


__all__ = ["check_command"]
