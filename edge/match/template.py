"""The 1:1 template: a compact, versioned, bounded format for one enrolled face.

A template is biometric data. The device never stores one: the controller (or the card) holds it and
sends it with each session request; the session copies it into a buffer that is wiped when it ends.

Layout (140 bytes, little-endian)::

    offset  size  field
    0       2     magic b"ET" (edge template)
    2       1     format version (1)
    3       1     model id (1 = dlib face-recognition ResNet v1, the .dat with sha256 55533b28...)
    4       4     scale, float32: descriptor[i] = value[i] * scale
    8       128   value, int8 (symmetric, -127..127)
    136     4     CRC-32 of bytes 0..135 (catches a damaged card or database row; the link's MAC
                  and encryption protect it in transit, not this)

Quantising the descriptor moves a distance by at most ~0.01 (measured: docs/MATCH.md), far below the
genuine/impostor gap. A template of another version or model is refused with :class:`TemplateError`:
descriptors of different models are not comparable, so a silent comparison would be a wrong answer.
"""

from __future__ import annotations

import base64
import binascii
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from edge.errors import EdgeError

MAGIC = b"ET"
VERSION = 1
DIM = 128
SIZE = 8 + DIM + 4
#: model id -> (manifest name, sha256 of the upstream weights whose descriptors the template holds)
MODELS = {1: ("dlib_resnet", "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30")}
DEFAULT_MODEL_ID = 1
_HEADER = struct.Struct("<2sBBf")
# A dlib descriptor's components lie well inside +-1 (its norm is ~1.4); anything far outside is not one.
_MAX_SCALE = 4.0 / 127.0


class TemplateError(EdgeError, ValueError):
    """A template was refused: wrong size, magic, version, model, checksum or values."""


@dataclass(frozen=True)
class Template:
    """A parsed template. ``descriptor`` is biometric data: never log or keep it past the session."""

    model_id: int
    descriptor: np.ndarray = field(repr=False, compare=False)  # (128,) float32


def encode(descriptor: np.ndarray, *, model_id: int = DEFAULT_MODEL_ID) -> bytes:
    """The 140-byte template of a float descriptor."""
    d = np.asarray(descriptor, dtype=np.float64).reshape(-1)
    if d.size != DIM or not np.isfinite(d).all():
        raise TemplateError(f"a template holds {DIM} finite values, got {d.size}")
    if model_id not in MODELS:
        raise TemplateError(f"unknown model id {model_id} (known: {sorted(MODELS)})")
    peak = float(np.abs(d).max())
    scale = float(np.float32(peak / 127.0)) if peak > 0 else 1.0 / 127.0
    if scale > _MAX_SCALE:
        raise TemplateError(f"descriptor values up to {peak:.3g}: not a face descriptor of this model")
    q = np.clip(np.round(d / scale), -127, 127).astype(np.int8)
    body = _HEADER.pack(MAGIC, VERSION, model_id, scale) + q.tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def decode(data: bytes | bytearray | memoryview, *, model_id: int = DEFAULT_MODEL_ID,
           out: np.ndarray | None = None) -> Template:
    """Parse and check a template; ``out`` (128 float32) receives the descriptor (a session's wiped buffer)."""
    if len(data) != SIZE:
        raise TemplateError(f"a template is {SIZE} bytes, got {len(data)}")
    raw = bytes(data)
    magic, version, mid, scale = _HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise TemplateError("not an edge face template (bad magic): enrol with `edge enroll`")
    if version != VERSION:
        raise TemplateError(f"template format version {version} is not supported (this device reads version "
                            f"{VERSION}): re-enrol the person with this release's `edge enroll`")
    (crc,) = struct.unpack_from("<I", raw, SIZE - 4)
    if zlib.crc32(raw[: SIZE - 4]) != crc:
        raise TemplateError("template checksum mismatch: the template is damaged; read the card again or re-enrol")
    if mid != model_id:
        made = MODELS.get(mid, (f"unknown model {mid}",))[0]
        raise TemplateError(f"template was made with {made} (model id {mid}), this device compares with "
                            f"{MODELS[model_id][0]} (model id {model_id}): descriptors of different models are "
                            "not comparable; re-enrol the person")
    if not (math.isfinite(scale) and 0.0 < scale <= _MAX_SCALE):
        raise TemplateError(f"template scale {scale!r} is out of range")
    q = np.frombuffer(raw, dtype=np.int8, count=DIM, offset=8)
    if (q == -128).any():
        raise TemplateError("template values out of range (-128 is never written)")
    if out is None:
        out = np.empty(DIM, np.float32)
    np.multiply(q, np.float32(scale), out=out, casting="unsafe")
    return Template(mid, out)


def to_text(template: bytes) -> str:
    """Base64 (what `edge enroll` prints)."""
    return base64.b64encode(template).decode("ascii")


def from_text(text: str) -> bytes:
    """Template bytes from base64 or hex text (bounded before decoding)."""
    t = text.strip()
    if len(t) > 4 * SIZE:
        raise TemplateError(f"template text is {len(t)} characters, longer than any template")
    if len(t) == 2 * SIZE and all(c in "0123456789abcdefABCDEF" for c in t):
        return bytes.fromhex(t)
    try:
        return base64.b64decode(t, validate=True)
    except (binascii.Error, ValueError) as err:
        raise TemplateError(f"template is neither base64 nor {2 * SIZE} hex digits ({err})") from err
