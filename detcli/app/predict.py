"""``detcli predict``: detections on images, folders, globs and videos."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from detcli.app.common import INFERENCE_PATHS, inference_batch, inference_model, inference_path, load_runnable, select_device
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
    exact: bool = False  # the network as loaded (detcli.app.common.inference_model), not the optimised model
    overrides: list[str] = field(default_factory=list)


def predict_command(req: PredictRequest) -> Path:
    """Detections of everything ``req.source`` names, written to a new (or, with ``exist_ok``, the named)
    folder under ``req.project``; returns it. The source and the weights file are checked before torch and
    OpenCV are imported."""
    paths = check_source(req.source)
    check_weights(req.weights)
    from detcli.data.build import build_transform, input_size
    from detcli.data.collate import collate
    from detcli.engine.run_dir import new_run_dir
    from detcli.predict import PredictionWriter, iter_sources, predict_batches
    from detcli.sources import VIDEO_EXTENSIONS

    reporter = Reporter()
    device = select_device(req.device)
    reporter.header("predict", str(device))
    loaded, imgsz = load_runnable(req.weights, req.preset, req.overrides, req.imgsz, device, reporter, req.exact)
    preset = loaded.preset
    size = input_size(preset, imgsz)
    reporter.info(
        f"preset {preset.name} · {len(loaded.class_names)} classes · input {size[0]}×{size[1]} "
        f"· conf {req.conf}"
    )
    transform = build_transform(preset, train=False, imgsz=imgsz)
    out = new_run_dir(req.project, req.name, exist_ok=req.exist_ok)
    model = inference_model(loaded.model, reporter, req.exact)
    path = inference_path(model)
    reporter.info(f"inference path: {path} ({INFERENCE_PATHS[path]})")
    iou = req.iou if req.iou is not None else preset.test.iou_thr
    max_det = req.max_det if req.max_det is not None else preset.test.max_det
    frames = iter_sources(req.source, warn=reporter.warn)
    n_images = n_boxes = 0
    with PredictionWriter(out, loaded.class_names, save_images=req.save, cat_ids=loaded.cat_ids) as writer:
        results = predict_batches(
            model, frames, transform, inference_batch(req.batch, req.exact), device, req.conf, iou, max_det,
            collate=lambda s: collate(s, size_divisor=preset.input.size_divisor),
        )
        total = len(paths) if all(not p.lower().endswith(VIDEO_EXTENSIONS) for p in paths) else None
        for frame, det in reporter.progress(results, total=total, description="predict"):
            writer.write(frame, det)
            n_images += 1
            n_boxes += len(det.scores)
    reporter.info(f"{n_images} image(s)/frame(s), {n_boxes} detection(s). Results saved to {out}")
    return out

