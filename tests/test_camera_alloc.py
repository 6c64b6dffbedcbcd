"""Steady-state reads allocate no new arrays: same buffer every frame, ~0 traced heap growth.

tracemalloc sees numpy's data allocations, so one new 640x480 BGR frame
(921,600 bytes) per read would show in the peak; the control case proves it.
"""

from __future__ import annotations

import gc
import tracemalloc

import cv2
import numpy as np
import pytest

from camera_fakes import write_video
from edge.camera import open_camera

W, H, N = 640, 480, 60
FRAME_BYTES = W * H * 3


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("alloc") / "clip.avi", 80, size=(W, H), fps=30.0)


def _measure(read, n=N):
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(n):
            read()
        gc.collect()
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return current - base, peak - base


CASES = {
    "video": lambda clip: (f"video://{clip}", {}),
    "v4l2-path": lambda clip: ("v4l2:///dev/video0?width=640&height=480",
                               {"capture_factory": lambda d: cv2.VideoCapture(str(clip)), "stall_s": None}),
    "synthetic-noise": lambda clip: (f"synthetic://?width={W}&height={H}", {}),
    "synthetic-face": lambda clip: (f"synthetic://?width={W}&height={H}&pattern=face", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_steady_state_reads_reuse_the_buffer_and_allocate_nothing(clip, case):
    spec, kw = CASES[case](clip)
    with open_camera(spec, **kw) as cam:
        for _ in range(5):  # warm-up: decoder state, lazily built arrays
            cam.read()
        buf = cam.buffer
        same = []

        def read():
            frame = cam.read()
            same.append(frame.image is buf and np.shares_memory(frame.image, buf))

        net, peak = _measure(read)
    assert all(same) and len(same) == N
    # A Frame, a tuple and a few ints exist per read and are freed again: a few hundred bytes.
    assert net < 4096, f"{case}: traced heap grew by {net} B over {N} reads"
    assert peak < 64 * 1024, f"{case}: peak {peak} B over {N} reads (a new frame would be {FRAME_BYTES} B)"


def test_the_measurement_catches_a_per_frame_copy(clip):
    with open_camera(f"video://{clip}") as cam:
        cam.read()
        kept = []

        def read_and_copy():
            kept.append(cam.read().image.copy())  # what a leaky consumer would do
            if len(kept) > 2:
                kept.pop(0)

        net, peak = _measure(read_and_copy, 10)
    assert peak >= 2 * FRAME_BYTES
