"""Seconds per NanoDet-Plus demo iteration (real DataLoader + training step) for thread / worker / OpenMP settings.

The demo trains on CPU with batch 8 and one DataLoader worker; its data pipeline costs a few percent of a
step, so on a machine with few cores the question is how the worker (and any other process) shares the cores
with the training process' OpenMP threads. A setting is ``WORKERSxTHREADS[:passive]``: DataLoader workers,
``torch.set_num_threads``, and ``OMP_WAIT_POLICY=PASSIVE`` (idle OpenMP threads sleep at once instead of
spinning; read when the OpenMP runtime loads, hence one fresh process per measurement). Each process runs
``--iters`` iterations of the real loop (``build_dataloader`` as ``detcli train`` builds it, forward + losses +
backward + grad clip + AdamW + EMA) after one warm-up iteration that also pays the worker start, and reports
the median wall and CPU seconds per iteration. Settings are interleaved and repeated ``--rounds`` times, so a
change in the machine's load hits them alike; the ratios are to the first setting.

    python -m benchmarks.speed.demo_threads_workers [--iters 4] [--rounds 2] [--settings 1x2,0x2,1x2:passive,1x1]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time


def child(workers: int, threads: int, iters: int) -> dict:
    """Runs in the measured process: ``iters`` timed iterations of the demo loop."""
    import torch

    from benchmarks.speed.demo_epoch_profile import build
    from detcli.data.collate import collate
    from detcli.data.loader import build_dataloader
    from detcli.engine.ema import ModelEMA
    from detcli.engine.optim import build_optimizer

    _, cfg, train_ds, _, model = build(threads)
    model.train()
    optimizer, _, _ = build_optimizer(model, cfg.optimizer, cfg.batch)
    ema = ModelEMA(model, cfg.ema.decay, cfg.ema.gamma)
    loader = build_dataloader(train_ds, cfg.batch, workers, shuffle=True, drop_last=True, seed=0,
                              distributed=False, collate_fn=functools.partial(collate, size_divisor=32))
    wall, cpu = [], []
    start, start_cpu = time.perf_counter(), time.process_time()
    for i, batch in enumerate(loader):
        images = batch.images.contiguous(memory_format=torch.channels_last)
        optimizer.zero_grad(set_to_none=True)
        losses = model.loss(images, batch.targets, batch.metas, 0)
        total = sum(losses.values())
        torch.stack([v.detach() for v in losses.values()]).tolist()
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        ema.update(model)
        now, now_cpu = time.perf_counter(), time.process_time()
        if i > 0:  # the first one pays the worker start
            wall.append(now - start)
            cpu.append(now_cpu - start_cpu)
        start, start_cpu = now, now_cpu
        if i == iters:
            break
    return {"wall": statistics.median(wall), "cpu": statistics.median(cpu), "load": os.getloadavg()[0]}


def parse(setting: str) -> tuple[int, int, bool]:
    body, _, policy = setting.partition(":")
    workers, threads = (int(v) for v in body.split("x"))
    return workers, threads, policy == "passive"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iters", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--settings", default="1x2,0x2,1x2:passive,1x1",
                        help="comma-separated WORKERSxTHREADS[:passive]")
    parser.add_argument("--child", nargs=2, type=int, metavar=("WORKERS", "THREADS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child, args.iters)))
        return
    settings = args.settings.split(",")
    results: dict[str, list[dict]] = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in settings:
            workers, threads, passive = parse(s)
            env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
            env.pop("OMP_WAIT_POLICY", None)
            if passive:
                env["OMP_WAIT_POLICY"] = "PASSIVE"
            out = subprocess.run([sys.executable, "-m", __spec__.name,
                                  "--iters", str(args.iters), "--child", str(workers),
                                  str(threads)], env=env, capture_output=True, text=True, check=True)
            res = json.loads(out.stdout.strip().splitlines()[-1])
            results[s].append(res)
            print(f"round {r + 1} {s:12s}: {res['wall']:6.2f} s/iter wall, {res['cpu']:6.2f} s/iter CPU "
                  f"(load {res['load']:.2f})", flush=True)
    ref = statistics.median(x["wall"] for x in results[settings[0]])
    print(f"\n{os.cpu_count()} CPUs · medians over {args.rounds} rounds of {args.iters} iterations · "
          f"setting = workers x threads[:OMP_WAIT_POLICY=PASSIVE]")
    for s in settings:
        wall = statistics.median(x["wall"] for x in results[s])
        cpu = statistics.median(x["cpu"] for x in results[s])
        print(f"  {s:12s} {wall:6.2f} s/iter  ×{wall / ref:5.2f} of {settings[0]}  (CPU {cpu:5.2f} s/iter)")


if __name__ == "__main__":
    main()
