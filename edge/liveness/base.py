"""The liveness protocol and its test implementation."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np

from edge.types import FaceBox, LivenessScore


@runtime_checkable
class LivenessModel(Protocol):
    def score(self, image: np.ndarray, face: FaceBox) -> LivenessScore:
        """Probability that ``face`` in ``image`` (HxWx3 uint8 BGR) is a live person."""

    def wipe(self) -> None:
        """Zero every buffer that held face pixels."""

    def close(self) -> None: ...


class ScriptedLiveness:
    """Test liveness model: returns scripted scores (last repeats), or raises what it is given."""

    def __init__(self, scores: Sequence[float | BaseException] | Callable[[int], float] = (0.9,)):
        self._scores = scores
        self.calls = 0
        self.wiped = 0

    def score(self, image: np.ndarray, face: FaceBox) -> LivenessScore:
        if callable(self._scores):
            s = self._scores(self.calls)
        else:
            s = self._scores[min(self.calls, len(self._scores) - 1)]
        self.calls += 1
        if isinstance(s, BaseException):
            raise s
        return LivenessScore(live=float(s), per_model=(float(s),))

    def wipe(self) -> None:
        self.wiped += 1

    def close(self) -> None:
        pass
