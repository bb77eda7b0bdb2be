"""``detcli eval``: COCO bbox evaluation of a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detcli.app.common import (INFERENCE_PATHS, inference_batch, inference_model, inference_path, load_runnable, model_summary,
                               select_device)
from detcli.console import Reporter
from detcli.errors import DetcliError
from detcli.models.base import Detector
from detcli.fileio import atomic_write_json


@dataclass
class EvalRequest:
    weights: Path | None
    data: str | None
    preset: str | None
    batch: int = 16
    imgsz: int | None = None
    device: str | None = None
    workers: int = 2
    conf: float | None = None
    iou: float | None = None
    max_det: int | None = None
    project: Path = Path("runs/eval")
    name: str = "eval"
    overrides: list[str] = field(default_factory=list)
    files: object | None = None  # a DatasetConfig from --val-ann/--val-images
    confusion_conf: float = 0.25  # detcli.evaluation.confusion.CONFUSION_CONF
    exact: bool = False  # the network as loaded (detcli.app.common.inference_model), not the optimised model


def eval_command(req: EvalRequest) -> dict:
    from detcli.data.build import build_dataset, input_size
    from detcli.data.collate import collate
    from detcli.data.dataset_config import resolve_dataset
    from detcli.data.recorded import recorded_dataset
    from detcli.data.loader import build_dataloader, cap_workers
    from detcli.evaluation.duplicates import duplicate_stats
    from detcli.evaluation.evaluate import evaluate
    from detcli.evaluation.evaluator import per_class_table, stats_table
    from detcli.engine.run_dir import new_run_dir
    from detcli.plots.validation import save_validation_plots

    reporter = Reporter()
    device = select_device(req.device)
    reporter.header("eval", str(device))
    loaded, imgsz = load_runnable(req.weights, req.preset, req.overrides, req.imgsz, device, reporter, req.exact)
    preset = loaded.preset
    if req.files is not None:
        data_cfg = req.files
    elif req.data is not None:
        data_cfg = resolve_dataset(req.data)
    elif loaded.dataset is not None:
        data_cfg = recorded_dataset(loaded.dataset.get("config"), f"checkpoint {loaded.weights}")
        reporter.info(f"evaluating on the dataset the checkpoint was trained on: {data_cfg.val.source}")
    else:
        raise DetcliError(f"{loaded.weights} records no dataset; give --data")
    if data_cfg.val.note:
        reporter.info(data_cfg.val.note)
    size = input_size(preset, imgsz)
    if isinstance(loaded.model, Detector):  # an ONNX graph has no PyTorch modules to count
        model_summary(reporter, preset, loaded.model, size)
    dataset = build_dataset(preset, data_cfg.val, train=False, imgsz=imgsz)
    for line in dataset.summary().problems():  # e.g. missing image files: fewer images are scored
        reporter.warn(f"val: {line}")
    if dataset.class_names != loaded.class_names:
        raise DetcliError(
            f"{data_cfg.val.source}: classes {dataset.class_names} differ from the checkpoint's "
            f"{loaded.class_names}"
        )
    out = new_run_dir(req.project, req.name)  # before the evaluation: an unwritable --project fails at once
    loader = build_dataloader(
        dataset, batch_size=inference_batch(req.batch, req.exact), workers=cap_workers(req.workers), shuffle=False,
        drop_last=False, seed=0,
        distributed=False, collate_fn=lambda s: collate(s, size_divisor=preset.input.size_divisor),
    )
    test = preset.test.model_copy(
        update={k: v for k, v in {"score_thr": req.conf, "iou_thr": req.iou, "max_det": req.max_det}.items()
                if v is not None}
    )
    model = inference_model(loaded.model, reporter, req.exact)  # after the summary: it counts the model as trained
    path = inference_path(model)
    reporter.info(f"inference path: {path} ({INFERENCE_PATHS[path]})")
    result = evaluate(model, loader, dataset, device, test, reporter, keep_detections=True,
                      confusion_conf=req.confusion_conf)
    reporter.print(stats_table(result))
    reporter.print(per_class_table(result))
    duplicates = duplicate_stats(result.detections)  # what NMS would still remove (DeFCN's no-NMS claim)
    reporter.info(duplicates.describe())
    payload = {
        "weights": str(loaded.weights),
        "preset": preset.name,
        "annotations": str(data_cfg.val.source),
        "score_thr": test.score_thr, "iou_thr": test.iou_thr, "max_det": test.max_det,
        "nms": test.nms,
        "inference_path": path,  # INFERENCE_PATHS: "exact" reproduces the official numbers
        "confusion_conf": req.confusion_conf,
        "imgsz": list(size),
        **result.to_dict(),
        "duplicates": duplicates.to_dict(),
    }
    atomic_write_json(out / "metrics.json", payload)
    atomic_write_json(out / "predictions.json", result.detections, indent=None, allow_nan=False)  # COCO results
    plots = save_validation_plots(result.curves, result.confusion, out)
    reporter.info(f"Results saved to {out}: metrics.json, predictions.json, " + ", ".join(p.name for p in plots))
    return payload

