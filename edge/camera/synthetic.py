"""``synthetic://``: deterministic generated frames for tests, demos and benchmarks.

Patterns: ``noise`` (seeded noise), ``black``, ``face`` (a drawn face, or the
image given by ``image=PATH`` scaled to the frame). ``frames=N`` makes the
source finite; ``fail_after=N`` and ``freeze_after=N`` simulate a camera that
disappears or freezes after N frames, exercising the same CameraLost paths as
real hardware (a frozen synthetic camera repeats its timestamp and is caught
by the shared FreezeGuard, not by a special case).

Every per-frame write goes into the preallocated frame buffer from arrays
built at open(), so steady-state reads allocate no arrays.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.camera._common import BufferedCamera, FreezeGuard
from edge.camera.files import imread_into
from edge.errors import CameraError, CameraLost, EndOfStream
from edge.types import Frame

_NS = 1_000_000_000
_NOISE_PHASES = 8  # distinct noise frames, as row-shifted views of one pool


def draw_face(height: int, width: int) -> np.ndarray:
    """A plain frontal cartoon face on a grey background (BGR). Not a real person."""
    img = np.full((height, width, 3), 128, np.uint8)
    cx, cy = width // 2, height // 2
    fh = int(min(height * 0.6, width * 0.45 / 0.75))
    fw = int(fh * 0.75)
    skin = (140, 170, 215)
    cv2.ellipse(img, (cx, cy), (fw // 2, fh // 2), 0, 0, 360, skin, -1, cv2.LINE_AA)
    eye_dx, eye_y, eye_r = fw // 5, cy - fh // 8, max(2, fw // 14)
    for ex in (cx - eye_dx, cx + eye_dx):
        cv2.circle(img, (ex, eye_y), eye_r, (255, 255, 255), -1, cv2.LINE_AA)
        cv2.circle(img, (ex, eye_y), max(1, eye_r // 2), (60, 40, 30), -1, cv2.LINE_AA)
    cv2.line(img, (cx, cy - fh // 20), (cx - fw // 16, cy + fh // 10), (110, 130, 170), max(1, fw // 60), cv2.LINE_AA)
    cv2.ellipse(img, (cx, cy + fh // 5), (fw // 6, fh // 20), 0, 0, 180, (80, 80, 160), max(1, fw // 40), cv2.LINE_AA)
    return img


class SyntheticCamera(BufferedCamera):
    def __init__(
        self,
        spec: str,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        pattern: str = "noise",
        frames: int | None = None,
        fail_after: int | None = None,
        freeze_after: int | None = None,
        image: str | None = None,
        seed: int = 0,
        realtime: bool = False,
        max_repeats: int = 15,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(spec)
        self.width, self.height, self.fps = width, height, fps
        self.pattern = pattern
        self.frames = frames
        self.fail_after = fail_after
        self.freeze_after = freeze_after
        self.image = image
        self.seed = seed
        self.realtime = realtime
        self.finite = frames is not None
        self._clock_ns = clock_ns
        self._sleep = sleep
        # Offline: count-based only, so results never depend on machine speed.
        self._guard = FreezeGuard(spec, "timestamps", max_repeats)
        self._phases: list[np.ndarray] = []
        self._template: np.ndarray | None = None
        self._last_ts = 0
        self._t0_ns = 0
        self._prepared = False

    def _open(self) -> None:
        self._buf = self._alloc((self.height, self.width, 3))
        self._prepare()
        self._guard.reset()
        self._last_ts = -1
        self._t0_ns = self._clock_ns()

    def _on_wipe(self) -> None:
        self._prepared = False  # the pattern sources were zeroed with the frame buffer
        self._guard.reset()

    def _prepare(self) -> None:
        """Build the arrays every frame is copied from (once per open, or after a wipe)."""
        h, w = self.height, self.width
        self._pixel_buffers = [self._buf]
        self._phases = []
        self._template = None
        if self.pattern == "noise":
            rng = np.random.default_rng(self.seed)
            pool = self._own(rng.integers(0, 256, size=(h + _NOISE_PHASES, w, 3), dtype=np.uint8))
            self._phases = [pool[k : k + h] for k in range(_NOISE_PHASES)]
        elif self.pattern == "face":
            if self.image:
                path = Path(self.image)
                if not path.is_file():
                    raise CameraError(
                        f"synthetic image {self.image!r} (option image= of camera.source) does not exist"
                    )
                src = imread_into(path, None)
                self._template = self._own(cv2.resize(src, (w, h), interpolation=cv2.INTER_AREA))
                src.fill(0)  # the decoded face is pixels too: wipe the temporary as well
            else:
                self._template = self._own(draw_face(h, w))
        self._prepared = True

    def _read(self, timeout_s: float) -> Frame:
        index = self._index
        if self.frames is not None and index >= self.frames:
            raise EndOfStream(f"synthetic source: all frames={self.frames} were read")
        if self.fail_after is not None and index >= self.fail_after:
            raise CameraLost(f"synthetic camera lost after fail_after={self.fail_after} frames (simulated)")
        frozen = self.freeze_after is not None and index >= self.freeze_after
        if self.realtime:
            due = self._t0_ns + round(index * _NS / self.fps)
            now = self._clock_ns()
            if now < due:
                self._sleep((due - now) / _NS)
        if not self._prepared:
            self._prepare()
        if not frozen:
            buf = self._buf
            if self._phases:
                np.copyto(buf, self._phases[index % _NOISE_PHASES])
            elif self._template is not None:
                np.copyto(buf, self._template)
            else:
                buf.fill(0)
            ts = round(index * _NS / self.fps)
        else:
            ts = self._last_ts  # a frozen camera keeps delivering its last frame
        self._guard.observe(ts == self._last_ts)
        self._last_ts = ts
        self._index += 1
        return Frame(self._buf, ts, index)
