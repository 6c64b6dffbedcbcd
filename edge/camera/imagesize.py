"""An image's width and height from its header, read before anything is decoded.

A 20000x20000 PNG is 1.2 MB on disk and 1.2 GB of pixels: decoding first and asking afterwards can take
more memory than a Pi has. Every still image (``image://``, ``images://``, ``edge check``) and every video
is checked against :data:`MAX_PIXELS` first. OpenCV's own cap (``OPENCV_IO_MAX_IMAGE_PIXELS``, set from the
same limit in ``edge/__init__.py`` before cv2 loads) is the backstop for formats parsed here only loosely.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

from edge.errors import CameraError

ENV = "OPENCV_IO_MAX_IMAGE_PIXELS"
# 64 Mpx (8192 x 8192, 192 MB as BGR): above any camera and phone photo we expect, below what kills a Pi 4.
DEFAULT_MAX_PIXELS = 8192 * 8192


def max_pixels() -> int:
    """The cap: $OPENCV_IO_MAX_IMAGE_PIXELS when it is a positive integer, else 64 Mpx."""
    raw = os.environ.get(ENV, "")
    return int(raw) if raw.isdigit() and int(raw) > 0 else DEFAULT_MAX_PIXELS


def read_size(path: str | Path) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, BMP, WebP, GIF, TIFF or PNM file; None if unknown."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(32)
            if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
                return struct.unpack(">II", head[16:24])
            if head.startswith(b"\xff\xd8"):
                return _jpeg(fh)
            if head.startswith(b"BM") and len(head) >= 26:
                w, h = struct.unpack("<ii", head[18:26])
                return abs(w), abs(h)
            if head.startswith(b"RIFF") and head[8:12] == b"WEBP":
                return _webp(head + fh.read(8))
            if head[:6] in (b"GIF87a", b"GIF89a"):
                return struct.unpack("<HH", head[6:10])
            if head[:4] in (b"II*\x00", b"MM\x00*"):
                return _tiff(fh, "<" if head[:2] == b"II" else ">")
            if head[:1] == b"P" and head[1:2] in b"123456":
                return _pnm(head + fh.read(480))
    except (OSError, struct.error):
        return None
    return None


def check_pixels(path: str | Path, what: str = "image") -> None:
    """Raise CameraError when the header says the image is larger than :func:`max_pixels`."""
    size = read_size(path)
    if size is not None:
        check_size(size[0], size[1], path, what)


def check_size(width: int, height: int, path: str | Path, what: str = "image") -> None:
    limit = max_pixels()
    if width * height > limit:
        raise CameraError(
            f"{what} {str(path)!r} is {width}x{height} ({width * height / 1e6:.0f} Mpx), above the "
            f"{limit / 1e6:.0f} Mpx limit; scale it down (or raise {ENV} if this board has the memory)"
        )


def _jpeg(fh) -> tuple[int, int] | None:
    fh.seek(2)
    for _ in range(1000):  # markers before the frame header; bounded against crafted files
        b = fh.read(1)
        while b == b"\xff":
            b = fh.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            continue
        (length,) = struct.unpack(">H", fh.read(2))
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            _, h, w = struct.unpack(">BHH", fh.read(5))
            return w, h
        fh.seek(length - 2, 1)
    return None


def _webp(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X":
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 ":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    return None


def _tiff(fh, order: str) -> tuple[int, int] | None:
    fh.seek(4)
    (ifd,) = struct.unpack(order + "I", fh.read(4))
    fh.seek(ifd)
    (count,) = struct.unpack(order + "H", fh.read(2))
    size = {}
    for _ in range(min(count, 512)):
        tag, kind, _n, value = struct.unpack(order + "HHI4s", fh.read(12))
        if tag in (256, 257):
            size[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), value[: 2 if kind == 3 else 4])[0]
    return (size[256], size[257]) if len(size) == 2 else None


def _pnm(head: bytes) -> tuple[int, int] | None:
    fields: list[int] = []
    for line in head[2:].split(b"\n"):
        line = line.split(b"#", 1)[0]
        for token in line.split():
            if not token.isdigit():
                return None
            fields.append(int(token))
            if len(fields) == 2:
                return fields[0], fields[1]
    return None
