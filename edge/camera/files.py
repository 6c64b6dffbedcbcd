"""File sources: ``image://`` (one still), ``images://`` (a folder) and ``video://`` (a video file).

Timestamps come from the frame index and the frame rate, never from the wall
clock, so offline evaluations are deterministic. Decoding writes into the
camera's own buffer (``cv2.imread(path, dst)``, ``VideoCapture.read(image=buf)``).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edge.camera._common import BufferedCamera
from edge.camera.imagesize import check_pixels, check_size
from edge.camera.spec import IMAGE_EXTS
from edge.errors import CameraError, EndOfStream
from edge.types import Frame

log = logging.getLogger(__name__)

_NS = 1_000_000_000


def _ts(index: int, fps: float) -> int:
    return round(index * _NS / fps)


def _check_file(path: Path, what: str) -> None:
    try:
        is_file = path.is_file()
    except OSError as err:  # ENAMETOOLONG, EACCES on a parent...: a path that cannot be a file
        raise CameraError(f"{what} {_short(path)!r} cannot be read ({err.strerror}); fix the path in camera.source") from err
    if not is_file:
        raise CameraError(f"{what} {_short(path)!r} does not exist or is not a file; fix the path in camera.source")


def _short(path: Path, keep: int = 60) -> str:
    name = str(path)
    return name if len(name) <= keep else f"{name[:keep]}...({len(name)} characters)"


def imread_into(path: Path, buf: np.ndarray | None) -> np.ndarray:
    """Decode ``path`` as BGR into ``buf`` when the size matches, else into a new array.

    ``cv2.imread(path, dst)`` returns ``dst`` untouched when decoding fails, so the
    decoder is asked first whether it recognises the file.
    """
    name = str(path)
    if not cv2.haveImageReader(name):
        raise CameraError(f"image {name!r} cannot be decoded (not an image, or a format this OpenCV lacks)")
    check_pixels(path)  # from the header, before a decoder allocates anything
    if buf is not None:
        try:
            return cv2.imread(name, buf, cv2.IMREAD_COLOR)
        except (cv2.error, TypeError):
            # cv2.error: size differs from buf; TypeError: OpenCV < 4.10 has no dst overload.
            pass
    try:
        image = cv2.imread(name, cv2.IMREAD_COLOR)
    except cv2.error as err:  # OpenCV's own OPENCV_IO_MAX_IMAGE_PIXELS check, for headers we do not parse
        raise CameraError(f"image {name!r} cannot be decoded: {str(err).strip().splitlines()[-1]}") from err
    if image is None:
        raise CameraError(f"image {name!r} cannot be decoded")
    return image


class ImageCamera(BufferedCamera):
    """``image://PATH``: one still image, read once (or forever with ``loop=1``)."""

    def __init__(self, spec: str, path: str, *, loop: bool = False, fps: float = 30.0) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self.loop = loop
        self.fps = fps
        self.finite = not loop
        self._wiped = False

    def _open(self) -> None:
        _check_file(self.path, "image")
        self._buf = None
        self._adopt(imread_into(self.path, None))
        self._wiped = False

    def _on_wipe(self) -> None:
        self._wiped = True  # the still was zeroed: decode it again before the next frame

    def _read(self, timeout_s: float) -> Frame:
        if self._index >= 1 and not self.loop:
            raise EndOfStream(f"image {str(self.path)!r}: its one frame was already read")
        if self._wiped:
            self._adopt(imread_into(self.path, self._buf))
            self._wiped = False
        index = self._index
        self._index += 1
        return Frame(self._buf, _ts(index, self.fps), index)


class ImagesCamera(BufferedCamera):
    """``images://DIR``: the image files of a folder in name order, each once (or cycling with ``loop=1``)."""

    def __init__(self, spec: str, path: str, *, loop: bool = False, fps: float = 30.0) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self.loop = loop
        self.fps = fps
        self.finite = not loop
        self.files: list[Path] = []

    def _open(self) -> None:
        if not self.path.is_dir():
            raise CameraError(f"folder {str(self.path)!r} does not exist; fix the path in camera.source")
        self.files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
        if not self.files:
            raise CameraError(
                f"folder {str(self.path)!r} holds no image files ({' '.join(sorted(IMAGE_EXTS))})"
            )

    def _read(self, timeout_s: float) -> Frame:
        index = self._index
        if index >= len(self.files) and not self.loop:
            raise EndOfStream(f"folder {str(self.path)!r}: all {len(self.files)} images were read")
        path = self.files[index % len(self.files)]
        image = self._adopt(imread_into(path, self._buf))
        self._index += 1
        return Frame(image, _ts(index, self.fps), index)


CaptureFactory = Callable[[str], Any]


class VideoCamera(BufferedCamera):
    """``video://PATH``: frames in file order.

    ``loop=1`` rewinds at the end instead of raising EndOfStream. ``realtime=1``
    paces reads at the file's frame rate and, when the consumer is slower, skips
    (grabs without decoding) the frames it missed, like a live camera would.
    """

    def __init__(
        self,
        spec: str,
        path: str,
        *,
        loop: bool = False,
        realtime: bool = False,
        capture_factory: CaptureFactory | None = None,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(spec)
        self.path = Path(path)
        self.loop = loop
        self.realtime = realtime
        self.finite = not loop
        self._factory = capture_factory or cv2.VideoCapture
        self._clock_ns = clock_ns
        self._sleep = sleep
        self._cap: Any = None
        self.fps = 30.0
        self.skipped = 0  # frames dropped by realtime pacing
        self._t0_ns = 0
        self._since_rewind = 0

    def _open(self) -> None:
        _check_file(self.path, "video")
        cap = self._factory(str(self.path))
        self._cap = cap
        if not cap.isOpened():
            raise CameraError(f"video {str(self.path)!r} cannot be opened (unknown container/codec or unreadable)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not fps or not math.isfinite(fps) or fps <= 0:
            log.warning("video %s reports no frame rate; timestamps assume 30 fps", self.path)
            fps = 30.0
        self.fps = float(fps)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        check_size(w, h, self.path, "video")
        self._buf = None
        if w > 0 and h > 0:
            self._buf = self._alloc((h, w, 3))
        self.skipped = 0
        self._since_rewind = 0
        self._t0_ns = self._clock_ns()

    def _pace(self) -> None:
        """Realtime mode: wait for the next frame's due time, or skip the frames already missed."""
        due_ns = self._t0_ns + _ts(self._index, self.fps)
        now = self._clock_ns()
        if now < due_ns:
            self._sleep((due_ns - now) / _NS)
            return
        behind = int((now - self._t0_ns) * self.fps / _NS) - self._index
        for _ in range(max(0, behind)):
            if not self._cap.grab():
                return  # end of file: the read below handles it
            self._index += 1
            self._since_rewind += 1
            self.skipped += 1

    def _read(self, timeout_s: float) -> Frame:
        if self.realtime:
            self._pace()
        ok, image = self._cap.read(image=self._buf) if self._buf is not None else self._cap.read()
        if not ok:
            if not self.loop:
                raise EndOfStream(f"video {str(self.path)!r}: end of file after {self._index} frames")
            if self._since_rewind == 0:
                raise CameraError(f"video {str(self.path)!r}: no frame could be decoded")
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._since_rewind = 0
            ok, image = self._cap.read(image=self._buf) if self._buf is not None else self._cap.read()
            if not ok:
                raise CameraError(f"video {str(self.path)!r}: cannot rewind for loop=1")
        image = self._adopt(image)
        index = self._index
        self._index += 1
        self._since_rewind += 1
        return Frame(image, _ts(index, self.fps), index)

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()
