"""Buffers are zeroed in place (same memory), whatever their type and layout."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest

from edge.service.wipe import is_zeroed, wipe, wipe_interpreter


def test_numpy_arrays_zeroed_in_place():
    frame = np.full((48, 64, 3), 200, np.uint8)
    crop = np.random.default_rng(0).random((1, 80, 80, 3), dtype=np.float32)
    address = frame.__array_interface__["data"][0]
    n = wipe(frame, None, crop)
    assert n == frame.nbytes + crop.nbytes
    assert is_zeroed(frame, crop)
    assert frame.__array_interface__["data"][0] == address  # same buffer, not a new one


def test_non_contiguous_view_and_readonly_view_zero_the_owner():
    owner = np.full((10, 10), 7, np.int16)
    wipe(owner[::2, ::3])
    assert not np.any(owner[::2, ::3]) and np.all(owner[1::2] == 7)
    ro = owner.view()
    ro.flags.writeable = False
    wipe(ro)
    assert is_zeroed(owner)


def test_bytearray_memoryview_and_containers():
    raw = bytearray(b"\xff" * 1000)
    mv_src = bytearray(b"\x01" * 64)
    history = deque([np.ones(4), np.ones(2)])
    scores = [0.9, 0.8]
    named = {"crop": np.ones((2, 2)), "none": None}
    keep = list(history)
    assert wipe(raw, memoryview(mv_src), history, scores, named) == 1000 + 64 + 32 + 16 + 32
    assert is_zeroed(raw, mv_src, *keep, named.get("crop"))
    assert len(history) == 0 and scores == [] and named == {}


def test_unknown_types_refused():
    with pytest.raises(TypeError):
        wipe("a string holds nothing we could zero")
    with pytest.raises(TypeError):
        wipe(object())


def test_readonly_memoryview_reported_not_raised(caplog):
    assert wipe(memoryview(b"immutable")) == 0
    assert "read-only" in caplog.text


def test_wipe_interpreter_zeroes_inputs_and_outputs():
    class FakeInterpreter:
        def __init__(self):
            self.bufs = {0: np.full((1, 4), 3.0, np.float32), 1: np.full((1, 2), 9, np.uint8)}

        def get_input_details(self):
            return [{"index": 0, "name": "in"}]

        def get_output_details(self):
            return [{"index": 1, "name": "out"}]

        def tensor(self, i):
            return lambda: self.bufs[i]

    it = FakeInterpreter()
    assert wipe_interpreter(it) == 16 + 2
    assert is_zeroed(*it.bufs.values())
