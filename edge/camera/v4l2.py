"""``v4l2:///dev/videoN``: USB/UVC (and other V4L2) cameras through OpenCV's V4L2 backend.

Newest-frame policy: the driver queue is asked for one buffer
(CAP_PROP_BUFFERSIZE=1; some drivers keep more) and, when the consumer was
slower than the camera, the stale queued frames are dropped with grab()
(dequeue without decoding) before the frame that is decoded. read() then
decodes straight into the camera's buffer with retrieve(buf), which OpenCV
reuses when shape and type match.

Camera loss:
- grab() fails (device unplugged: ENODEV; driver error) -> CameraLost at once;
- no frame within ``timeout_s`` -> CameraLost. OpenCV's V4L2 backend blocks in
  select() for OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT seconds (default 10, integer);
  open() sets it to 1 unless the environment already does, so a stalled camera
  returns within ~1 s instead of 10;
- frozen frames: identical driver timestamps (CAP_PROP_POS_MSEC) or identical
  content (strided sample) for more than ``max_repeats`` reads or ``stall_s``
  seconds -> CameraLost.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any, Callable

import cv2

from edge.camera._common import BufferedCamera, ContentProbe, FreezeGuard
from edge.errors import CameraError, CameraLost
from edge.types import Frame

log = logging.getLogger(__name__)

VIDEO_GROUP_FIX = "add the user to the video group: sudo usermod -aG video $USER, then log out and in again"

CaptureFactory = Callable[[str], Any]


def _fourcc_str(code: float) -> str:
    c = int(code)
    if c <= 0:
        return "?"
    return "".join(chr((c >> (8 * i)) & 0xFF) for i in range(4))


def check_device_access(device: str, opener: Callable[..., int] = os.open) -> None:
    """Open and close the node once so permission and absence give a clear CameraError.

    OpenCV only says "can't open camera by index"; the errno here says why.
    """
    try:
        fd = opener(device, os.O_RDWR | os.O_NONBLOCK)
    except OSError as err:
        if err.errno in (errno.EACCES, errno.EPERM):
            raise CameraError(f"permission denied opening {device}: {VIDEO_GROUP_FIX}") from err
        if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
            raise CameraError(
                f"camera {device} does not exist (unplugged?); run 'edge cameras' to list cameras "
                "and fix camera.source"
            ) from err
        if err.errno == errno.EBUSY:
            raise CameraError(f"camera {device} is busy: another program uses it; stop it and retry") from err
        raise CameraError(f"cannot open {device}: {err.strerror}") from err
    os.close(fd)


def _default_factory(device: str) -> Any:
    # OpenCV reads this once per process, at the first V4L2 select(); 1 s is its minimum.
    os.environ.setdefault("OPENCV_VIDEOIO_V4L_SELECT_TIMEOUT", "1")
    return cv2.VideoCapture(device, cv2.CAP_V4L2)


class V4L2Camera(BufferedCamera):
    def __init__(
        self,
        spec: str,
        device: str,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        format: str | None = None,
        capture_factory: CaptureFactory | None = None,
        max_repeats: int = 15,
        stall_s: float | None = 0.9,
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[..., int] = os.open,
    ) -> None:
        super().__init__(spec)
        self.device = device
        self.width, self.height, self.fps = width, height, fps
        self.fourcc = format
        self._factory = capture_factory
        self._clock = clock
        self._opener = opener
        self._max_repeats = max_repeats
        self._stall_s = stall_s
        self._cap: Any = None
        self._probe: ContentProbe | None = None
        self._ts_guard = FreezeGuard(spec, "driver timestamps", max_repeats, stall_s, clock)
        self._content_guard = FreezeGuard(spec, "picture content", max_repeats, stall_s, clock)
        self._queue_len = 1
        self._last_read: float | None = None
        self._last_pos_ms = -1.0
        self.dropped = 0  # stale frames discarded by the newest-frame policy

    def _open(self) -> None:
        if self._factory is None:
            check_device_access(self.device, self._opener)
            cap = _default_factory(self.device)
        else:
            cap = self._factory(self.device)
        self._cap = cap
        if not cap.isOpened():
            raise CameraError(
                f"OpenCV cannot open {self.device} with V4L2; run 'edge cameras' to see what it supports"
            )
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if self.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))  # persistence-ok: a FOURCC code, not a writer
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        got_fps = cap.get(cv2.CAP_PROP_FPS)
        got_fourcc = _fourcc_str(cap.get(cv2.CAP_PROP_FOURCC))
        if (w, h) != (self.width, self.height) or (self.fourcc and got_fourcc != self.fourcc):
            log.warning(
                "camera %s delivers %dx%d %s at %.3g fps (asked %dx%d %s at %.3g fps); "
                "run 'edge cameras' for supported modes",
                self.device, w, h, got_fourcc, got_fps, self.width, self.height, self.fourcc or "any", self.fps,
            )
        if got_fps and got_fps > 0:
            self.fps = float(got_fps)
        queue = cap.get(cv2.CAP_PROP_BUFFERSIZE)
        self._queue_len = int(queue) if queue and queue > 0 else 1
        self._buf = self._alloc((h, w, 3)) if w > 0 and h > 0 else None
        self._probe = None
        self._ts_guard.reset()
        self._content_guard.reset()
        self._last_read = None
        self._last_pos_ms = -1.0
        self.dropped = 0

    def _drop_stale(self, now: float) -> None:
        """Dequeue frames that waited in the driver while the consumer was busy."""
        if self._last_read is None:
            return
        stale = int((now - self._last_read) * self.fps)
        for _ in range(min(stale, self._queue_len)):
            if not self._cap.grab():
                return  # the grab below reports the loss
            self.dropped += 1
            self._index += 1

    def _read(self, timeout_s: float) -> Frame:
        cap = self._cap
        start = self._clock()
        self._drop_stale(start)
        try:
            ok = cap.grab()
        except cv2.error as err:
            raise CameraLost(f"camera {self.device}: read error: {err}") from err
        if not ok:
            raise CameraLost(
                f"camera {self.device} stopped delivering frames (unplugged, powered down or driver error)"
            )
        waited = self._clock() - start
        if self._last_read is not None and waited > timeout_s:
            raise CameraLost(f"camera {self.device}: no frame for {waited:.2f} s (timeout {timeout_s:g} s)")
        ok, image = cap.retrieve(self._buf) if self._buf is not None else cap.retrieve()
        if not ok or image is None:
            raise CameraLost(f"camera {self.device}: a grabbed frame could not be decoded")
        ts_ns = time.monotonic_ns()
        image = self._adopt(image)
        if self._probe is None or self._probe.buf is not image:
            self._probe = ContentProbe(image)
            for sample in self._probe.buffers:
                self._own(sample)
        pos_ms = cap.get(cv2.CAP_PROP_POS_MSEC)
        if pos_ms > 0:  # 0 or -1: the backend gives no driver timestamp
            self._ts_guard.observe(pos_ms == self._last_pos_ms)
            self._last_pos_ms = pos_ms
        self._content_guard.observe(not self._probe.changed())
        self._last_read = self._clock()
        index = self._index
        self._index += 1
        return Frame(image, ts_ns, index)

    def _on_wipe(self) -> None:
        # Between sessions the camera idles: that is not a freeze. The content sample was
        # zeroed too, so the first frame of the next session counts as a change.
        self._ts_guard.reset()
        self._content_guard.reset()

    def _release(self) -> None:
        cap, self._cap = self._cap, None
        if cap is not None:
            cap.release()  # OpenCV's own mmap'd driver buffers go back to the kernel here
