"""synthetic://: determinism, patterns, simulated loss (fail_after, freeze_after), wiping."""

from __future__ import annotations

import numpy as np
import pytest

from camera_fakes import write_image
from edge.camera import open_camera
from edge.errors import CameraError, CameraLost, EndOfStream


def _digest(spec: str, n: int) -> list[int]:
    with open_camera(spec) as cam:
        return [hash(cam.read().image.tobytes()) for _ in range(n)]


def test_noise_is_deterministic_and_changes_per_frame():
    a = _digest("synthetic://?width=64&height=48&seed=7", 4)
    b = _digest("synthetic://?width=64&height=48&seed=7", 4)
    c = _digest("synthetic://?width=64&height=48&seed=8", 4)
    assert a == b and a != c and len(set(a)) == 4


def test_frames_and_timestamps_from_index():
    with open_camera("synthetic://?width=32&height=16&fps=20&pattern=black&frames=3") as cam:
        assert cam.finite
        frames = [cam.read() for _ in range(3)]
        with pytest.raises(EndOfStream):
            cam.read()
    assert [(f.index, f.timestamp_ns) for f in frames] == [(0, 0), (1, 50_000_000), (2, 100_000_000)]
    assert frames[0].image.shape == (16, 32, 3)


def test_face_pattern_draws_a_face_or_uses_the_given_image(tmp_path):
    with open_camera("synthetic://?width=160&height=120&pattern=face") as cam:
        img = cam.read().image
        assert img.std() > 10 and (img[60, 80] != 128).any()  # something drawn at the centre
    path = write_image(tmp_path / "face.png", 200, size=(80, 60))
    with open_camera(f"synthetic://?width=40&height=30&pattern=face&image={path}") as cam:
        f = cam.read()
        assert f.image.shape == (30, 40, 3) and int(f.image.mean() + 0.5) == 200
        held = list(cam._pixel_buffers)
    assert all(not b.any() for b in held), "the face template is wiped on close too"
    with pytest.raises(CameraError, match="image="):
        open_camera(f"synthetic://?pattern=face&image={tmp_path / 'missing.png'}").open()


def test_fail_after_raises_camera_lost():
    with open_camera("synthetic://?width=32&height=16&fail_after=2") as cam:
        cam.read(), cam.read()
        with pytest.raises(CameraLost, match="fail_after=2"):
            cam.read()


def test_freeze_after_is_caught_by_the_timestamp_guard_within_half_a_second_of_frames():
    # 30 fps: the guard allows 15 repeated timestamps (0.5 s) before declaring the camera lost.
    with open_camera("synthetic://?width=32&height=16&freeze_after=5") as cam:
        stamps = []
        with pytest.raises(CameraLost, match="identical timestamps"):
            for _ in range(100):
                stamps.append(cam.read().timestamp_ns)
    assert len(stamps) == 5 + 15 and len(set(stamps)) == 5


def test_wipe_keeps_it_open_and_rebuilds_the_pattern():
    cam = open_camera("synthetic://?width=32&height=16&pattern=face")
    with cam:
        before = cam.read().image.copy()
        cam.wipe()
        assert cam.is_open and not cam.buffer.any()
        assert np.array_equal(cam.read().image, before)
