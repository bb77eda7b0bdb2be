"""``detcli inspect-anchors``: which priors every GT box gets, for any preset, through the detector contract.

A statistics pass runs the preset's own assigner over the whole split (batched, nothing drawn); then the selected
images are drawn, one panel per level. Nothing here knows a family: priors, assignment, prior fit and the
advice come from the detector (:mod:`detcli.models.base`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detcli.app.preflight import check_preset, check_weights, resolve_data
from detcli.console import Reporter
from detcli.errors import DetcliError
from detcli.fileio import output_folder
from detcli.inference.device import select_device
from detcli.inference.loading import load_for_inference

if TYPE_CHECKING:  # torch loads after the cheap checks of inspect_command
    import torch


@dataclass
class InspectRequest:
    preset: str | None = None
    data: str | None = None
    split: str = "train"
    images: int = 4
    image_ids: list[int] = field(default_factory=list)
    weights: Path | None = None
    train_aug: bool = False
    compare: list[str] = field(default_factory=list)
    output: Path | None = None
    project: Path = Path("runs/inspect")
    name: str = "inspect"
    exist_ok: bool = False  # write into project/name as it is, instead of numbering inspect2, inspect3, …
    imgsz: int | None = None
    batch: int = 8
    workers: int = 2
    limit: int | None = None
    device: str | None = None
    seed: int = 0
    overrides: list[str] = field(default_factory=list)


@dataclass
class Subject:
    """One preset to inspect: its model, data and what was found."""

    preset: Any
    model: Any
    dataset: Any
    trained: bool
    weights: Path | None
    runner: Any = None
    stats: Any = None
    report: dict[str, Any] = field(default_factory=dict)


def inspect_command(req: InspectRequest) -> Path:
    """Statistics (table + ``stats.json``) and pictures; returns the output folder.

    The flags, presets, ``--set`` fields, weights file and dataset are checked before torch and OpenCV load.
    """
    if req.split not in ("train", "val"):
        raise DetcliError(f"--split {req.split!r}: choose train or val")
    if req.compare and req.weights is not None:
        raise DetcliError("--compare inspects untrained models of several presets; drop --weights (or inspect the "
                          "checkpoint alone)")
    check_weights(req.weights, default_latest=False)
    presets = _presets(req)
    data_cfg = resolve_data(req.data)  # None: the demo data, or the checkpoint's dataset with --weights
    from detcli.data.loader import cap_workers
    from detcli.engine.run_dir import new_run_dir
    from detcli.fileio import atomic_write_json
    from detcli.inspect.assign import InspectedImages, assignment_runner, collect_statistics
    from detcli.inspect.stats import AssignmentStats, level_names

    reporter = Reporter()
    device = select_device(req.device)
    reporter.header("inspect-anchors", str(device))
    subjects = _subjects(req, presets, data_cfg, device, reporter)
    first = subjects[0].dataset
    indices = list(range(len(first) if req.limit is None else min(req.limit, len(first))))
    drawn = _selected(req, first)
    out = Path(req.output) if req.output is not None else new_run_dir(req.project, req.name, exist_ok=req.exist_ok)
    if req.output is not None:
        output_folder(out, f"--output {out}")
    workers = cap_workers(req.workers)

    for s in subjects:
        s.runner = assignment_runner(s.model)
        strides = tuple(s.model.strides)
        s.stats = AssignmentStats(strides, first.class_names, anchor_iou=s.model.priors((64, 64)).boxes is not None,
                                  size_divisor=s.preset.input.size_divisor)
        reporter.info(f"{s.preset.name}: assigning {len(indices)} {req.split} image(s) on {_predictions_text(s)}")
        seconds, unreadable = collect_statistics(
            s.model, s.runner, InspectedImages(s.dataset, indices, req.seed,
                                               pixels=s.model.assignment_predictions is not None),
            s.stats, req.batch, workers,
            s.preset.input.size_divisor, device,
            progress=lambda loader: reporter.progress(loader, total=len(loader), description="assign"),
        )
        if unreadable:
            reporter.warn(f"{len(unreadable)} unreadable image(s) skipped: {', '.join(unreadable[:5])}"
                          + (" …" if len(unreadable) > 5 else ""))
        s.report = _report(req, s, level_names(strides), seconds, unreadable)

    pictures = _draw(req, subjects, drawn, out, reporter)
    for s in subjects:
        s.report["pictures"] = pictures
    payload = subjects[0].report if len(subjects) == 1 else {"presets": {s.preset.name: s.report for s in subjects}}
    atomic_write_json(out / "stats.json", payload)
    _print(reporter, subjects)
    reporter.info(f"{len(pictures)} picture(s) and stats.json saved to {out}")
    return out


# ---------------------------------------------------------------------------------------- inputs
def _presets(req: InspectRequest) -> list[Any]:
    """The presets to inspect without ``--weights`` (``--preset`` first, then ``--compare``), loaded and checked
    with the ``--set`` fields; with ``--weights`` none (the checkpoint carries its own), but a ``--preset`` for
    an official checkpoint is checked."""
    from detcli.config.loader import builtin_presets, load_preset

    if req.weights is not None:
        if req.preset is not None:
            check_preset(req.preset, req.overrides)
        return []
    names = ([req.preset] if req.preset else []) + [p for p in req.compare if p != req.preset]
    if not names:
        raise DetcliError(f"give --preset (one of: {', '.join(builtin_presets())}), --weights or --compare")
    return [load_preset(name, req.overrides)[0] for name in names]


def _subjects(req: InspectRequest, presets: list[Any], data_cfg: Any, device: torch.device,
              reporter: Reporter) -> list[Subject]:
    """The presets to inspect, each with its model (trained from ``--weights`` or untrained) and dataset
    (``data_cfg``, else the checkpoint's with ``--weights``, else the demo data)."""
    import torch

    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.recorded import recorded_dataset
    from detcli.models import build_model

    if req.weights is not None:
        loaded = load_for_inference(req.weights, req.preset, req.overrides, device, reporter)
        if data_cfg is None and req.data is None and loaded.spec.dataset is not None:
            data_cfg = recorded_dataset(loaded.spec.dataset.get("config"), f"checkpoint {loaded.weights}")
        elif data_cfg is None:
            data_cfg = resolve_dataset("demo")
        dataset = _dataset(loaded.preset, data_cfg, req)
        if dataset.num_classes != loaded.model.num_classes:
            raise DetcliError(
                f"{req.weights}: the weights are for {loaded.model.num_classes} classes, the data "
                f"({dataset.ann_file}) has {dataset.num_classes}; give the --data the model was trained on"
            )
        model = _with_priors(loaded.model.eval(), loaded.preset.name)
        return [Subject(loaded.preset, model, dataset, True, loaded.weights)]
    data_cfg = data_cfg if data_cfg is not None else resolve_dataset("demo")
    subjects = []
    for preset in presets:
        dataset = _dataset(preset, data_cfg, req)
        torch.manual_seed(req.seed)  # the same untrained weights every run
        model = build_model(preset, dataset.num_classes, pretrained=False).to(device).eval()
        subjects.append(Subject(preset, _with_priors(model, preset.name), dataset, False, None))
    return subjects


def _with_priors(model, name: str):
    """``model`` when it has priors to show (the contract's ``priors`` and ``prior_fit``), else a clear error."""
    import torch

    from detcli.models.base import NoPriors

    try:
        priors = model.priors((64, 64))
        model.prior_fit(priors, torch.zeros(0, 4, device=priors.points.device))
    except NoPriors as e:
        raise DetcliError(f"preset {name}: no priors to show ({e}); inspect-anchors needs a detector with priors "
                          "and a prior-fit rule") from None
    if priors.num == 0:
        raise DetcliError(f"preset {name}: no priors to show (the model has no prior at any level)")
    return model


def _dataset(preset, data_cfg, req: InspectRequest):
    from detcli.data.build import build_transform, dataset_for_split

    split = getattr(data_cfg, req.split)
    if split is None:
        raise DetcliError(f"the dataset has no {req.split} split; use --split val")
    return dataset_for_split(split, build_transform(preset, train=req.train_aug, imgsz=req.imgsz),
                             filter_empty=False, unreadable="raise")


def _selected(req: InspectRequest, dataset) -> list[int]:
    """Indices to draw: ``--image-ids`` (each must be in the split), else the first ``--images`` with a GT."""
    ids = dataset.image_ids
    if req.image_ids:
        where = {image_id: i for i, image_id in enumerate(ids)}
        unknown = [i for i in req.image_ids if i not in where]
        if unknown:
            raise DetcliError(
                f"--image-ids {', '.join(map(str, unknown))}: not in {dataset.ann_file} ({req.split} split, "
                f"{len(ids)} images with ids {min(ids)}…{max(ids)}, e.g. {', '.join(map(str, ids[:5]))})"
            )
        return [where[i] for i in req.image_ids]
    chosen = []
    for i in range(len(dataset)):
        if len(chosen) >= req.images:
            break
        if len(dataset.annotation(i)[1]):
            chosen.append(i)
    return chosen


def _predictions_text(s: Subject) -> str:
    """What the assignment looked at, for the table, the JSON and every picture."""
    what = s.model.assignment_predictions
    if what is None:
        return "priors and GT boxes only (the assigner looks at no predictions)"
    return f"{what} of " + (f"the trained model {s.weights}" if s.trained
                            else "an UNTRAINED model (random predictions; give --weights)")


# ---------------------------------------------------------------------------------------- results
def _report(req: InspectRequest, s: Subject, levels: list[str], seconds: float, unreadable: list[str]) -> dict:
    from detcli.data.build import input_size
    from detcli.inspect.stats import verdict
    from detcli.models import assigner_name

    fit, missed_wh, missed_reasons = s.stats.fit_summary()
    advice = s.model.fit_advice(missed_wh, missed_reasons)
    suits, line = verdict(fit["fit_share"], fit["gts"], advice)
    fit.update(rule=s.model.prior_fit_rule, advice=advice, suits=suits, verdict=line)
    size = input_size(s.preset, req.imgsz)
    return {
        "preset": s.preset.name,
        "assigner": assigner_name(s.preset),
        "weights": str(s.weights) if s.weights is not None else None,
        "trained": s.trained,
        "assignment_on": _predictions_text(s),
        "data": {"ann_file": str(s.dataset.ann_file), "img_dir": str(s.dataset.img_dir), "split": req.split,
                 "pipeline": f"training augmentation (seed {req.seed})" if req.train_aug else "validation resize",
                 "input_size": list(size)},
        "levels": [{"name": n, "stride": st} for n, st in zip(levels, s.model.strides)],
        **s.stats.summary(levels),
        "unreadable_files": unreadable,
        "prior_fit": fit,
        "seconds": round(seconds, 2),
    }


def _draw(req: InspectRequest, subjects: list[Subject], drawn: list[int], out: Path, reporter: Reporter) -> list[dict]:
    """One PNG per selected image (``<stem>.png``; with several presets one sheet, ``compare_<stem>.png``)."""
    import cv2

    from detcli.fileio import atomic_write
    from detcli.inspect import draw
    from detcli.inspect.assign import InspectedImages, assign_batch, collate_readable
    from detcli.inspect.stats import level_names

    written = []
    for idx in drawn:
        rows = []
        for s in subjects:
            sample = InspectedImages(s.dataset, [idx], req.seed)[0]
            if "unreadable" in sample:
                reporter.warn(f"cannot draw {sample['unreadable']}: unreadable image")
                break
            batch = collate_readable([sample], s.preset.input.size_divisor).batch.to(next(s.model.parameters()).device)
            priors, assignment, fits = assign_batch(s.model, s.runner, batch)
            a = _image_assignment(s, sample, priors, assignment, fits[0])
            strides, levels = tuple(s.model.strides), level_names(tuple(s.model.strides))
            meta = sample["meta"]
            title = [f"{s.preset.name} · {Path(meta.file_name).name} (id {meta.image_id}) · input "
                     f"{meta.img_shape[1]}×{meta.img_shape[0]} · {s.report['assigner']}",
                     f"assigned on {_predictions_text(s)}"]
            if len(subjects) == 1:
                rows.append(draw.assignment_sheet(a, title, s.dataset.class_names, levels, strides))
            else:
                panels = draw.hstack(draw.level_panels(a, levels, strides))
                rows.append(draw.vstack([draw.text_bar(title, panels.shape[1]), panels,
                                         draw.legend(a, s.dataset.class_names, levels, panels.shape[1])]))
        else:
            stem = Path(subjects[0].dataset.image_info(idx)["file_name"]).stem
            name = f"{stem}.png" if len(subjects) == 1 else f"compare_{stem}.png"
            sheet = rows[0] if len(rows) == 1 else draw.vstack(rows)
            ok, data = cv2.imencode(".png", sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9])
            if not ok:
                raise DetcliError(f"cannot encode {name} as PNG")
            atomic_write(out / name, lambda f, data=data: f.write(data.tobytes()))
            meta = sample["meta"]
            written.append({"file": name, "image_id": meta.image_id, "image": meta.file_name,
                            "input_shape": list(meta.img_shape)})
    return written


def _image_assignment(s: Subject, sample: dict, priors, assignment, fit):
    """The CPU arrays of one image's assignment for :mod:`detcli.inspect.draw`, the image un-normalised."""
    from detcli.assigners.prior_fit import REASONS, TAKEN_BY_OTHER_GTS
    from detcli.inspect.draw import ImageAssignment

    inp = s.preset.input
    h, w = sample["meta"].img_shape
    img = sample["img"].permute(1, 2, 0).numpy()[:h, :w] * np.asarray(inp.std) + np.asarray(inp.mean)
    img = np.clip(img, 0, 255).astype(np.uint8)
    if inp.channel_order == "rgb":
        img = img[:, :, ::-1]
    gt_inds = assignment.gt_inds[0].cpu().numpy()
    counts = np.bincount(gt_inds[gt_inds > 0] - 1, minlength=len(sample["labels"]))
    anchors = priors.boxes
    notes = []
    for k in range(len(sample["labels"])):
        note = f"best anchor IoU {float(fit.measure[k]):.2f}" if anchors is not None else ""
        if counts[k] == 0:
            code = TAKEN_BY_OTHER_GTS if bool(fit.fits[k]) else int(fit.reason[k])
            note = (note + " - " if note else "- ") + REASONS[code]
        notes.append(note)
    return ImageAssignment(
        image_bgr=np.ascontiguousarray(img),
        gt_boxes=np.asarray(sample["boxes"], dtype=np.float32).reshape(-1, 4),
        gt_labels=np.asarray(sample["labels"], dtype=np.int64).reshape(-1),
        gt_inds=gt_inds,
        points=priors.points[:, :2].cpu().numpy(),
        anchors=None if anchors is None else anchors.cpu().numpy(),
        levels=priors.levels.cpu().numpy(),
        notes=notes,
        aux_gt_inds=None if assignment.auxiliary is None else assignment.auxiliary.gt_inds[0].cpu().numpy(),
    )


def _print(reporter: Reporter, subjects: list[Subject]) -> None:
    if len(subjects) > 1:
        rows = []
        for s in subjects:
            r = s.report
            p = r["positives_per_gt"]
            rows.append([s.preset.name, r["gts"], f"{p['min']}/{p['mean']:.1f}/{p['max']}",
                         r["gts_without_positive"]["count"], f"{r['prior_fit']['fit_share']:.1%}",
                         f"{r['seconds']:.1f}"])
        reporter.table("presets compared", ["preset", "GTs", "pos/GT min/mean/max", "no positive", "prior fit",
                                            "seconds"], rows)
        for s in subjects:
            reporter.info(f"{s.preset.name}: {s.report['prior_fit']['verdict']}")
        return
    r = subjects[0].report
    p, z, iou = r["positives_per_gt"], r["gts_without_positive"], r["positive_iou"]
    aux = r.get("auxiliary_positives_per_gt")
    reporter.key_values(f"assignment of {r['preset']} ({r['assigner']})", {
        "assigned on": r["assignment_on"],
        "images": f"{r['images']} ({r['data']['split']}, {r['data']['pipeline']})"
                  + (f", {r['unreadable_images']} unreadable skipped" if r["unreadable_images"] else ""),
        "GT boxes": r["gts"],
        "positives per GT": f"min {p['min']} · mean {p['mean']:.2f} · max {p['max']}",
        "histogram": "  ".join(f"{k}: {v}" for k, v in p["histogram"].items()),
        **({"auxiliary positives per GT": f"min {aux['min']} · mean {aux['mean']:.2f} · max {aux['max']} "
                                           "(auxiliary loss only)"} if aux else {}),
        "GTs without a positive": str(z["count"]) + "".join(f" · {n} {why}" for why, n in z["by_reason"].items()),
        f"IoU of {iou['of']}": "n/a" if iou["mean"] is None else
        f"mean {iou['mean']:.3f} · min {iou['min']:.3f} · max {iou['max']:.3f}",
        "statistics pass": f"{r['seconds']:.1f} s",
    })
    levels = [lv["name"] for lv in r["levels"]]
    reporter.table("positives and ignored priors per level", ["level", "stride", "positives", "ignored"],
                   [[lv["name"], lv["stride"], r["positives_per_level"][lv["name"]], r["ignored_per_level"][lv["name"]]]
                    for lv in r["levels"]])
    sizes = r["gt_size_vs_level"]["counts"]
    reporter.table("GTs by size (sqrt(w*h), input px) and the level holding most of their positives",
                   ["size", *levels, "none"], [[size, *row.values()] for size, row in sizes.items() if any(row.values())])
    fit = r["prior_fit"]
    reporter.key_values("prior fit", {
        "rule": fit["rule"],
        "GTs that fit": f"{fit['fit']}/{fit['gts']} ({fit['fit_share']:.1%})",
        "candidate priors per GT": f"{fit['candidates_per_gt']:.2f}",
        **({"not fit": " · ".join(f"{n} {why}" for why, n in fit["not_fit_by_reason"].items())}
           if fit["not_fit_by_reason"] else {}),
        "verdict": fit["verdict"],
    })
