#!/usr/bin/env python3
"""Cost of one 1:1 descriptor (dlib face ResNet), float32 and int8, per thread count; chip alignment too.

    nice -n 19 taskset -c 0 .venv/bin/python scripts/bench_match.py      # one core, as the issue asks

Needs the face-match build (edge models build --with face-match). Prints a table; writes nothing.
Run it on the board that will be deployed: these figures are this machine's.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np


def _time(fn, n: int, warmup: int) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1000)
    return statistics.median(ts), sorted(ts)[int(0.9 * (len(ts) - 1))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", default="1")
    args = ap.parse_args()
    from edge.match.align import ChipExtractor
    from edge.match.descriptor import TFLiteDescriptor
    from edge.tflite import interpreter_backend

    rng = np.random.default_rng(0)
    chip = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pts = np.array([[380, 200], [345, 202], [260, 200], [295, 202], [320, 270]], np.float64)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus allowed {cpus}; backend "
          f"{interpreter_backend()}")
    print(f"{'stage':<34} {'threads':>7} {'median ms':>10} {'p90 ms':>8}")
    ex = ChipExtractor()
    med, p90 = _time(lambda: ex.extract(frame, pts), args.runs, args.warmup)
    print(f"{'chip (5 points -> 150x150, 640x480)':<34} {1:>7} {med:>10.2f} {p90:>8.2f}")
    for variant in ("float32", "int8"):
        for threads in (int(t) for t in args.threads.split(",")):
            with TFLiteDescriptor.from_registry(variant, threads=threads) as d:
                med, p90 = _time(lambda: d.describe(chip), args.runs, args.warmup)
            print(f"{'descriptor ' + variant:<34} {threads:>7} {med:>10.2f} {p90:>8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
