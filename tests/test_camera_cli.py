"""`edge cameras`: V4L2 enumeration parsed from canned ioctl replies (no camera exists here)."""

from __future__ import annotations

import argparse
import ctypes
import errno
import io
import json
import os
import sys


from camera_fakes import fake_picamera2_module
from edge.camera import cli, v4l2_info as v

MJPG = int.from_bytes(b"MJPG", "little")
YUYV = int.from_bytes(b"YUYV", "little")
RG10 = int.from_bytes(b"pRAA", "little")

# device -> dict(caps, device_caps, formats: [(fourcc, desc, flags, sizes)])
# sizes: list of ((w, h), [fps...]) for discrete, or ("stepwise", (minw,maxw,stepw,minh,maxh,steph), (min_fps,max_fps))
DEVICES = {
    "/dev/video0": {
        "driver": b"uvcvideo", "card": b"HD Webcam C270", "bus": b"usb-0000:01:00.0-1.3",
        "caps": v.V4L2_CAP_DEVICE_CAPS | v.V4L2_CAP_VIDEO_CAPTURE | v.V4L2_CAP_META_CAPTURE,
        "device_caps": v.V4L2_CAP_VIDEO_CAPTURE,
        "formats": [
            (YUYV, b"YUYV 4:2:2", 0, [((640, 480), [30, 15]), ((160, 120), [30])]),
            (MJPG, b"Motion-JPEG", v.V4L2_FMT_FLAG_COMPRESSED, [((1280, 720), [30]), ((640, 480), [30, 15, 5])]),
        ],
    },
    # UVC's second node per camera: metadata only -> skipped.
    "/dev/video1": {"driver": b"uvcvideo", "card": b"HD Webcam C270", "bus": b"usb-x",
                    "caps": v.V4L2_CAP_DEVICE_CAPS | v.V4L2_CAP_VIDEO_CAPTURE | v.V4L2_CAP_META_CAPTURE,
                    "device_caps": v.V4L2_CAP_META_CAPTURE, "formats": []},
    "/dev/video2": {"eacces": True},
    "/dev/video3": {
        "driver": b"unicam", "card": b"unicam", "bus": b"platform:3f801000.csi",
        "caps": v.V4L2_CAP_VIDEO_CAPTURE, "device_caps": 0,  # no DEVICE_CAPS flag: capabilities apply
        "formats": [(RG10, b"10-bit Bayer", 0, ("stepwise", (16, 3280, 2, 16, 2464, 2), (1.0, 30.0)))],
    },
    # Codec memory-to-memory node (Pi's bcm2835-codec) -> skipped.
    "/dev/video10": {"driver": b"bcm2835-codec", "card": b"bcm2835-codec-decode", "bus": b"platform:codec",
                     "caps": v.V4L2_CAP_DEVICE_CAPS | v.V4L2_CAP_VIDEO_M2M_MPLANE,
                     "device_caps": v.V4L2_CAP_VIDEO_M2M_MPLANE, "formats": []},
}


class FakeKernel:
    def __init__(self, devices=DEVICES):
        self.devices = devices
        self.fds: dict[int, str] = {}
        self.closed: list[int] = []
        self.requests: list[int] = []

    def glob(self, pattern):
        assert pattern == "/dev/video*"
        return list(self.devices)  # unsorted on purpose: video10 before video2 by name

    def open(self, path, flags):
        assert flags & os.O_NONBLOCK
        dev = self.devices[path]
        if dev.get("eacces"):
            raise OSError(errno.EACCES, "Permission denied", path)
        fd = 100 + len(self.fds)
        self.fds[fd] = path
        return fd

    def close(self, fd):
        self.closed.append(fd)

    def ioctl(self, fd, request, arg):
        self.requests.append(request)
        dev = self.devices[self.fds[fd]]
        einval = OSError(errno.EINVAL, "Invalid argument")
        if request == v.VIDIOC_QUERYCAP:
            assert isinstance(arg, v.v4l2_capability) and ctypes.sizeof(arg) == 104
            arg.driver, arg.card, arg.bus_info = dev["driver"], dev["card"], dev["bus"]
            arg.capabilities, arg.device_caps = dev["caps"], dev["device_caps"]
            return 0
        if request == v.VIDIOC_ENUM_FMT:
            assert ctypes.sizeof(arg) == 64 and arg.type == v.V4L2_BUF_TYPE_VIDEO_CAPTURE
            if arg.index >= len(dev["formats"]):
                raise einval
            code, desc, flags, _ = dev["formats"][arg.index]
            arg.pixelformat, arg.description, arg.flags = code, desc, flags
            return 0
        fmt = next((f for f in dev["formats"] if f[0] == arg.pixel_format), None)
        if fmt is None:
            raise einval
        sizes = fmt[3]
        if request == v.VIDIOC_ENUM_FRAMESIZES:
            assert ctypes.sizeof(arg) == 44
            if sizes[0] == "stepwise":
                if arg.index > 0:
                    raise einval
                arg.type = 3
                (arg.stepwise.min_width, arg.stepwise.max_width, arg.stepwise.step_width,
                 arg.stepwise.min_height, arg.stepwise.max_height, arg.stepwise.step_height) = sizes[1]
                return 0
            if arg.index >= len(sizes):
                raise einval
            arg.type = v.V4L2_FRMSIZE_TYPE_DISCRETE
            arg.discrete.width, arg.discrete.height = sizes[arg.index][0]
            return 0
        if request == v.VIDIOC_ENUM_FRAMEINTERVALS:
            assert ctypes.sizeof(arg) == 52
            if sizes[0] == "stepwise":
                if arg.index > 0:
                    raise einval
                lo, hi = sizes[2]
                arg.type = 2  # continuous
                arg.stepwise.min.numerator, arg.stepwise.min.denominator = 1, int(hi)
                arg.stepwise.max.numerator, arg.stepwise.max.denominator = 1, int(lo)
                return 0
            rates = dict(sizes)[(arg.width, arg.height)]
            if arg.index >= len(rates):
                raise einval
            arg.type = v.V4L2_FRMIVAL_TYPE_DISCRETE
            arg.discrete.numerator, arg.discrete.denominator = 1, rates[arg.index]
            return 0
        raise OSError(errno.ENOTTY, "Inappropriate ioctl")


def _list(kernel):
    return v.list_v4l2(globber=kernel.glob, ioctl=kernel.ioctl, opener=kernel.open, closer=kernel.close)


def test_ioctl_numbers_match_videodev2_h():
    assert (v.VIDIOC_QUERYCAP, v.VIDIOC_ENUM_FMT) == (0x80685600, 0xC0405602)
    assert (v.VIDIOC_ENUM_FRAMESIZES, v.VIDIOC_ENUM_FRAMEINTERVALS) == (0xC02C564A, 0xC034564B)


def test_enumeration_parses_formats_sizes_rates_and_skips_non_cameras():
    kernel = FakeKernel()
    devs = _list(kernel)
    assert [(d.index, d.device) for d in devs] == [(0, "/dev/video0"), (2, "/dev/video2"), (3, "/dev/video3")]
    cam = devs[0]
    assert (cam.driver, cam.card, cam.bus_info) == ("uvcvideo", "HD Webcam C270", "usb-0000:01:00.0-1.3")
    yuyv, mjpg = cam.formats
    assert (yuyv.fourcc, yuyv.description, yuyv.compressed) == ("YUYV", "YUYV 4:2:2", False)
    assert [(s.width, s.height, s.fps) for s in yuyv.sizes] == [(640, 480, (30.0, 15.0)), (160, 120, (30.0,))]
    assert mjpg.compressed and [(s.width, s.height, s.fps) for s in mjpg.sizes] == [
        (1280, 720, (30.0,)), (640, 480, (30.0, 15.0, 5.0))]
    assert devs[1].error.startswith("permission denied") and "usermod -aG video" in devs[1].error
    raw = devs[2].formats[0]
    assert raw.size_range == v.SizeRange(16, 3280, 2, 16, 2464, 2)
    assert raw.sizes[0].fps_range == (1.0, 30.0)
    assert sorted(kernel.closed) == sorted(kernel.fds), "every opened node is closed"


def test_cli_text_json_and_permission_exit_code():
    kernel = FakeKernel()
    collector = lambda: cli.collect(lambda: _list(kernel), lambda: None)  # noqa: E731
    out, err = io.StringIO(), io.StringIO()
    code = cli.handle(argparse.Namespace(json=False), out=out, err=err, collector=collector)
    text = out.getvalue()
    assert code == 1
    assert "[0] /dev/video0  HD Webcam C270 (driver uvcvideo" in text
    assert "spec: v4l2:///dev/video0" in text and "MJPG (Motion-JPEG, compressed)" in text
    assert "640x480  30/15/5 fps" in text and "16x16 .. 3280x2464 (step 2x2)" in text
    assert "picamera2 not importable" in text
    assert "sudo usermod -aG video $USER, then log out and in again" in err.getvalue()

    out = io.StringIO()
    cli.handle(argparse.Namespace(json=True), out=out, err=io.StringIO(), collector=collector)
    data = json.loads(out.getvalue())
    assert data["picamera2"] is None
    assert data["v4l2"][0]["formats"][1]["sizes"][1] == {"width": 640, "height": 480, "fps": [30.0, 15.0, 5.0]}
    assert data["v4l2"][1] == {"index": 2, "device": "/dev/video2", "error": data["v4l2"][1]["error"]}


def test_no_cameras_is_success():
    kernel = FakeKernel({})
    out = io.StringIO()
    code = cli.handle(argparse.Namespace(json=False), out=out, err=io.StringIO(),
                      collector=lambda: cli.collect(lambda: _list(kernel), lambda: []))
    assert code == 0 and "no video capture devices" in out.getvalue() and "no Pi cameras" in out.getvalue()


def test_picamera2_global_camera_info(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2_module())
    cams = v.list_picamera2()
    assert cams == [{"index": 0, "spec": "picamera2://0", "Model": "imx708", "Location": 2, "Rotation": 180,
                     "Id": "/base/soc/i2c0mux/i2c@1/imx708@1a"}]
    out = io.StringIO()
    cli.render_text({"v4l2": [], "picamera2": cams}, out)
    assert "[0] picamera2://0  Model imx708" in out.getvalue()


def test_register_adds_the_subcommand():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(["cameras", "--json"])
    assert args.json and args.func is cli.handle


def test_real_machine_listing_runs():
    # No camera here: it must still run (empty list or real devices), never crash.
    code = cli.handle(argparse.Namespace(json=True), out=io.StringIO(), err=io.StringIO())
    assert code in (0, 1)
