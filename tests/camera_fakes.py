"""Test helpers for the camera tests: media files written on the fly and a fake picamera2 module."""

from __future__ import annotations

import types
from pathlib import Path

import cv2
import numpy as np


def write_video(path: Path, frames: int, size=(64, 48), fps=10.0, same=False) -> Path:
    """An MJPG .avi whose frame i is a flat grey of 20 + 10*i (or all identical with ``same``)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened(), "this OpenCV cannot write MJPG .avi"
    for i in range(frames):
        writer.write(np.full((h, w, 3), 100 if same else (20 + 10 * i) % 256, np.uint8))
    writer.release()
    return path


def write_image(path: Path, value: int, size=(64, 48)) -> Path:
    w, h = size
    assert cv2.imwrite(str(path), np.full((h, w, 3), value, np.uint8))
    return path


def i420_padded(bgr: np.ndarray, stride: int) -> np.ndarray:
    """``bgr`` as libcamera's YUV420 buffer: I420 planes whose rows are ``stride`` bytes (chroma: stride/2)."""
    h, w = bgr.shape[:2]
    i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    out = np.zeros((h * 3 // 2, stride), np.uint8)
    out[:h, :w] = i420[:h]
    q = h // 4
    for k, plane in enumerate((i420[h : h + q], i420[h + q :])):
        padded = np.zeros((h // 2, stride // 2), np.uint8)
        padded[:, : w // 2] = plane.reshape(h // 2, w // 2)
        out[h + k * q : h + (k + 1) * q] = padded.reshape(q, stride)
    return out


# --- fake picamera2 --------------------------------------------------------------------------------
class FakeRequest:
    def __init__(self, cam: "FakePicamera2", seq: int):
        self.cam, self.seq = cam, seq
        self.released = False
        stream = cam.stream_cfg
        w, h = stream["size"]
        if stream["format"] == "RGB888":
            self.data = np.full((h, w, 3), seq % 256, np.uint8)
            self.data[0, 0] = (10, 20, 30)  # B, G, R: picamera2's RGB888 is BGR in memory
        else:
            self.data = i420_padded(cam.yuv_source_bgr, cam.stride or w)
        self.make_array_calls = 0

    def make_array(self, name):
        assert name == self.cam.stream_name
        self.make_array_calls += 1
        if self.cam.fail_processing:
            raise RuntimeError("buffer mapping failed (simulated)")
        return self.data.copy()  # the real make_array copies the DMA buffer

    def get_metadata(self):
        ts = self.cam.frozen_ts if self.cam.frozen_ts is not None else 1_000_000 + self.seq * 33_333_333
        return {"SensorTimestamp": ts, "ExposureTime": 10000}

    def release(self):
        assert not self.released, "request released twice"
        self.released = True


class FakeJob:
    def __init__(self, cam, request):
        self.cam, self.request = cam, request

    def get_result(self, timeout=None):
        self.cam.timeouts.append(timeout)
        if self.cam.fail_capture is not None:
            raise self.cam.fail_capture
        return self.request


class FakeMappedArray:
    def __init__(self, request, stream, reshape=True, write=True):
        self.request, self.stream = request, stream
        self.array = None

    def __enter__(self):
        assert not self.request.released, "buffer mapped after release"
        if self.request.cam.fail_processing:
            raise RuntimeError("buffer mapping failed (simulated)")
        self.array = self.request.data  # a view of the "DMA buffer": no copy
        self.request.cam.mapped += 1
        return self

    def __exit__(self, *exc):
        self.array = None


class FakePicamera2:
    instances: list["FakePicamera2"] = []

    def __init__(self, camera_num=0):
        if camera_num >= 2:
            raise IndexError("list index out of range")
        self.camera_num = camera_num
        self.configured = None
        self.started = self.stopped = self.closed = False
        self.requests: list[FakeRequest] = []
        self.timeouts: list = []
        self.fail_capture: BaseException | None = None
        self.fail_processing = False
        self.frozen_ts: int | None = None
        self.stride: int | None = None
        self.yuv_source_bgr = np.zeros((1, 1, 3), np.uint8)
        self.mapped = 0
        self.cancelled = 0
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info():
        return [{"Model": "imx708", "Location": 2, "Rotation": 180, "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]

    def create_preview_configuration(self, main=None, lores=None, controls=None, queue=True, **kw):
        return {"main": main, "lores": lores, "controls": controls, "queue": queue}

    def configure(self, config):
        self.configured = config
        self.stream_name = "lores" if config["lores"] else "main"
        self.stream_cfg = config[self.stream_name]

    def start(self):
        assert self.configured is not None
        self.started = True

    def capture_request(self, wait=None, flush=None):
        assert self.started and not self.stopped
        request = FakeRequest(self, len(self.requests))
        self.requests.append(request)
        return FakeJob(self, request) if wait is False else request

    def cancel_all_and_flush(self):
        self.cancelled += 1

    def stop(self):
        self.stopped = True

    def close(self):
        self.closed = True


def fake_picamera2_module(with_mapped_array: bool = True) -> types.ModuleType:
    mod = types.ModuleType("picamera2")
    FakePicamera2.instances = []
    mod.Picamera2 = FakePicamera2
    if with_mapped_array:
        mod.MappedArray = FakeMappedArray
    return mod
