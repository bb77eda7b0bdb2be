"""Where the time of a NanoDet-Plus demo epoch goes, as shares (``detcli train --preset nanodet-plus-m``).

Builds what the demo run builds (the built-in demo data, the preset's ``demo`` schedule, the model on
channels_last, AdamW, EMA) and times, in this one process:

* data: ``CocoDetection.__getitem__`` + collate of a batch (what the DataLoader worker does), split into JPEG
  decode, the warp, the colour jitter and the rest;
* the training step, phase by phase: backbone + main neck + main head, the AGM, priors + DSLA, the losses,
  the host sync of the loss terms, backward, grad clipping, the AdamW step, the EMA update;
* validation: predict over the 128 val images (``evaluate``'s loop) and COCOeval;
* the end of an epoch: the finite-weights check and the ``last.pt`` / ``best.pt`` writes.

Then it prints the estimated demo epoch and run, each part's share, and the epoch with the data loaded
inline (``workers=0``: data + step add up) and with one worker overlapping perfectly (the max of the two).
Figures are medians over ``--iters`` iterations after ``--warmup``; absolute times depend on the machine's load,
shares much less.

    OMP_NUM_THREADS=<n> python -m benchmarks.speed.demo_epoch_profile [--iters 12] [--threads N]
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path

import torch


from detcli.checkpoints.io import save_checkpoint
from detcli.config.loader import load_preset
from detcli.data.build import build_dataset
from detcli.data.collate import collate
from detcli.data.dataset_config import resolve_dataset
from detcli.engine.ema import ModelEMA
from detcli.engine.hooks.non_finite import non_finite
from detcli.engine.optim import build_optimizer
from detcli.evaluation.evaluate import predict_dataset
from detcli.evaluation.evaluator import CocoEvaluator
from detcli.losses.nanodet_plus_loss import nanodet_plus_loss
from detcli.models import build_model


class Clock:
    """Accumulates wall time per named phase, one list entry per iteration."""

    def __init__(self) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self._current: dict[str, float] = defaultdict(float)

    @contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        yield
        self._current[name] += time.perf_counter() - start

    def next_iteration(self) -> None:
        for k, v in self._current.items():
            self.times[k].append(v)
        self._current = defaultdict(float)

    def medians(self) -> dict[str, float]:
        return {k: statistics.median(v) for k, v in self.times.items()}


def build(threads: int | None):
    if threads:
        torch.set_num_threads(threads)
    preset, _ = load_preset("nanodet-plus-m", [])
    cfg = preset.demo_train()
    data = resolve_dataset("demo")
    train_ds = build_dataset(preset, data.train, train=True, epochs=cfg.epochs)
    val_ds = build_dataset(preset, data.val, train=False)
    torch.manual_seed(0)
    model = build_model(preset, train_ds.num_classes, pretrained=True).to(memory_format=torch.channels_last)
    return preset, cfg, train_ds, val_ds, model


def time_data(train_ds, cfg, iters: int, clock: Clock) -> list:
    """Batches of the training set loaded in this process; phases of ``__getitem__`` timed by patching the
    transform's helpers (the pipeline itself is unchanged)."""
    import detcli.data.coco as coco_mod
    import detcli.data.transforms.nanodet as nano_mod

    read, jitter, warp = coco_mod.read_image_bgr, nano_mod.color_jitter, nano_mod.cv2.warpPerspective

    def timed(name, fn):
        def wrapper(*a, **k):
            with clock(name):
                return fn(*a, **k)
        return wrapper

    coco_mod.read_image_bgr = timed("data: JPEG decode", read)
    nano_mod.color_jitter = timed("data: colour jitter", jitter)
    cv2_warp = nano_mod.cv2.warpPerspective
    nano_mod.cv2.warpPerspective = timed("data: warp", warp)
    batches = []
    order = torch.randperm(len(train_ds), generator=torch.Generator().manual_seed(0)).tolist()
    try:
        for i in range(iters):
            idx = order[i * cfg.batch:(i + 1) * cfg.batch]
            with clock("data: whole batch"):
                batches.append(collate([train_ds[j] for j in idx], size_divisor=32))
            clock.next_iteration()
    finally:
        coco_mod.read_image_bgr, nano_mod.color_jitter = read, jitter
        nano_mod.cv2.warpPerspective = cv2_warp
    return batches


def time_steps(model, cfg, batches, warmup: int, clock: Clock) -> ModelEMA:
    optimizer, _, _ = build_optimizer(model, cfg.optimizer, cfg.batch)
    ema = ModelEMA(model, cfg.ema.decay, cfg.ema.gamma)
    model.train()
    for i, batch in enumerate(batches):
        images = batch.images.contiguous(memory_format=torch.channels_last)
        step_clock = clock if i >= warmup else Clock()
        with step_clock("step: whole"):
            optimizer.zero_grad(set_to_none=True)
            with step_clock("step: forward main (backbone, neck, head)"):
                feats = model.backbone(images)
                fpn_feats = model.fpn(feats)
                main_out = model._split(model.head(fpn_feats))
            with step_clock("step: forward AGM"):
                aux_out = model._split(model.agm_forward(feats, fpn_feats, detach=0 >= model.detach_epoch))
            with step_clock("step: priors + DSLA assign"):
                priors = model.priors(tuple(images.shape[-2:]), images.device)
                assignment = model.assign(aux_out, priors, batch.targets)
            with step_clock("step: losses"):
                losses = nanodet_plus_loss(main_out, aux_out, priors.points, assignment, batch.targets,
                                           model.reg_max, **{f"{k}_weight": v for k, v in model.loss_weights.items()})
                total = sum(losses.values())
            with step_clock("step: loss sync (.tolist)"):
                torch.stack([v.detach() for v in losses.values()] + [total.detach()]).tolist()
            with step_clock("step: backward"):
                total.backward()
            with step_clock("step: grad clip"):
                torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.grad is not None], cfg.grad_clip)
            with step_clock("step: AdamW step"):
                optimizer.step()
            with step_clock("step: EMA update"):
                ema.update(model)
        step_clock.next_iteration()
    return ema


def time_validation(module, val_ds, preset, clock: Clock) -> None:
    from torch.utils.data import DataLoader

    from detcli.console import Reporter

    loader = DataLoader(val_ds, batch_size=8, shuffle=False, num_workers=0,
                        collate_fn=lambda s: collate(s, size_divisor=32))
    evaluator = CocoEvaluator(val_ds.coco, val_ds.cat_ids, val_ds.class_names)
    with clock("val: predict 128 images (load + forward + NMS)"):
        predict_dataset(module, loader, torch.device("cpu"), None, evaluator, Reporter(silent=True))
    with clock("val: COCOeval"):
        evaluator.evaluate()
    clock.next_iteration()


def time_epoch_end(model, ema, clock: Clock) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        with clock("epoch end: finite-weights check"):
            non_finite(model.state_dict())
            non_finite(ema.module.state_dict())
        with clock("epoch end: last.pt + best.pt"):
            save_checkpoint(Path(tmp) / "last.pt", {"model": model.state_dict(), "ema": ema.state_dict()})
            save_checkpoint(Path(tmp) / "best.pt", {"model": ema.module.state_dict()})
        clock.next_iteration()


def report(data: dict, step: dict, val: dict, end: dict, cfg, n_train: int) -> None:
    iters = n_train // cfg.batch
    val_runs = len({e for e in range(cfg.epochs) if (e + 1) % cfg.val_interval == 0 or e + 1 == cfg.epochs})
    per_epoch = {
        "data (per epoch)": data["data: whole batch"] * iters,
        "step (per epoch)": step["step: whole"] * iters,
        "validation (averaged over epochs)": sum(val.values()) * val_runs / cfg.epochs,
        "epoch end": sum(end.values()),
    }
    inline = sum(per_epoch.values())
    print(f"\nthreads {torch.get_num_threads()} · {iters} iterations of batch {cfg.batch} per epoch · "
          f"{val_runs} validations in {cfg.epochs} epochs")
    print(f"epoch, data loaded inline (workers=0): {inline:7.1f} s → demo run ≈ {inline * cfg.epochs / 60:5.1f} min")
    overlap = inline - min(per_epoch["data (per epoch)"], per_epoch["step (per epoch)"])
    print(f"epoch, one worker overlapping perfectly: {overlap:7.1f} s → demo run ≈ {overlap * cfg.epochs / 60:5.1f} min")
    print("\nshare of the inline epoch:")
    for k, v in per_epoch.items():
        print(f"  {k:48s} {v:7.1f} s  {100 * v / inline:5.1f} %")
    print("\ninside a batch of data (per batch):")
    for k, v in data.items():
        print(f"  {k:48s} {1e3 * v:7.1f} ms  {100 * v / data['data: whole batch']:5.1f} %")
    print("\ninside a training step:")
    for k, v in step.items():
        print(f"  {k:48s} {1e3 * v:7.1f} ms  {100 * v / step['step: whole']:5.1f} %")
    print("\nvalidation and epoch end (once):")
    for k, v in {**val, **end}.items():
        print(f"  {k:48s} {v:7.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=12, help="timed training iterations")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--no-val", action="store_true")
    args = parser.parse_args()
    preset, cfg, train_ds, val_ds, model = build(args.threads)
    data_clock, step_clock, val_clock, end_clock = Clock(), Clock(), Clock(), Clock()
    batches = time_data(train_ds, cfg, args.iters + args.warmup, data_clock)
    ema = time_steps(model, cfg, batches, args.warmup, step_clock)
    if not args.no_val:
        time_validation(ema.module, val_ds, preset, val_clock)
    time_epoch_end(model, ema, end_clock)
    report(data_clock.medians(), step_clock.medians(), val_clock.medians(), end_clock.medians(), cfg, len(train_ds))
    print(f"\nload: {os.getloadavg()[0]:.2f} (1 min) on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
