"""V4L2 camera enumeration with the kernel's ioctls (no v4l-utils needed).

VIDIOC_QUERYCAP names the driver and card and says whether a node captures
video (UVC cameras also create metadata-only nodes, which are skipped);
VIDIOC_ENUM_FMT, VIDIOC_ENUM_FRAMESIZES and VIDIOC_ENUM_FRAMEINTERVALS list the
pixel formats, sizes and frame rates. The /dev glob, the opener and the ioctl
function are parameters so the parsing is tested with canned replies.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import glob
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

# --- ioctl numbers (asm-generic/ioctl.h) ---------------------------------------------------------
_IOC_WRITE, _IOC_READ = 1, 2


def _ioc(direction: int, type_: str, nr: int, size: int) -> int:
    return (direction << 30) | (size << 16) | (ord(type_) << 8) | nr


# --- structures (linux/videodev2.h) --------------------------------------------------------------
class v4l2_capability(ctypes.Structure):
    _fields_ = [
        ("driver", ctypes.c_char * 16),
        ("card", ctypes.c_char * 32),
        ("bus_info", ctypes.c_char * 32),
        ("version", ctypes.c_uint32),
        ("capabilities", ctypes.c_uint32),
        ("device_caps", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class v4l2_fmtdesc(ctypes.Structure):
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("description", ctypes.c_char * 32),
        ("pixelformat", ctypes.c_uint32),
        ("mbus_code", ctypes.c_uint32),
        ("reserved", ctypes.c_uint32 * 3),
    ]


class v4l2_frmsize_discrete(ctypes.Structure):
    _fields_ = [("width", ctypes.c_uint32), ("height", ctypes.c_uint32)]


class v4l2_frmsize_stepwise(ctypes.Structure):
    _fields_ = [
        ("min_width", ctypes.c_uint32),
        ("max_width", ctypes.c_uint32),
        ("step_width", ctypes.c_uint32),
        ("min_height", ctypes.c_uint32),
        ("max_height", ctypes.c_uint32),
        ("step_height", ctypes.c_uint32),
    ]


class _frmsize_union(ctypes.Union):
    _fields_ = [("discrete", v4l2_frmsize_discrete), ("stepwise", v4l2_frmsize_stepwise)]


class v4l2_frmsizeenum(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("pixel_format", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("u", _frmsize_union),
        ("reserved", ctypes.c_uint32 * 2),
    ]


class v4l2_fract(ctypes.Structure):
    _fields_ = [("numerator", ctypes.c_uint32), ("denominator", ctypes.c_uint32)]


class v4l2_frmival_stepwise(ctypes.Structure):
    _fields_ = [("min", v4l2_fract), ("max", v4l2_fract), ("step", v4l2_fract)]


class _frmival_union(ctypes.Union):
    _fields_ = [("discrete", v4l2_fract), ("stepwise", v4l2_frmival_stepwise)]


class v4l2_frmivalenum(ctypes.Structure):
    _anonymous_ = ("u",)
    _fields_ = [
        ("index", ctypes.c_uint32),
        ("pixel_format", ctypes.c_uint32),
        ("width", ctypes.c_uint32),
        ("height", ctypes.c_uint32),
        ("type", ctypes.c_uint32),
        ("u", _frmival_union),
        ("reserved", ctypes.c_uint32 * 2),
    ]


VIDIOC_QUERYCAP = _ioc(_IOC_READ, "V", 0, ctypes.sizeof(v4l2_capability))
VIDIOC_ENUM_FMT = _ioc(_IOC_READ | _IOC_WRITE, "V", 2, ctypes.sizeof(v4l2_fmtdesc))
VIDIOC_ENUM_FRAMESIZES = _ioc(_IOC_READ | _IOC_WRITE, "V", 74, ctypes.sizeof(v4l2_frmsizeenum))
VIDIOC_ENUM_FRAMEINTERVALS = _ioc(_IOC_READ | _IOC_WRITE, "V", 75, ctypes.sizeof(v4l2_frmivalenum))

V4L2_CAP_VIDEO_CAPTURE = 0x00000001
V4L2_CAP_VIDEO_CAPTURE_MPLANE = 0x00001000
V4L2_CAP_VIDEO_M2M_MPLANE = 0x00004000
V4L2_CAP_VIDEO_M2M = 0x00008000
V4L2_CAP_META_CAPTURE = 0x00800000
V4L2_CAP_DEVICE_CAPS = 0x80000000
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1
V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE = 9
V4L2_FMT_FLAG_COMPRESSED = 0x0001
V4L2_FRMSIZE_TYPE_DISCRETE = 1
V4L2_FRMIVAL_TYPE_DISCRETE = 1

# Enumeration stops at an index the driver rejects; a runaway driver is cut off here.
_MAX_ENUM = 256

PERMISSION_FIX = "add your user to the video group: sudo usermod -aG video $USER, then log out and in again"

Ioctl = Callable[[int, int, Any], Any]


def fourcc_to_str(code: int) -> str:
    return "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))


@dataclass(frozen=True)
class FrameSize:
    width: int
    height: int
    fps: tuple[float, ...] = ()  # discrete rates, highest first
    fps_range: tuple[float, float] | None = None  # (min, max) for stepwise/continuous intervals


@dataclass(frozen=True)
class SizeRange:
    min_width: int
    max_width: int
    step_width: int
    min_height: int
    max_height: int
    step_height: int


@dataclass(frozen=True)
class PixelFormat:
    fourcc: str
    description: str
    compressed: bool
    sizes: tuple[FrameSize, ...] = ()
    size_range: SizeRange | None = None


@dataclass(frozen=True)
class V4L2Device:
    index: int
    device: str
    driver: str = ""
    card: str = ""
    bus_info: str = ""
    formats: tuple[PixelFormat, ...] = ()
    error: str | None = None  # set when the node could not be queried (e.g. permission)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"index": self.index, "device": self.device}
        if self.error:
            out["error"] = self.error
            return out
        out.update(driver=self.driver, card=self.card, bus_info=self.bus_info, spec=f"v4l2://{self.device}")
        out["formats"] = [
            {
                "fourcc": f.fourcc,
                "description": f.description,
                "compressed": f.compressed,
                "sizes": [
                    {"width": s.width, "height": s.height, "fps": list(s.fps)}
                    | ({"fps_range": list(s.fps_range)} if s.fps_range else {})
                    for s in f.sizes
                ],
                **({"size_range": vars(f.size_range)} if f.size_range else {}),
            }
            for f in self.formats
        ]
        return out


def _default_ioctl(fd: int, request: int, arg: Any) -> Any:
    return fcntl.ioctl(fd, request, arg, True)


def _node_index(path: str) -> int:
    m = re.search(r"(\d+)$", path)
    return int(m.group(1)) if m else -1


def _enum(ioctl: Ioctl, fd: int, request: int, make: Callable[[int], Any]) -> list[Any]:
    """Call an ENUM ioctl with index 0, 1, ... until the driver answers EINVAL."""
    out = []
    for i in range(_MAX_ENUM):
        arg = make(i)
        try:
            ioctl(fd, request, arg)
        except OSError as err:
            if err.errno in (errno.EINVAL, errno.ENOTTY):
                break
            raise
        out.append(arg)
    return out


def _fps(fract: v4l2_fract) -> float:
    return round(fract.denominator / fract.numerator, 3) if fract.numerator else 0.0


def _intervals(ioctl: Ioctl, fd: int, pixfmt: int, w: int, h: int) -> tuple[tuple[float, ...], tuple[float, float] | None]:
    def make(i: int) -> v4l2_frmivalenum:
        return v4l2_frmivalenum(index=i, pixel_format=pixfmt, width=w, height=h)

    items = _enum(ioctl, fd, VIDIOC_ENUM_FRAMEINTERVALS, make)
    if not items:
        return (), None
    if items[0].type == V4L2_FRMIVAL_TYPE_DISCRETE:
        return tuple(sorted({_fps(it.discrete) for it in items}, reverse=True)), None
    sw = items[0].stepwise
    # The longest interval is the slowest rate.
    return (), (_fps(sw.max), _fps(sw.min))


def query_formats(ioctl: Ioctl, fd: int, buf_type: int) -> tuple[PixelFormat, ...]:
    formats = []
    for desc in _enum(ioctl, fd, VIDIOC_ENUM_FMT, lambda i: v4l2_fmtdesc(index=i, type=buf_type)):
        pixfmt = desc.pixelformat
        sizes: list[FrameSize] = []
        size_range = None
        frms = _enum(ioctl, fd, VIDIOC_ENUM_FRAMESIZES, lambda i: v4l2_frmsizeenum(index=i, pixel_format=pixfmt))
        if frms and frms[0].type == V4L2_FRMSIZE_TYPE_DISCRETE:
            for fs in frms:
                w, h = fs.discrete.width, fs.discrete.height
                rates, rate_range = _intervals(ioctl, fd, pixfmt, w, h)
                sizes.append(FrameSize(w, h, rates, rate_range))
        elif frms:
            sw = frms[0].stepwise
            size_range = SizeRange(
                sw.min_width, sw.max_width, sw.step_width, sw.min_height, sw.max_height, sw.step_height
            )
            rates, rate_range = _intervals(ioctl, fd, pixfmt, sw.max_width, sw.max_height)
            sizes.append(FrameSize(sw.max_width, sw.max_height, rates, rate_range))
        formats.append(
            PixelFormat(
                fourcc=fourcc_to_str(pixfmt),
                description=desc.description.decode("utf-8", "replace"),
                compressed=bool(desc.flags & V4L2_FMT_FLAG_COMPRESSED),
                sizes=tuple(sizes),
                size_range=size_range,
            )
        )
    return tuple(formats)


def query_device(path: str, *, ioctl: Ioctl = _default_ioctl, opener: Callable[..., int] = os.open,
                 closer: Callable[[int], None] = os.close) -> V4L2Device | None:
    """Describe one node; None for nodes that capture no video (metadata, codecs, outputs)."""
    index = _node_index(path)
    try:
        fd = opener(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            return V4L2Device(index, path, error=f"permission denied: {PERMISSION_FIX}")
        if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            return None  # vanished between glob and open
        if err.errno == errno.EBUSY:
            return V4L2Device(index, path, error="busy: another program holds the camera")
        return V4L2Device(index, path, error=f"cannot open: {err.strerror}")
    try:
        cap = v4l2_capability()
        try:
            ioctl(fd, VIDIOC_QUERYCAP, cap)
        except OSError as err:
            if err.errno in (errno.ENOTTY, errno.EINVAL):
                return None  # not a V4L2 node
            return V4L2Device(index, path, error=f"VIDIOC_QUERYCAP failed: {err.strerror}")
        caps = cap.device_caps if cap.capabilities & V4L2_CAP_DEVICE_CAPS else cap.capabilities
        if caps & (V4L2_CAP_VIDEO_M2M | V4L2_CAP_VIDEO_M2M_MPLANE):
            return None  # codec/ISP memory-to-memory node, not a camera
        if caps & V4L2_CAP_VIDEO_CAPTURE:
            buf_type = V4L2_BUF_TYPE_VIDEO_CAPTURE
        elif caps & V4L2_CAP_VIDEO_CAPTURE_MPLANE:
            buf_type = V4L2_BUF_TYPE_VIDEO_CAPTURE_MPLANE
        else:
            return None  # metadata-only (UVC creates one per camera) or output node
        try:
            formats = query_formats(ioctl, fd, buf_type)
        except OSError as err:
            return V4L2Device(index, path, error=f"format enumeration failed: {err.strerror}")
        return V4L2Device(
            index=index,
            device=path,
            driver=cap.driver.decode("utf-8", "replace"),
            card=cap.card.decode("utf-8", "replace"),
            bus_info=cap.bus_info.decode("utf-8", "replace"),
            formats=formats,
        )
    finally:
        closer(fd)


def list_v4l2(
    *,
    globber: Callable[[str], list[str]] = glob.glob,
    pattern: str = "/dev/video*",
    ioctl: Ioctl = _default_ioctl,
    opener: Callable[..., int] = os.open,
    closer: Callable[[int], None] = os.close,
) -> list[V4L2Device]:
    paths = sorted(globber(pattern), key=lambda p: (_node_index(p), p))
    out = []
    for path in paths:
        dev = query_device(path, ioctl=ioctl, opener=opener, closer=closer)
        if dev is not None:
            out.append(dev)
    return out


def list_picamera2(importer: Callable[[str], Any] | None = None) -> list[dict] | None:
    """libcamera's camera list on a Pi (Picamera2.global_camera_info()); None when picamera2 is absent."""
    import importlib

    try:
        mod = (importer or importlib.import_module)("picamera2")
    except ImportError:
        return None
    cams = []
    for i, info in enumerate(mod.Picamera2.global_camera_info()):
        entry = {"index": i, "spec": f"picamera2://{i}"}
        entry.update({str(k): (v if isinstance(v, (int, float, str)) else str(v)) for k, v in dict(info).items()})
        cams.append(entry)
    return cams
