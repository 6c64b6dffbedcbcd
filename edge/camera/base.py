"""The camera protocol: every frame source looks like this.

A camera is named by a URL-style spec (``video://clip.mp4``, ``images://dir``,
``synthetic://?faces=1``, ``v4l2:///dev/video0?width=640``, ``picamera2://0``)
so one string moves a deployment from a file to real hardware.

Lifecycle: construct (validates the spec, touches no device) -> ``open()``
(acquires the device) -> ``read()`` ... -> ``close()`` (releases the device and
zeroes every buffer that held pixels; idempotent). Cameras are context
managers; ``with cam:`` opens and closes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from edge.types import Frame


@runtime_checkable
class Camera(Protocol):
    spec: str
    #: True for sources that end (image, video file, folder): reaching the end
    #: raises EndOfStream, which ends a session normally rather than as a FAULT.
    finite: bool

    def open(self) -> None:
        """Acquire the device. Raises CameraError with a fix-it message."""

    def read(self, timeout_s: float = 1.0) -> Frame:
        """Return the newest frame (skip, never queue, stale ones).

        The returned ``Frame.image`` is borrowed and valid until the next
        ``read()`` or ``close()``. Raises ``CameraLost`` when the device is gone,
        reads fail or frames freeze (identical timestamps), and ``EndOfStream``
        at the end of a finite source.
        """

    def close(self) -> None:
        """Release the device and zero every pixel buffer. Idempotent."""

    def __enter__(self) -> "Camera": ...

    def __exit__(self, *exc) -> None: ...
