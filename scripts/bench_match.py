#!/usr/bin/env python3
"""Cost of one 1:1 descriptor, float32 and int8 (same as ``edge bench --match``):

    nice -n 19 taskset -c 0 .venv/bin/python scripts/bench_match.py [--runs 50] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import sys

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--threads", default="1")
    a = ap.parse_args()
    from edge.match.bench import run

    sys.exit(run(a.runs, a.warmup, a.threads))
