"""``detcli eval``: COCO bbox evaluation of a checkpoint."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detcli.console import Reporter
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
    exact: bool = False  # the network as loaded (detcli.inference.paths.inference_model), not the optimised model


def eval_command(req: EvalRequest) -> dict:
    """Evaluate (:meth:`detcli.api.model.Model.evaluate`, step by step to print as it goes), print the tables and
    write ``metrics.json``, ``predictions.json`` and the plots into a new folder under ``req.project``; returns
    what ``metrics.json`` holds."""
    from detcli.api.model import Model
    from detcli.engine.run_dir import new_run_dir
    from detcli.evaluation.duplicates import duplicate_stats
    from detcli.evaluation.evaluator import per_class_table, stats_table
    from detcli.inference.device import select_device
    from detcli.inference.loading import load_runnable
    from detcli.inference.paths import INFERENCE_PATHS
    from detcli.models.base import Detector
    from detcli.models.summary import model_summary
    from detcli.plots.validation import save_validation_plots

    reporter = Reporter()
    device = select_device(req.device)
    reporter.header("eval", str(device))
    loaded = load_runnable(req.weights, req.preset, req.overrides, req.imgsz, device, reporter, req.exact)
    model = Model(loaded, device, exact=req.exact, reporter=reporter)
    spec = model.spec
    data_cfg = model.eval_data(req.files if req.files is not None else req.data)
    size = spec.input_size
    if isinstance(model.predictor, Detector):  # an ONNX graph has no PyTorch modules to count
        model_summary(reporter, spec.preset, model.predictor, size)
    dataset = model.eval_dataset(data_cfg)
    out = new_run_dir(req.project, req.name)  # before the evaluation: an unwritable --project fails at once
    cfg = model.postprocess(req.conf, req.iou, req.max_det)
    path = model.inference_path  # after the summary: it counts the model as trained
    reporter.info(f"inference path: {path} ({INFERENCE_PATHS[path]})")
    result = model.evaluate_dataset(dataset, batch=req.batch, workers=req.workers, cfg=cfg,
                                    confusion_conf=req.confusion_conf, keep_detections=True)
    reporter.print(stats_table(result))
    reporter.print(per_class_table(result))
    duplicates = duplicate_stats(result.detections)  # what NMS would still remove (DeFCN's no-NMS claim)
    reporter.info(duplicates.describe())
    payload = {
        "weights": str(spec.weights),
        "preset": spec.preset.name,
        "annotations": str(data_cfg.val.source),
        "score_thr": cfg.score_thr, "iou_thr": cfg.iou_thr, "max_det": cfg.max_det,
        "nms": cfg.nms,
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
