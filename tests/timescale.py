"""How long tests wait for something that should happen, scaled for slow machines.

EDGE_TEST_TIME_SCALE (default 1) multiplies the waits of the end-to-end tests (processes on pty pairs,
signals, sd_notify). scripts/test-aarch64.sh sets it for the run under qemu-user emulation, which is
10-20x slower than native: the waits stretch by one named factor instead of being loosened everywhere.
Waits that assert something does NOT happen within a time are not scaled (a longer wait only makes them
stricter), nor are the protocol's own timings (heartbeats): the product's timing is what it is.
"""

from __future__ import annotations

import os

_RAW = os.environ.get("EDGE_TEST_TIME_SCALE", "1")
try:
    SCALE = float(_RAW)
except ValueError as err:
    raise ValueError(f"EDGE_TEST_TIME_SCALE={_RAW!r}: expected a number >= 1, e.g. 10") from err
if not SCALE >= 1:
    raise ValueError(f"EDGE_TEST_TIME_SCALE={_RAW!r}: expected a number >= 1, e.g. 10")


def scaled(seconds: float) -> float:
    """`seconds` stretched by EDGE_TEST_TIME_SCALE."""
    return seconds * SCALE
