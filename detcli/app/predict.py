"""``detcli predict``: detections on images, folders, globs and videos."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detcli.app.preflight import check_source, check_weights
from detcli.console import Reporter


@dataclass
class PredictRequest:
    source: str
    weights: Path | None = None
    preset: str | None = None
    conf: float = 0.35
    iou: float | None = None
    max_det: int | None = None
    imgsz: int | None = None
    batch: int = 8
    device: str | None = None
    project: Path = Path("runs/predict")
    name: str = "predict"
    exist_ok: bool = False  # write into project/name as it is, instead of numbering predict2, predict3, …
    save: bool = True
    exact: bool = False  # the network as loaded (detcli.inference.paths.inference_model), not the optimised model
    overrides: list[str] = field(default_factory=list)


def predict_command(req: PredictRequest) -> Path:
    """Detections of everything ``req.source`` names (:meth:`detcli.api.model.Model.predict`, streamed), written
    to a new (or, with ``exist_ok``, the named) folder under ``req.project``; returns it. The source and the
    weights file are checked before torch and OpenCV are imported."""
    paths = check_source(req.source)
    check_weights(req.weights)
    from detcli.api.model import Model
    from detcli.engine.run_dir import new_run_dir
    from detcli.inference.device import select_device
    from detcli.inference.loading import load_runnable
    from detcli.inference.paths import INFERENCE_PATHS
    from detcli.inference.writer import PredictionWriter
    from detcli.sources import VIDEO_EXTENSIONS

    reporter = Reporter()
    device = select_device(req.device)
    reporter.header("predict", str(device))
    loaded = load_runnable(req.weights, req.preset, req.overrides, req.imgsz, device, reporter, req.exact)
    model = Model(loaded, device, exact=req.exact, reporter=reporter)
    spec = model.spec
    size = spec.input_size
    reporter.info(f"preset {spec.preset.name} · {spec.num_classes} classes · input {size[0]}×{size[1]} "
                  f"· conf {req.conf}")
    out = new_run_dir(req.project, req.name, exist_ok=req.exist_ok)
    path = model.inference_path  # the optimised model is made here: a failed optimisation is reported before the run
    reporter.info(f"inference path: {path} ({INFERENCE_PATHS[path]})")
    results = model.predict(req.source, conf=req.conf, iou=req.iou, max_det=req.max_det, batch=req.batch,
                            stream=True)
    n_images = n_boxes = 0
    with PredictionWriter(out, spec.class_names, save_images=req.save, cat_ids=spec.cat_ids) as writer:
        total = len(paths) if all(not p.lower().endswith(VIDEO_EXTENSIONS) for p in paths) else None
        for result in reporter.progress(results, total=total, description="predict"):
            writer.write(result.source, result.detections)
            n_images += 1
            n_boxes += len(result)
    reporter.info(f"{n_images} image(s)/frame(s), {n_boxes} detection(s). Results saved to {out}")
    return out
