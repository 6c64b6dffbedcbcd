"""Liveness stage: crop per the model manifest, MiniFASNet V2 + V1SE scoring."""

from edge.liveness.base import LivenessModel, ScriptedLiveness
from edge.liveness.crop import crop_box, crop_face

__all__ = ["LivenessModel", "ScriptedLiveness", "crop_box", "crop_face"]
