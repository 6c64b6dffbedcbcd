"""Small frozen result types shared by every stage.

Units are in the names (``elapsed_ms``, ``timestamp_ns``). None of these types
ever holds pixels except :class:`Frame`, which *borrows* its buffer from the
camera that produced it (see :mod:`edge.camera`).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np


class VerdictKind(str, enum.Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    NO_FACE = "NO_FACE"
    TIMEOUT = "TIMEOUT"
    FAULT = "FAULT"

    @property
    def code(self) -> int:
        """Wire code (one byte) of this verdict."""
        return _VERDICT_CODES[self]

    @classmethod
    def from_code(cls, code: int) -> "VerdictKind":
        for kind, c in _VERDICT_CODES.items():
            if c == code:
                return kind
        raise ValueError(f"unknown verdict code {code}")


_VERDICT_CODES = {
    VerdictKind.PASS: 1,
    VerdictKind.FAIL: 2,
    VerdictKind.NO_FACE: 3,
    VerdictKind.TIMEOUT: 4,
    VerdictKind.FAULT: 5,
}


class Reason(enum.IntEnum):
    """Why a verdict was reached, or why a frame did not vote.

    The integer value is the wire code; never renumber a member, only append.
    """

    NONE = 0
    # verdict reasons
    LIVE_CONFIRMED = 1
    SPOOF_DETECTED = 2
    NO_FACE_FOUND = 3
    NOT_ENOUGH_VOTES = 4  # faces were seen but too few frames were conclusive in time
    CHALLENGE_FAILED = 5  # active liveness: a wrong action, or the face changed mid-session
    CHALLENGE_TIMEOUT = 6  # active liveness: an asked action was not completed in its window
    NOT_3D = 7  # active liveness: the head turn moved the face like a plane (print, screen)
    FACE_MISMATCH = 8  # 1:1: the live face is not the template's owner
    FACE_CHANGED = 9  # active liveness: the face left, was swapped, or a second face came in
    # frame quality (a frame that fails one of these does not vote)
    MULTIPLE_FACES = 10
    FACE_TOO_SMALL = 11
    FACE_TOO_LARGE = 12
    FACE_NOT_CENTRED = 13
    FACE_TURNED = 14
    BLURRY = 15
    TOO_DARK = 16
    TOO_BRIGHT = 17
    SCREEN_PATTERN = 18
    # faults
    CAMERA_LOST = 32
    CAMERA_OPEN_FAILED = 33
    MODEL_ERROR = 34
    INTERNAL_ERROR = 35
    ABORTED = 36
    SHUTDOWN = 37
    CONTROLLER_LOST = 38
    TEMPLATE_INVALID = 39  # 1:1: the session's template was refused (size, version, model, checksum)


class Prompt(enum.IntEnum):
    """What a terminal should show the person. Integer value is the wire code."""

    NONE = 0
    LOOK_AT_CAMERA = 1
    MOVE_CLOSER = 2
    MOVE_BACK = 3
    CENTRE_FACE = 4
    FACE_CAMERA = 5
    HOLD_STILL = 6
    MORE_LIGHT = 7
    LESS_LIGHT = 8
    ONE_PERSON_ONLY = 9
    PROCESSING = 10
    # active liveness: one per challenge action, then "back to neutral" between actions
    BLINK = 11
    TURN_LEFT = 12  # the person's own left
    TURN_RIGHT = 13  # the person's own right
    LOOK_UP = 14
    OPEN_MOUTH = 15
    SMILE = 16
    BACK_TO_NEUTRAL = 17

    @property
    def text(self) -> str:
        return _PROMPT_TEXT[self]


_PROMPT_TEXT = {
    Prompt.NONE: "",
    Prompt.LOOK_AT_CAMERA: "Look at the camera",
    Prompt.MOVE_CLOSER: "Move closer",
    Prompt.MOVE_BACK: "Move back a little",
    Prompt.CENTRE_FACE: "Centre your face",
    Prompt.FACE_CAMERA: "Face the camera",
    Prompt.HOLD_STILL: "Hold still",
    Prompt.MORE_LIGHT: "Too dark",
    Prompt.LESS_LIGHT: "Too bright",
    Prompt.ONE_PERSON_ONLY: "One person at a time",
    Prompt.PROCESSING: "Checking...",
    Prompt.BLINK: "Blink",
    Prompt.TURN_LEFT: "Turn your head to your left",
    Prompt.TURN_RIGHT: "Turn your head to your right",
    Prompt.LOOK_UP: "Look up",
    Prompt.OPEN_MOUTH: "Open your mouth",
    Prompt.SMILE: "Smile",
    Prompt.BACK_TO_NEUTRAL: "Look straight at the camera",
}


@dataclass(frozen=True)
class Frame:
    """One captured frame.

    ``image`` is an HxWx3 uint8 BGR array *borrowed* from the camera: it is
    valid until the next ``read()`` or ``close()`` of that camera, which may
    overwrite it in place. Copy it only if you must keep it, and say why.
    """

    image: np.ndarray = field(repr=False, compare=False)
    timestamp_ns: int  # monotonic capture time
    index: int  # frame counter within the current open() of the source


@dataclass(frozen=True)
class FaceBox:
    """A detected face in source-image pixels.

    ``keypoints`` are BlazeFace's six points as (x, y) pixel pairs, in order:
    right eye, left eye, nose tip, mouth centre, right ear tragion, left ear
    tragion (the person's right/left).
    """

    x: float
    y: float
    w: float
    h: float
    score: float
    keypoints: tuple[tuple[float, float], ...] = ()

    @property
    def cx(self) -> float:
        return self.x + self.w / 2.0

    @property
    def cy(self) -> float:
        return self.y + self.h / 2.0

    @property
    def area(self) -> float:
        return max(self.w, 0.0) * max(self.h, 0.0)

    def iou(self, other: "FaceBox") -> float:
        x1, y1 = max(self.x, other.x), max(self.y, other.y)
        x2 = min(self.x + self.w, other.x + other.w)
        y2 = min(self.y + self.h, other.y + other.h)
        inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class LivenessScore:
    """Liveness of one face in one frame.

    ``live`` is the fused probability that the face is a bona fide presentation
    (0..1). ``per_model`` holds each model's live probability, in the order of
    the configured models. Scores are per person: never log them.
    """

    live: float
    per_model: tuple[float, ...] = ()


@dataclass(frozen=True)
class Verdict:
    """The one outcome of a session. Never carries an image or a score vector."""

    kind: VerdictKind
    reason: Reason
    frames_used: int  # frames that voted
    frames_seen: int  # frames read from the source
    elapsed_ms: int  # from session start to verdict, monotonic
    session_id: int = 0
    # Active liveness: the actions asked, in order, and what happened when (edge.challenge.
    # ChallengeEvent: times and action names only, never a measurement of the face).
    challenge: tuple[str, ...] = ()
    events: tuple = field(default=(), compare=False)

    @property
    def passed(self) -> bool:
        return self.kind is VerdictKind.PASS

    def to_dict(self) -> dict:
        return {
            "verdict": self.kind.value,
            "reason": self.reason.name,
            "frames_used": self.frames_used,
            "frames_seen": self.frames_seen,
            "elapsed_ms": self.elapsed_ms,
            "session_id": self.session_id,
            **({"challenge": list(self.challenge), "events": [e.to_dict() for e in self.events]} if self.challenge else {}),
        }
