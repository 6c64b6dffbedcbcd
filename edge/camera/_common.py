"""Shared machinery of the camera backends: buffer ownership, lifecycle, freeze detection."""

from __future__ import annotations

import logging
import time
from typing import Callable

import numpy as np

from edge.errors import CameraError, CameraLost
from edge.types import Frame

log = logging.getLogger(__name__)


class BufferedCamera:
    """Base of every backend: owns the pixel buffers and implements the Camera lifecycle.

    Subclasses implement ``_open()``, ``_read(timeout_s) -> Frame`` and ``_release()``.
    Every array that ever holds pixels must come from :meth:`_alloc` (or be
    registered with :meth:`_own`) so that :meth:`close` can wipe it.
    """

    finite = False

    def __init__(self, spec: str) -> None:
        self.spec = spec
        self._pixel_buffers: list[np.ndarray] = []
        self._buf: np.ndarray | None = None
        self._opened = False
        self._index = 0

    # -- buffers -----------------------------------------------------------------------------
    def _alloc(self, shape: tuple[int, ...]) -> np.ndarray:
        return self._own(np.zeros(shape, np.uint8))

    def _own(self, array: np.ndarray) -> np.ndarray:
        self._pixel_buffers.append(array)
        return array

    def _adopt(self, image: np.ndarray) -> np.ndarray:
        """Make ``image`` the frame buffer when a backend had to allocate a new one (size changed).

        The old buffer is wiped at once: a borrowed frame is only valid until the next read.
        """
        if image is self._buf:
            return image
        old = self._buf
        if old is not None and old.shape == image.shape:
            np.copyto(old, image)  # same size but a fresh array: keep buffer identity stable
            return old
        if old is not None:
            old.fill(0)
            self._pixel_buffers = [b for b in self._pixel_buffers if b is not old]
        self._buf = self._own(image)
        return image

    @property
    def is_open(self) -> bool:
        return self._opened

    def wipe(self) -> None:
        """Zero every pixel buffer but keep the device open (sessions with keep_warm).

        Backends rebuild whatever they need lazily and reset their freeze detection,
        so the idle time between sessions is not mistaken for a frozen camera.
        """
        for buf in self._pixel_buffers:
            buf.fill(0)
        self._on_wipe()

    @property
    def buffer(self) -> np.ndarray | None:
        """The frame buffer that every Frame.image of this camera borrows (None before open)."""
        return self._buf

    # -- lifecycle ---------------------------------------------------------------------------
    def open(self) -> None:
        if self._opened:
            return
        self._index = 0
        # Buffers of an earlier open() were zeroed by its close(); start afresh.
        self._pixel_buffers = []
        self._buf = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        self._opened = True
        log.info("camera opened: %s", self.spec)

    def read(self, timeout_s: float = 1.0) -> Frame:
        if not self._opened:
            raise CameraError(f"camera {self.spec!r}: read() before open() (or after close()); use 'with camera:'")
        return self._read(timeout_s)

    def close(self) -> None:
        was_open = self._opened
        self._opened = False
        try:
            self._release()
        except Exception:  # release is best effort; the pixels are wiped regardless
            log.warning("camera %s: error while releasing the device", self.spec, exc_info=True)
        finally:
            # Privacy: frames are wiped when a session ends, even if a consumer still holds a view.
            for buf in self._pixel_buffers:
                buf.fill(0)
        if was_open:
            log.info("camera closed: %s", self.spec)

    def __enter__(self) -> "BufferedCamera":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec!r})"

    # -- backend hooks -----------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self, timeout_s: float) -> Frame:
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _on_wipe(self) -> None:
        pass


class FreezeGuard:
    """Declares a camera lost when its frames stop changing.

    ``observe(same)`` is called once per read with ``same=True`` when the frame is
    indistinguishable from the previous one (identical timestamp or content).
    More than ``max_repeats`` such reads in a row, or no change for longer than
    ``stall_s`` seconds of ``clock`` (when given), raise CameraLost. Offline
    sources pass ``stall_s=None`` so their behaviour does not depend on timing.
    """

    def __init__(
        self,
        source: str,
        what: str,
        max_repeats: int,
        stall_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_repeats < 1:
            raise ValueError("max_repeats must be >= 1")
        self.source = source
        self.what = what
        self.max_repeats = max_repeats
        self.stall_s = stall_s
        self._clock = clock
        self.reset()

    def reset(self) -> None:
        self._repeats = 0
        self._changed_at: float | None = None

    def observe(self, same: bool) -> None:
        now = self._clock() if self.stall_s is not None else 0.0
        if not same or self._changed_at is None:
            self._repeats = 0
            self._changed_at = now
            return
        self._repeats += 1
        if self._repeats > self.max_repeats:
            raise CameraLost(
                f"camera {self.source!r} froze: {self._repeats} reads in a row with identical {self.what}; "
                "check the cable/power of the camera; the next session reopens it"
            )
        if self.stall_s is not None and now - self._changed_at > self.stall_s:
            raise CameraLost(
                f"camera {self.source!r} froze: identical {self.what} for {now - self._changed_at:.2f} s "
                f"(limit {self.stall_s:g} s); check the cable/power of the camera; the next session reopens it"
            )


class ContentProbe:
    """Cheap "did the picture change?" test over a strided sample of a frame buffer.

    All arrays are made once here, so ``changed()`` allocates nothing per frame.
    Sampling every ``step``-th pixel is enough: real sensors have noise, so a
    live camera never repeats a sample exactly.
    """

    def __init__(self, buf: np.ndarray, step: int = 8) -> None:
        self.buf = buf
        self._view = buf[::step, ::step]
        # The samples hold (sub-sampled) pixels: the owning camera registers ``buffers`` for wiping.
        # The strided view is first copied into a contiguous sample: comparing the strided view
        # directly makes numpy allocate an iteration buffer on every call.
        self._cur = np.zeros(self._view.shape, np.uint8)
        self._prev = np.zeros(self._view.shape, np.uint8)
        self._diff = np.zeros(self._view.shape, np.bool_)
        self.buffers = (self._cur, self._prev)
        self._primed = False

    def changed(self) -> bool:
        np.copyto(self._cur, self._view)
        if not self._primed:
            self._cur, self._prev = self._prev, self._cur
            self._primed = True
            return True
        np.not_equal(self._cur, self._prev, out=self._diff)
        changed = bool(self._diff.any())
        if changed:
            self._cur, self._prev = self._prev, self._cur
        return changed
