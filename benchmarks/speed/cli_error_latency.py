"""How long ``detcli`` takes to report bad input, against the cost of the imports it now avoids.

    python -m benchmarks.speed.cli_error_latency [--runs 5]

Each error case (a misspelt preset, a missing ``--data``, source or checkpoint) runs in ``--runs`` fresh
interpreters, ``python -m detcli ARGS`` in an empty temporary folder, and the median wall time is printed beside
the reference measured in the same run: ``python -c "import torch, torchvision, cv2"``, what every such error cost
before the checks moved ahead of the imports (ratio = case / reference). The target: well under 2 s on an idle
machine. Every case must exit with status 2; one that does not is reported and makes the script fail.
``tests/e2e/test_cli_late_imports.py`` holds the same cases to "torch, torchvision and cv2 are never imported".
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CASES = [
    ["train", "--preset", "nanodet-plsu-m"],
    ["train", "-p", "nanodet-plus-m", "--data", "missing.yaml"],
    ["predict", "missing.jpg"],
    ["eval", "--weights", "missing.pt"],
    ["export", "--weights", "missing.pt"],
    ["inspect-anchors", "-p", "retinanet-r18-fnp"],
]
REFERENCE = ["-c", "import torch, torchvision, cv2"]


def wall_time(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, int]:
    """Seconds from start to exit of ``python ARGV``, and its exit status."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True, check=False)
    return time.perf_counter() - start, done.returncode


def median_time(argv: list[str], runs: int, cwd: Path, env: dict[str, str]) -> tuple[float, set[int]]:
    times, codes = [], set()
    for _ in range(runs):
        seconds, code = wall_time(argv, cwd, env)
        times.append(seconds)
        codes.add(code)
    return statistics.median(times), codes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="fresh interpreters per case (the median is shown)")
    args = parser.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="detcli-latency-") as tmp:
        cwd = Path(tmp)
        env = {**os.environ, "DETCLI_HOME": str(cwd / "home")}
        wall_time(REFERENCE, cwd, env)  # warm the file cache once for both sides
        reference, _ = median_time(REFERENCE, args.runs, cwd, env)
        print(f"reference: python -c 'import torch, torchvision, cv2'   {reference:6.2f} s (median of {args.runs})")
        print(f"{'case':<55} {'median s':>9} {'/ reference':>12}")
        for case in CASES:
            seconds, codes = median_time(["-m", "detcli", *case], args.runs, cwd, env)
            flag = "" if codes == {2} else f"   exit status {sorted(codes)}, expected 2"
            if flag:
                failed.append(case)
            print(f"{'detcli ' + ' '.join(case):<55} {seconds:9.2f} {seconds / reference:12.2f}{flag}")
    if failed:
        raise SystemExit(f"{len(failed)} case(s) did not exit with status 2")


if __name__ == "__main__":
    main()
