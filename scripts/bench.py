#!/usr/bin/env python3
"""Benchmark entry point; the same as `edge bench` (see edge/bench.py for what it measures)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge.bench import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
