"""v4l2:// through the real OpenCV code path, fed by video files (no camera here).

The capture factory is injected: it returns a cv2.VideoCapture on a file, so
grab/retrieve/get/set and the loss detection run exactly as with a device.
"""

from __future__ import annotations

import errno

import cv2
import pytest

from camera_fakes import write_video
from edge.camera import open_camera
from edge.camera.v4l2 import check_device_access
from edge.errors import CameraError, CameraLost


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


class Capture:
    """A real cv2.VideoCapture on a file whose grab() a test may replace (cv2's attributes are read-only)."""

    def __init__(self, path):
        self._cap = cv2.VideoCapture(str(path))
        self.grab = self._cap.grab

    def __getattr__(self, name):
        return getattr(self._cap, name)


def _cam(path, clock=None, wrap=False, **kw):
    created = []

    def factory(device):
        assert device == "/dev/video0"
        created.append(Capture(path) if wrap else cv2.VideoCapture(str(path)))
        return created[0]

    cam = open_camera("v4l2:///dev/video0?width=64&height=48&fps=10&format=MJPG", capture_factory=factory,
                      clock=clock or Clock(), **kw)
    return cam, created


def test_reads_into_one_buffer(tmp_path):
    cam, created = _cam(write_video(tmp_path / "v.avi", 6))
    with cam:
        assert type(created[0]) is cv2.VideoCapture
        buf = cam.buffer
        levels = []
        for i in range(4):
            f = cam.read()
            assert f.image is buf and f.index == i
            levels.append(int(f.image.mean() + 0.5))
    assert levels == pytest.approx([20, 30, 40, 50], abs=2)
    assert not buf.any()


def test_slow_consumer_drops_stale_frames(tmp_path):
    clock = Clock()
    cam, _ = _cam(write_video(tmp_path / "v.avi", 10), clock)
    with cam:
        cam.read()  # frame 0
        clock.t += 0.35  # 3.5 frame periods at 10 fps; one stale frame fits the queue (buffersize 1)
        f = cam.read()
        assert cam.dropped == 1 and f.index == 2
        assert int(f.image.mean() + 0.5) == pytest.approx(40, abs=2)


def test_device_gone_is_camera_lost(tmp_path):
    cam, _ = _cam(write_video(tmp_path / "v.avi", 2))
    with cam:
        cam.read(), cam.read()
        with pytest.raises(CameraLost, match="stopped delivering frames"):
            cam.read()  # read returns False, as after an unplug (ENODEV)


def test_read_error_is_camera_lost(tmp_path):
    cam, created = _cam(write_video(tmp_path / "v.avi", 3), wrap=True)
    with cam:
        cam.read()

        def broken():
            raise cv2.error("VIDIOC_DQBUF: No such device")

        created[0].grab = broken
        with pytest.raises(CameraLost, match="read error"):
            cam.read()


def test_frozen_content_is_camera_lost(tmp_path):
    cam, _ = _cam(write_video(tmp_path / "v.avi", 40, same=True), stall_s=None)
    with cam:
        n = 0
        with pytest.raises(CameraLost, match="identical picture content"):
            for n in range(40):
                cam.read()
    assert n == 16  # first frame + 15 allowed repeats


def test_frozen_content_over_time_is_camera_lost_within_a_second(tmp_path):
    clock = Clock()
    cam, _ = _cam(write_video(tmp_path / "v.avi", 40, same=True), clock)
    with cam:
        cam.read()
        clock.t += 0.5
        cam.read()
        clock.t += 0.5  # 1.0 s without a change > stall_s 0.9
        with pytest.raises(CameraLost, match=r"identical picture content for 1.00 s"):
            cam.read()


def test_no_frame_within_timeout_is_camera_lost(tmp_path):
    clock = Clock()
    cam, created = _cam(write_video(tmp_path / "v.avi", 5), clock, wrap=True)
    with cam:
        cam.read()
        real_grab = created[0].grab

        def slow_grab():
            clock.t += 1.5  # the driver took 1.5 s to hand over a frame
            return real_grab()

        created[0].grab = slow_grab
        with pytest.raises(CameraLost, match="no frame for 1.50 s"):
            cam.read(timeout_s=1.0)


def test_capture_that_does_not_open(tmp_path):
    cam = open_camera("v4l2:///dev/video0", capture_factory=lambda d: cv2.VideoCapture(str(tmp_path / "none.avi")))
    with pytest.raises(CameraError, match="OpenCV cannot open /dev/video0"):
        cam.open()
    assert not cam.is_open


@pytest.mark.parametrize(
    "code, message",
    [
        (errno.EACCES, "sudo usermod -aG video \\$USER"),
        (errno.ENOENT, "does not exist .*edge cameras"),
        (errno.EBUSY, "busy"),
    ],
)
def test_device_access_errors_explain_the_fix(code, message):
    def opener(path, flags):
        raise OSError(code, "x", path)

    with pytest.raises(CameraError, match=message):
        check_device_access("/dev/video0", opener)
    cam = open_camera("v4l2:///dev/video0", opener=opener)
    with pytest.raises(CameraError, match=message):
        cam.open()


def test_keep_warm_wipe_between_sessions_is_not_a_freeze(tmp_path):
    clock = Clock()
    cam, _ = _cam(write_video(tmp_path / "v.avi", 10, same=True), clock)
    with cam:
        cam.read()
        cam.read()
        cam.wipe()  # session ended, camera kept open
        assert cam.is_open and not cam.buffer.any()
        clock.t += 30.0  # idle until the next trigger; the picture did not change meanwhile
        f = cam.read()  # must not count the idle time as a frozen camera
        assert int(f.image.mean() + 0.5) == pytest.approx(100, abs=2)


def test_open_failure_inside_with_leaves_it_closed(tmp_path):
    cam = open_camera("v4l2:///dev/video0", capture_factory=lambda d: cv2.VideoCapture(str(tmp_path / "no.avi")))
    with pytest.raises(CameraError):
        with cam:
            pass
    assert not cam.is_open
