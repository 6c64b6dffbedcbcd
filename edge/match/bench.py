"""Cost of one 1:1 descriptor (dlib face ResNet), float32 and int8, per thread count, and of the chip.

``edge bench --match`` (or ``scripts/bench_match.py``); pin it to one core with ``taskset -c 0`` for the
one-core figure. Needs the face-match build (edge models build --with face-match). Prints; writes nothing.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
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


def run(runs: int = 50, warmup: int = 5, threads: str = "1", variants: str = "float32,int8", out=sys.stdout) -> int:
    """Print the cost table; the descriptor runs on a synthetic chip (its cost does not depend on pixels)."""
    from edge.match.align import ChipExtractor
    from edge.match.descriptor import TFLiteDescriptor
    from edge.tflite import interpreter_backend

    rng = np.random.default_rng(0)
    chip = rng.integers(0, 256, (150, 150, 3), dtype=np.uint8)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    pts = np.array([[380, 200], [345, 202], [260, 200], [295, 202], [320, 270]], np.float64)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    print(f"machine: {platform.machine()} {platform.processor() or ''} cpus allowed {cpus}; backend "
          f"{interpreter_backend()}", file=out)
    print(f"{'stage':<34} {'threads':>7} {'median ms':>10} {'p90 ms':>8}", file=out)
    ex = ChipExtractor()
    med, p90 = _time(lambda: ex.extract(frame, pts), runs, warmup)
    print(f"{'chip (5 points -> 150x150, 640x480)':<34} {1:>7} {med:>10.2f} {p90:>8.2f}", file=out)
    for variant in variants.split(","):
        for n in (int(t) for t in str(threads).split(",")):
            with TFLiteDescriptor.from_registry(variant, threads=n) as d:
                med, p90 = _time(lambda: d.describe(chip), runs, warmup)
            print(f"{'descriptor ' + variant:<34} {n:>7} {med:>10.2f} {p90:>8.2f}", file=out)
    return 0


