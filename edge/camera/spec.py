"""Parse and validate camera specs (``camera.source``) without touching any device.

Grammar::

    spec     := scheme "://" target [ "?" options ] | path
    options  := key "=" value { "&" key "=" value }
    path     := a bare file or folder path (no scheme): an image file -> image://,
                a video file -> video://, a folder -> images://

Every scheme has a fixed set of options; an unknown option, a repeated one, a
malformed ``key=value`` pair or a value out of range raises
:class:`~edge.errors.ConfigError` naming the key ``camera.source``, the bad
part and the accepted form. Parsing never opens files or devices, so a typo
in the config fails at start-up, not at the first session.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from edge.errors import ConfigError

KEY = "camera.source"

NAME_MAX = 255  # bytes per path component on Linux file systems
IMAGE_EXTS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm", ".pgm", ".pnm"})
VIDEO_EXTS = frozenset({".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpg", ".mjpeg", ".h264", ".mpg"})

SCHEMES = ("image", "images", "video", "synthetic", "v4l2", "picamera2")
PATTERNS = ("noise", "black", "face")
PICAMERA2_FORMATS = ("RGB888", "YUV420")

_FOURCC_RE = re.compile(r"^[A-Z0-9 ]{4}$")


@dataclass(frozen=True)
class CameraSpec:
    """A parsed spec: ``scheme``, ``target`` (path, device or index) and typed ``options``."""

    text: str
    scheme: str
    target: str
    options: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.options.get(key, default)


# --- option value parsers: (parse(str) -> value, accepted form) ----------------------------------


def _int(lo: int, hi: int) -> tuple[Callable[[str], int], str]:
    def parse(text: str) -> int:
        value = int(text, 10)
        if not lo <= value <= hi:
            raise ValueError(text)
        return value

    return parse, f"an integer {lo}..{hi}"


def _float(lo: float, hi: float) -> tuple[Callable[[str], float], str]:
    def parse(text: str) -> float:
        value = float(text)
        if not lo <= value <= hi:  # also rejects nan
            raise ValueError(text)
        return value

    return parse, f"a number {lo:g}..{hi:g}"


def _bool() -> tuple[Callable[[str], bool], str]:
    table = {"1": True, "0": False, "true": True, "false": False, "yes": True, "no": False}

    def parse(text: str) -> bool:
        return table[text.lower()]

    return parse, "0 or 1"


def _choice(choices: tuple[str, ...], *, upper: bool = False) -> tuple[Callable[[str], str], str]:
    def parse(text: str) -> str:
        value = text.upper() if upper else text
        if value not in choices:
            raise ValueError(text)
        return value

    return parse, "one of " + "|".join(choices)


def _fourcc() -> tuple[Callable[[str], str], str]:
    def parse(text: str) -> str:
        value = text.upper()
        if not _FOURCC_RE.match(value):
            raise ValueError(text)
        return value

    return parse, "a four-character code such as MJPG or YUYV"


def _path() -> tuple[Callable[[str], str], str]:
    def parse(text: str) -> str:
        if not text:
            raise ValueError(text)
        return unquote(text)

    return parse, "a file path"


_SIZE = {"width": _int(16, 8192), "height": _int(16, 8192)}
_FPS = {"fps": _float(0.1, 240.0)}

_OPTIONS: dict[str, dict[str, tuple[Callable[[str], Any], str]]] = {
    "image": {"loop": _bool(), **_FPS},
    "images": {"loop": _bool(), **_FPS},
    "video": {"loop": _bool(), "realtime": _bool()},
    "synthetic": {
        **_SIZE,
        **_FPS,
        "pattern": _choice(PATTERNS),
        "frames": _int(1, 10**9),
        "fail_after": _int(0, 10**9),
        "freeze_after": _int(1, 10**9),
        "image": _path(),
        "seed": _int(0, 2**31 - 1),
        "realtime": _bool(),
    },
    "v4l2": {**_SIZE, **_FPS, "format": _fourcc()},
    "picamera2": {**_SIZE, **_FPS, "format": _choice(PICAMERA2_FORMATS, upper=True)},
}

_DEFAULTS: dict[str, dict[str, Any]] = {
    "image": {"loop": False, "fps": 30.0},
    "images": {"loop": False, "fps": 30.0},
    "video": {"loop": False, "realtime": False},
    "synthetic": {"width": 640, "height": 480, "fps": 30.0, "pattern": "noise", "seed": 0, "realtime": False},
    "v4l2": {"width": 640, "height": 480, "fps": 30.0},
    "picamera2": {"width": 640, "height": 480, "fps": 30.0, "format": "RGB888"},
}

_FORMS = {
    "image": "image://PATH[?loop=0|1&fps=N]",
    "images": "images://DIR[?loop=0|1&fps=N]",
    "video": "video://PATH[?loop=0|1&realtime=0|1]",
    "synthetic": (
        "synthetic://?width=640&height=480&fps=30&pattern=noise|black|face"
        "[&frames=N&fail_after=N&freeze_after=N&image=PATH&seed=N&realtime=0|1]"
    ),
    "v4l2": "v4l2:///dev/videoN[?width=640&height=480&fps=30&format=MJPG] (or v4l2://N)",
    "picamera2": "picamera2://N[?width=640&height=480&fps=30&format=RGB888|YUV420]",
}

ANY_FORM = (
    "a spec such as " + ", ".join(_FORMS[s] for s in SCHEMES)
    + ", or a bare path to an image file (" + " ".join(sorted(IMAGE_EXTS)) + "), a video file ("
    + " ".join(sorted(VIDEO_EXTS)) + ") or a folder of images"
)


def form_of(scheme: str) -> str:
    """The accepted form of one scheme, for error messages."""
    return _FORMS[scheme]


def _bad(value: object, expected: str) -> ConfigError:
    return ConfigError(KEY, value, expected)


def parse_spec(text: str) -> CameraSpec:
    """Parse ``text`` into a :class:`CameraSpec`; raise ConfigError on any malformed part."""
    if not isinstance(text, str) or not text.strip():
        raise _bad(text, ANY_FORM)
    text = text.strip()
    if "://" not in text:
        return _parse_bare_path(text)

    scheme, rest = text.split("://", 1)
    scheme = scheme.lower()
    if scheme not in _OPTIONS:
        raise _bad(f"{scheme}://", "a scheme among " + ", ".join(f"{s}://" for s in SCHEMES))
    target, _, query = rest.partition("?")
    options = dict(_DEFAULTS[scheme])
    options.update(_parse_query(scheme, query))
    target = _check_target(scheme, unquote(target))
    if scheme == "picamera2" and options["format"] == "YUV420":
        for key in ("width", "height"):
            if options[key] % 2:
                raise _bad(f"{key}={options[key]}", f"an even {key} for format=YUV420 (4:2:0 halves the chroma planes)")
    return CameraSpec(text=text, scheme=scheme, target=target, options=MappingProxyType(options))


def _check_name_lengths(text: str) -> None:
    """A path with a component longer than NAME_MAX (255 bytes) can never exist: say so at parse time."""
    long = next((part for part in text.split("/") if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX), None)
    if long is not None:
        raise _bad(text[:60] + f"...({len(text)} characters)", f"a path whose every component is at most {NAME_MAX} bytes")


def _parse_bare_path(text: str) -> CameraSpec:
    _check_name_lengths(text)
    suffix = Path(text).suffix.lower()
    if suffix in IMAGE_EXTS:
        scheme = "image"
    elif suffix in VIDEO_EXTS:
        scheme = "video"
    elif os.path.isdir(text):  # False (not an error) for a path that cannot be stat'ed
        scheme = "images"
    else:
        raise _bad(text, ANY_FORM)
    return CameraSpec(text=text, scheme=scheme, target=text, options=MappingProxyType(dict(_DEFAULTS[scheme])))


def _parse_query(scheme: str, query: str) -> dict[str, Any]:
    allowed = _OPTIONS[scheme]
    out: dict[str, Any] = {}
    if not query:
        return out
    for part in query.split("&"):
        if not part:
            continue  # tolerate "?a=1&&b=2" and a trailing "&"
        key, sep, raw = part.partition("=")
        if not sep or not key:
            raise _bad(part, f"key=value pairs joined by '&', as in {_FORMS[scheme]}")
        if key not in allowed:
            raise _bad(part, f"an option of {scheme}:// among {', '.join(allowed)}: {_FORMS[scheme]}")
        if key in out:
            raise _bad(part, f"each option at most once in {_FORMS[scheme]}")
        parse, form = allowed[key]
        try:
            out[key] = parse(unquote(raw))
        except (ValueError, KeyError) as err:
            raise _bad(part, f"{key}=<{form}>") from err
    return out


def _check_target(scheme: str, target: str) -> str:
    if scheme in ("image", "images", "video"):
        if not target:
            raise _bad(f"{scheme}://", f"a path after the scheme: {_FORMS[scheme]}")
        _check_name_lengths(target)
        return target
    if scheme == "synthetic":
        if target:
            raise _bad(target, f"nothing between 'synthetic://' and '?': {_FORMS[scheme]}")
        return ""
    if scheme == "v4l2":
        if target.isdigit():
            return f"/dev/video{int(target)}"
        if not target.startswith("/dev/") or len(target) <= len("/dev/"):
            raise _bad(target or "v4l2://", f"a device path or index: {_FORMS[scheme]}")
        return target
    # picamera2
    if not target:
        return "0"
    if not target.isdigit():
        raise _bad(target, f"a camera index (0, 1, ...): {_FORMS[scheme]}")
    return str(int(target))
