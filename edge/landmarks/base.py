"""The face-landmark protocol, its result type and its test implementation.

A landmark stage turns one detected face into a dense face mesh (478 points,
MediaPipe Face Landmarker v2 including the irises), the head pose and the 52
blendshape scores. Every array in a :class:`FaceLandmarks` is *borrowed*: a view
into the stage's preallocated buffers, valid until its next ``estimate()`` or
``wipe()``. Mesh points, blendshapes and poses are per-person data: never log,
send or keep them past the session.

Pose conventions (the person's own point of view, camera not mirrored):

* ``yaw_deg`` > 0: the person turns the head to *their* left. In an unmirrored
  camera image the nose then moves toward the image's RIGHT. (The action-dev
  clips label by image direction: their ``turn_right`` is our positive yaw.)
* ``pitch_deg`` > 0: chin up (looking up).
* ``roll_deg`` > 0: the head tilts toward the person's left shoulder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from edge.types import FaceBox

N_POINTS = 478
N_BLENDSHAPES = 52

#: MediaPipe's blendshape order (index = output position of face_blendshapes.tflite).
BLENDSHAPE_NAMES: tuple[str, ...] = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
    "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight",
    "eyeLookDownLeft", "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft",
    "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight",
    "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose",
    "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight",
    "mouthPucker", "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower",
    "mouthShrugUpper", "mouthSmileLeft", "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight",
    "mouthUpperUpLeft", "mouthUpperUpRight", "noseSneerLeft", "noseSneerRight",
)
assert len(BLENDSHAPE_NAMES) == N_BLENDSHAPES
BLENDSHAPE_INDEX = {name: i for i, name in enumerate(BLENDSHAPE_NAMES)}


@dataclass(frozen=True)
class FaceLandmarks:
    """One face's mesh, pose and blendshapes in one frame (borrowed arrays: see the module doc).

    ``points_px`` is (478, 3) float32: x, y in source-image pixels, z in pixels of the
    same scale (relative depth, smaller = nearer the camera). ``blendshapes`` is (52,)
    float32 in :data:`BLENDSHAPE_NAMES` order, each in [0, 1]. ``face_size_px`` is the
    scale for relative measures (the outer eye-corner distance in pixels).
    """

    points_px: np.ndarray = field(repr=False, compare=False)
    blendshapes: np.ndarray = field(repr=False, compare=False)
    presence: float
    yaw_deg: float
    pitch_deg: float
    roll_deg: float
    face_size_px: float
    box: FaceBox

    def blendshape(self, name: str) -> float:
        return float(self.blendshapes[BLENDSHAPE_INDEX[name]])


@runtime_checkable
class LandmarkEstimator(Protocol):
    def estimate(self, image: np.ndarray, face: FaceBox) -> FaceLandmarks | None:
        """The mesh of ``face`` in ``image`` (HxWx3 uint8 BGR), or None when the mesh model
        finds no face there (presence below its threshold)."""

    def wipe(self) -> None:
        """Zero every buffer that held pixels, points, poses or blendshapes."""

    def close(self) -> None: ...


@dataclass(frozen=True)
class ScriptedPose:
    """One scripted frame for :class:`ScriptedLandmarks`: pose in degrees and named blendshapes."""

    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    roll_deg: float = 0.0
    blendshapes: tuple[tuple[str, float], ...] = ()
    present: bool = True


class ScriptedLandmarks:
    """Test landmark stage: returns scripted poses and blendshapes (the last one repeats).

    The mesh is a fixed synthetic point set placed on the detector box, so code that
    needs points (box continuity, the 3-D check) gets plausible geometry.
    """

    def __init__(self, script: Sequence[ScriptedPose] = (ScriptedPose(),)):
        self._script = list(script) or [ScriptedPose()]
        self.calls = 0
        self.wiped = 0
        self._points = np.zeros((N_POINTS, 3), np.float32)
        self._blend = np.zeros(N_BLENDSHAPES, np.float32)
        rng = np.random.default_rng(0)
        self._unit = rng.uniform(-0.5, 0.5, size=(N_POINTS, 3)).astype(np.float32)

    def estimate(self, image: np.ndarray, face: FaceBox) -> FaceLandmarks | None:
        step = self._script[min(self.calls, len(self._script) - 1)]
        self.calls += 1
        if not step.present:
            return None
        self._points[:, 0] = face.cx + self._unit[:, 0] * face.w
        self._points[:, 1] = face.cy + self._unit[:, 1] * face.h
        self._points[:, 2] = self._unit[:, 2] * face.w
        self._blend.fill(0.0)
        for name, value in step.blendshapes:
            self._blend[BLENDSHAPE_INDEX[name]] = value
        return FaceLandmarks(
            points_px=self._points,
            blendshapes=self._blend,
            presence=1.0,
            yaw_deg=step.yaw_deg,
            pitch_deg=step.pitch_deg,
            roll_deg=step.roll_deg,
            face_size_px=0.45 * face.w,
            box=face,
        )

    def wipe(self) -> None:
        self._points.fill(0.0)
        self._blend.fill(0.0)
        self.wiped += 1

    def close(self) -> None:
        pass
