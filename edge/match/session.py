"""Per-session 1:1 evidence and decision, and how it combines with the liveness verdict.

:class:`MatchSession` holds, for one session only, the controller's template (parsed into a fixed
buffer) and the descriptors of the best-quality frames; :meth:`MatchSession.decide` compares them to
the template and :func:`combine` folds the answer into the liveness verdict:

* no template: the liveness verdict unchanged;
* liveness did not PASS: its verdict unchanged (an attack stays ``FAIL/SPOOF_DETECTED`` whoever it is);
* liveness PASS and the face matches: ``PASS``;
* liveness PASS and the face does not match: ``FAIL/FACE_MISMATCH``;
* liveness PASS but no frame gave a descriptor: ``TIMEOUT/NOT_ENOUGH_VOTES`` (never a PASS).

Everything here is per-person data: nothing is logged but counts, and :meth:`MatchSession.wipe` zeroes
every buffer (template, descriptors, qualities) when the session ends.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from edge.landmarks.base import FaceLandmarks
from edge.match import template as tpl
from edge.match.align import ChipExtractor, mesh_points5
from edge.service.wipe import wipe
from edge.types import Reason, Verdict, VerdictKind

log = logging.getLogger(__name__)

RULES = ("mean", "min")
#: Calibrated on the dev faces (9 East-Asian subjects, mesh-aligned, docs/MATCH.md): FMR 0.16 %, FNMR 1.8 % there.
#: dlib's customary 0.6 accepts 70 % of impostors on that population. Calibrate on your own.
DEFAULT_THRESHOLD = 0.38


@dataclass(frozen=True)
class MatchConfig:
    """``threshold``: the largest Euclidean distance that matches. ``frames``: how many best-quality
    frames' descriptors are kept. ``rule``: ``mean`` compares the mean of those descriptors, ``min``
    the closest one. ``max_runs``: descriptor computations per session at most (a bound on cost:
    ~0.2 s each on a Pi 4, float)."""

    threshold: float = DEFAULT_THRESHOLD
    frames: int = 3
    rule: str = "mean"
    max_runs: int = 6

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold < 4.0:
            raise ValueError(f"match threshold must be in (0, 4), got {self.threshold}")
        if not 1 <= self.frames <= 16:
            raise ValueError(f"match frames must be in 1..16, got {self.frames}")
        if self.rule not in RULES:
            raise ValueError(f"match rule must be one of {RULES}, got {self.rule!r}")
        if not self.frames <= self.max_runs <= 64:
            raise ValueError(f"match max_runs must be in frames..64, got {self.max_runs}")


@dataclass(frozen=True)
class MatchResult:
    """``matched`` is None when no frame gave a descriptor. ``distance`` is per-person data for
    offline tools (`edge match`, `edge eval --match`): never log it or send it on the wire."""

    matched: bool | None
    descriptors: int
    distance: float = dataclasses.field(default=math.nan, repr=False, compare=False)


@runtime_checkable
class FaceMatcher(Protocol):
    def describe(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        """(128,) float32 descriptor of the face whose mesh is ``landmarks`` in ``image`` (HxWx3 uint8
        BGR), borrowed until the next call; None when no chip can be made."""

    def wipe(self) -> None: ...

    def close(self) -> None: ...


class MeshMatcher:
    """The real stage: mesh -> dlib's five points -> 150x150 chip -> descriptor model."""

    def __init__(self, descriptor, extractor: ChipExtractor | None = None):
        self.descriptor = descriptor
        self.extractor = extractor or ChipExtractor()
        self._pts = np.zeros((5, 2), np.float64)

    @classmethod
    def from_registry(cls, variant: str = "float32", *, threads: int = 1) -> "MeshMatcher":
        from edge.match.descriptor import TFLiteDescriptor

        return cls(TFLiteDescriptor.from_registry(variant, threads=threads))

    def describe(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        pts = mesh_points5(landmarks.points_px, self._pts)
        if not np.isfinite(pts).all():
            return None
        chip = self.extractor.extract(image, pts)
        return self.descriptor.describe(chip)

    def wipe(self) -> None:
        self._pts.fill(0.0)
        self.extractor.wipe()
        self.descriptor.wipe()

    def close(self) -> None:
        self.wipe()
        self.descriptor.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class ScriptedMatcher:
    """Test stage: returns scripted descriptors (the last repeats); None entries mean 'no chip'."""

    def __init__(self, descriptors: Sequence[np.ndarray | None]):
        self._script = [None if d is None else np.asarray(d, np.float32).reshape(tpl.DIM) for d in descriptors]
        self._out = np.zeros(tpl.DIM, np.float32)
        self.calls = 0
        self.wiped = 0

    def describe(self, image: np.ndarray, landmarks: FaceLandmarks) -> np.ndarray | None:
        d = self._script[min(self.calls, len(self._script) - 1)]
        self.calls += 1
        if d is None:
            return None
        self._out[:] = d
        return self._out

    def wipe(self) -> None:
        self._out.fill(0.0)
        self.wiped += 1

    def close(self) -> None:
        self.wipe()


def frame_quality(landmarks: FaceLandmarks) -> float:
    """How good a frame is for matching: face size (eye-corner distance, pixels) times frontalness."""
    yaw, pitch = math.radians(landmarks.yaw_deg), math.radians(landmarks.pitch_deg)
    q = landmarks.face_size_px * max(math.cos(yaw), 0.0) * max(math.cos(pitch), 0.0)
    return q if math.isfinite(q) else 0.0


def distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))


class MatchSession:
    """One session's 1:1 evidence. ``start(template)`` arms it (or raises TemplateError), ``add`` offers
    a frame, ``decide`` answers, ``wipe`` zeroes everything. Buffers are allocated once."""

    def __init__(self, matcher: FaceMatcher, config: MatchConfig | None = None,
                 *, model_id: int = tpl.DEFAULT_MODEL_ID):
        self.matcher = matcher
        self.config = config or MatchConfig()
        self.model_id = model_id
        k = self.config.frames
        self._template = np.zeros(tpl.DIM, np.float32)
        self._desc = np.zeros((k, tpl.DIM), np.float32)
        self._quality = np.zeros(k, np.float64)
        self._mean = np.zeros(tpl.DIM, np.float64)
        self._n = 0
        self._runs = 0
        self.active = False
        self._enrol = None  # enrolment: receives the new template when the session decides
        self.observer = None  # offline tools (edge match): sees each MatchResult; never set in service

    def start_enrol(self, receive) -> None:
        """Arm for an enrolment session: ``decide`` hands the best frames' mean descriptor, as template
        bytes, to ``receive`` (the caller prints it only if the session PASSes)."""
        self.wipe()
        self._enrol = receive
        self.active = True

    def start(self, template: bytes | bytearray | memoryview) -> None:
        """Arm for a session with ``template``; a refused template raises TemplateError (nothing kept)."""
        self.wipe()
        tpl.decode(template, model_id=self.model_id, out=self._template)
        self.active = True

    def wants(self, quality: float) -> bool:
        """Whether a frame of ``quality`` would be used (so a caller can skip the mesh for it)."""
        if not self.active or self._runs >= self.config.max_runs:
            return False
        return self._n < len(self._quality) or quality > self._quality[: self._n].min()

    def add(self, image: np.ndarray, landmarks: FaceLandmarks, quality: float | None = None) -> bool:
        """Offer a frame that passed the quality gate; True when its descriptor was kept."""
        q = frame_quality(landmarks) if quality is None else float(quality)
        if q <= 0.0 or not self.wants(q):
            return False
        self._runs += 1
        d = self.matcher.describe(image, landmarks)
        if d is None:
            return False
        slot = self._n if self._n < len(self._quality) else int(np.argmin(self._quality[: self._n]))
        self._desc[slot] = d
        self._quality[slot] = q
        self._n = max(self._n, slot + 1)
        return True

    @property
    def descriptors(self) -> int:
        return self._n

    def decide(self) -> MatchResult:
        if not self.active:
            raise RuntimeError("decide() without start(): no template for this session")
        if self._n == 0:
            return MatchResult(None, 0)
        if self._enrol is not None:
            np.mean(self._desc[: self._n], axis=0, out=self._mean)
            self._enrol(tpl.encode(self._mean, model_id=self.model_id))
            return MatchResult(True, self._n)
        result = self._compare()
        if self.observer is not None:
            self.observer(result)
        return result

    def _compare(self) -> MatchResult:
        if self.config.rule == "mean":
            np.mean(self._desc[: self._n], axis=0, out=self._mean)
            dist = distance(self._mean, self._template)
        else:
            dist = min(distance(d, self._template) for d in self._desc[: self._n])
        return MatchResult(dist <= self.config.threshold, self._n, dist)

    def wipe(self) -> None:
        wipe(self._template, self._desc, self._quality, self._mean)
        self._enrol = None
        self._n = 0
        self._runs = 0
        self.active = False


def combine(verdict: Verdict, match: MatchResult | None) -> Verdict:
    """The session's verdict once the 1:1 answer is in (see the module doc). Pure."""
    if match is None or verdict.kind is not VerdictKind.PASS:
        return verdict
    if match.matched is None:
        return dataclasses.replace(verdict, kind=VerdictKind.TIMEOUT, reason=Reason.NOT_ENOUGH_VOTES)
    if not match.matched:
        return dataclasses.replace(verdict, kind=VerdictKind.FAIL, reason=Reason.FACE_MISMATCH)
    return verdict
