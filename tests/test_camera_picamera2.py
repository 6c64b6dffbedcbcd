"""picamera2:// against a fake picamera2 module in sys.modules (and create_autospec where it imports)."""

from __future__ import annotations

import importlib.util
import sys
from unittest import mock

import numpy as np
import pytest

from camera_fakes import FakePicamera2, fake_picamera2_module
from edge.camera import open_camera
from edge.camera.picam import Picamera2Camera
from edge.errors import CameraError, CameraLost


@pytest.fixture
def fake_module(monkeypatch):
    mod = fake_picamera2_module()
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    return mod


def test_import_is_lazy(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import raises ImportError
    cam = open_camera("picamera2://0")  # constructing must not import it
    with pytest.raises(CameraError, match="apt install python3-picamera2.*--system-site-packages"):
        cam.open()


def test_rgb888_main_stream_mapped_without_copy_and_released(fake_module):
    with open_camera("picamera2://0?width=64&height=48&fps=15") as cam:
        pc = FakePicamera2.instances[0]
        assert pc.configured["main"] == {"size": (64, 48), "format": "RGB888"}
        assert pc.configured["lores"] is None and pc.configured["queue"] is False
        assert pc.configured["controls"] == {"FrameDurationLimits": (66667, 66667)}
        buf = cam.buffer
        for i in range(3):
            f = cam.read(timeout_s=0.5)
            assert f.image is buf and f.index == i
            assert f.timestamp_ns == 1_000_000 + i * 33_333_333  # SensorTimestamp
            assert tuple(f.image[0, 0]) == (10, 20, 30) and int(f.image[1, 1, 0]) == i
        assert pc.mapped == 3 and all(r.make_array_calls == 0 for r in pc.requests)
        assert all(r.released for r in pc.requests)
        assert pc.timeouts == [0.5, 0.5, 0.5]
    assert pc.stopped and pc.closed and not buf.any()


COLOUR = (40, 120, 200)  # B, G, R


@pytest.mark.parametrize("stride", [None, 64])  # None: packed rows; 64: the ISP pads 48-pixel rows to 64 bytes
def test_yuv420_lores_converted_into_bgr_buffer(fake_module, stride):
    with open_camera("picamera2://1?width=48&height=32&format=YUV420") as cam:
        pc = FakePicamera2.instances[0]
        assert pc.camera_num == 1 and cam.stream == "lores"
        assert pc.configured["lores"] == {"size": (48, 32), "format": "YUV420"}
        pc.stride = stride
        pc.yuv_source_bgr = np.full((32, 48, 3), COLOUR, np.uint8)
        for _ in range(2):
            f = cam.read()
            assert f.image.shape == (32, 48, 3) and f.image is cam.buffer
            assert np.abs(f.image.astype(int) - COLOUR).max() <= 3
        assert all(r.released for r in pc.requests)


def test_make_array_fallback_without_mapped_array(monkeypatch):
    mod = fake_picamera2_module(with_mapped_array=False)
    monkeypatch.setitem(sys.modules, "picamera2", mod)
    with open_camera("picamera2://0?width=32&height=16") as cam:
        cam.read()
        pc = FakePicamera2.instances[0]
        assert pc.requests[0].make_array_calls == 1 and pc.requests[0].released


def test_request_released_even_when_processing_raises(fake_module):
    with open_camera("picamera2://0?width=32&height=16") as cam:
        pc = FakePicamera2.instances[0]
        cam.read()
        pc.fail_processing = True
        with pytest.raises(CameraLost, match="bad frame buffer"):
            cam.read()
        assert len(pc.requests) == 2 and all(r.released for r in pc.requests)


def test_capture_timeout_and_errors_are_camera_lost(fake_module):
    with open_camera("picamera2://0?width=32&height=16") as cam:
        pc = FakePicamera2.instances[0]
        pc.fail_capture = TimeoutError()
        with pytest.raises(CameraLost, match="no frame within 0.25 s"):
            cam.read(timeout_s=0.25)
        assert pc.cancelled == 1, "the timed-out job is cancelled so no request leaks"
        pc.fail_capture = RuntimeError("Camera frontend has timed out!")
        with pytest.raises(CameraLost, match="capture failed"):
            cam.read()


def test_frozen_sensor_timestamps_are_camera_lost(fake_module):
    with open_camera("picamera2://0?width=32&height=16") as cam:
        pc = FakePicamera2.instances[0]
        pc.frozen_ts = 42
        reads = 0
        with pytest.raises(CameraLost, match="identical sensor timestamps"):
            for reads in range(1, 40):
                cam.read()
        assert reads == 17  # first + 15 allowed repeats + the one that trips
        assert all(r.released for r in pc.requests)


def test_missing_camera_index(fake_module):
    with pytest.raises(CameraError, match="no Pi camera at index 5.*edge cameras"):
        open_camera("picamera2://5").open()


@pytest.mark.skipif(importlib.util.find_spec("picamera2") is None,
                    reason="picamera2 is not importable here (Raspberry Pi OS only); the fake module covers it")
def test_against_autospec_of_the_real_class(monkeypatch):
    import picamera2

    cam_mock = mock.create_autospec(picamera2.Picamera2, instance=True)
    request = mock.create_autospec(picamera2.request.CompletedRequest, instance=True)
    request.get_metadata.return_value = {"SensorTimestamp": 1}
    request.make_array.return_value = np.zeros((16, 32, 3), np.uint8)
    job = mock.Mock()
    job.get_result.return_value = request
    cam_mock.capture_request.return_value = job
    module = mock.Mock(Picamera2=mock.Mock(return_value=cam_mock), MappedArray=None)
    camera = Picamera2Camera("picamera2://0?width=32&height=16", 0, width=32, height=16, module=module)
    with camera:
        camera.read()
    cam_mock.create_preview_configuration.assert_called_once()
    cam_mock.configure.assert_called_once()
    request.release.assert_called_once_with()
    cam_mock.stop.assert_called_once_with()
    cam_mock.close.assert_called_once_with()
