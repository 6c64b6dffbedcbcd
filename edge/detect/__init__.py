"""Face detection stage: BlazeFace (short range) decoded in numpy."""

from edge.detect.base import FaceDetector, StaticDetector

__all__ = ["FaceDetector", "StaticDetector"]
