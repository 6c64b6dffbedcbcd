"""The face-detector protocol and its test implementation."""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from edge.types import FaceBox


@runtime_checkable
class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> tuple[FaceBox, ...]:
        """Faces in an HxWx3 uint8 BGR image, best first, in that image's pixels."""

    def close(self) -> None: ...


class StaticDetector:
    """Test detector: returns the same boxes for every frame (or a scripted sequence)."""

    def __init__(self, faces: Sequence[FaceBox] | Sequence[Sequence[FaceBox]] = ()):
        faces = list(faces)
        if faces and not isinstance(faces[0], FaceBox):
            self._script = [tuple(f) for f in faces]  # one entry per frame, last one repeats
        else:
            self._script = [tuple(faces)]
        self.calls = 0

    def detect(self, image: np.ndarray) -> tuple[FaceBox, ...]:
        out = self._script[min(self.calls, len(self._script) - 1)]
        self.calls += 1
        return out

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
