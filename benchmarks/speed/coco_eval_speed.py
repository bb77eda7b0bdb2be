"""COCO bbox evaluation time: faster-coco-eval against pycocotools on one large synthetic set, in one run.

    python -m benchmarks.speed.coco_eval_speed [--images 5000] [--rounds 3] [--seed 0]

The set is ``tests/support/synthetic_coco.py``'s (crowd boxes, empty images, categories without ground truth or never
detected, every area range, images with more than 100 detections, tied scores). Each round times both backends
back to back (order alternating) on what ``CocoEvaluator.evaluate`` runs: build the results object (and, for
faster-coco-eval, its own index of the ground truth), then evaluate, accumulate and summarize. Printed: the median
seconds of each, the ratio pycocotools / faster-coco-eval, whether the 12 stats are identical bit for bit, and how
far ``eval['precision']`` differs.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time

import numpy as np
from pycocotools.coco import COCO


from detcli.evaluation.coco_backend import FASTER, PYCOCOTOOLS, backend_version, bbox_cocoeval
from tests.support.synthetic_coco import CATEGORIES, synthetic_coco


def run_once(backend: str, gt: COCO, results: list[dict]) -> tuple[float, object]:
    """Seconds for one full evaluation with ``backend``, and its COCOeval."""
    dets = copy.deepcopy(results)  # both backends write ids and areas into the dicts
    with contextlib.redirect_stdout(io.StringIO()):
        started = time.perf_counter()
        ev = bbox_cocoeval(gt, dets, backend)
        ev.params.imgIds = sorted(gt.getImgIds())
        ev.params.catIds = list(CATEGORIES)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        seconds = time.perf_counter() - started
    return seconds, ev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    dataset, results = synthetic_coco(args.images, args.seed)
    gt = COCO()
    gt.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
    crowd = sum(a["iscrowd"] for a in dataset["annotations"])
    print(f"{len(dataset['images'])} images, {len(dataset['annotations'])} ground-truth boxes ({crowd} crowd), "
          f"{len(results)} detections, {len(CATEGORIES)} categories")
    print(f"backends: {backend_version(PYCOCOTOOLS)}, {backend_version(FASTER)}")

    times: dict[str, list[float]] = {PYCOCOTOOLS: [], FASTER: []}
    evals: dict[str, object] = {}
    for r in range(args.rounds):
        order = (PYCOCOTOOLS, FASTER) if r % 2 == 0 else (FASTER, PYCOCOTOOLS)
        for backend in order:
            seconds, evals[backend] = run_once(backend, gt, results)
            times[backend].append(seconds)
        print(f"round {r + 1}: " + ", ".join(f"{b} {times[b][-1]:.2f} s" for b in (PYCOCOTOOLS, FASTER)))

    slow, fast = (statistics.median(times[b]) for b in (PYCOCOTOOLS, FASTER))
    print(f"median: pycocotools {slow:.2f} s, faster-coco-eval {fast:.2f} s; ratio {slow / fast:.2f}x")
    a, b = np.asarray(evals[PYCOCOTOOLS].stats), np.asarray(evals[FASTER].stats)
    same = a.shape == b.shape == (12,) and a.tolist() == b.tolist()
    print(f"12 stats identical bit for bit: {same}")
    print("stats: " + " ".join(f"{v:.6f}" for v in a))
    if not same:
        print("faster: " + " ".join(f"{v:.6f}" for v in b) + f"  (max |diff| {np.abs(a - b).max():.3g})")
    p_slow, p_fast = evals[PYCOCOTOOLS].eval["precision"], np.asarray(evals[FASTER].eval["precision"])
    differ = int((p_slow != p_fast).sum())
    print(f"eval['precision'] {tuple(p_slow.shape)}: {differ} of {p_slow.size} entries differ, "
          f"max |diff| {np.abs(p_slow - p_fast).max():.3g}")


if __name__ == "__main__":
    main()
