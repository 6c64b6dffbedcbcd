"""Frame sources named by URL-style specs; see :mod:`edge.camera.spec` for the grammar.

``open_camera(spec)`` validates the spec and returns an *unopened* camera:
nothing touches a device or file until ``open()`` (or ``with camera:``).

Backends: image://, images://, video:// (edge.camera.files), synthetic://
(edge.camera.synthetic), v4l2:// (edge.camera.v4l2, OpenCV), picamera2://
(edge.camera.picam, imported lazily). Every backend lends frames from one
preallocated BGR buffer, overwritten in place on each read and zeroed by close().
"""

from __future__ import annotations

from typing import Any

from edge.camera.base import Camera
from edge.camera.spec import CameraSpec, parse_spec

_LOSS_KEYS = frozenset({"max_repeats", "stall_s"})

__all__ = ["Camera", "CameraSpec", "open_camera", "parse_spec", "open_with_retry", "reconnect", "Backoff"]


def open_camera(spec: str, **overrides: Any) -> Camera:
    """Return an unopened camera for ``spec``.

    ``overrides`` go to the backend's constructor (tests inject ``capture_factory``,
    ``module``, clocks; a deployment may tune ``max_repeats``/``stall_s``).
    Raises ConfigError (key ``camera.source``) for a malformed spec.
    """
    parsed = parse_spec(spec)
    o = dict(parsed.options)
    s = parsed.scheme
    # Loss tuning (camera.freeze_frames / camera.freeze_s) applies to live cameras; files cannot
    # freeze and synthetic:// counts frames only, so the same overrides work for every spec.
    if s in ("image", "images", "video"):
        overrides = {k: v for k, v in overrides.items() if k not in _LOSS_KEYS}
    elif s == "synthetic":
        overrides = {k: v for k, v in overrides.items() if k != "stall_s"}
    if s == "image":
        from edge.camera.files import ImageCamera

        return ImageCamera(parsed.text, parsed.target, loop=o["loop"], fps=o["fps"], **overrides)
    if s == "images":
        from edge.camera.files import ImagesCamera

        return ImagesCamera(parsed.text, parsed.target, loop=o["loop"], fps=o["fps"], **overrides)
    if s == "video":
        from edge.camera.files import VideoCamera

        return VideoCamera(parsed.text, parsed.target, loop=o["loop"], realtime=o["realtime"], **overrides)
    if s == "synthetic":
        from edge.camera.synthetic import SyntheticCamera

        return SyntheticCamera(parsed.text, **o, **overrides)
    if s == "v4l2":
        from edge.camera.v4l2 import V4L2Camera

        return V4L2Camera(parsed.text, parsed.target, **o, **overrides)
    if s == "picamera2":
        from edge.camera.picam import Picamera2Camera

        return Picamera2Camera(parsed.text, int(parsed.target), **o, **overrides)
    raise AssertionError(f"unhandled scheme {s}")  # parse_spec only returns known schemes


def __getattr__(name: str) -> Any:
    # The retry helpers import open_camera; load them lazily to avoid an import cycle.
    if name in ("open_with_retry", "reconnect", "Backoff"):
        from edge.camera import retry

        return getattr(retry, name)
    raise AttributeError(name)
