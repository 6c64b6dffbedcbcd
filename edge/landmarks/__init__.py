"""Face landmarks: mesh, head pose and blendshapes of one detected face (see :mod:`.base`)."""

from edge.landmarks.base import (
    BLENDSHAPE_INDEX,
    BLENDSHAPE_NAMES,
    N_BLENDSHAPES,
    N_POINTS,
    FaceLandmarks,
    LandmarkEstimator,
    ScriptedLandmarks,
    ScriptedPose,
)

__all__ = [
    "BLENDSHAPE_INDEX",
    "BLENDSHAPE_NAMES",
    "N_BLENDSHAPES",
    "N_POINTS",
    "FaceLandmarks",
    "LandmarkEstimator",
    "ScriptedLandmarks",
    "ScriptedPose",
]
