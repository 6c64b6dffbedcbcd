"""MediaPipe's canonical face (geometry pipeline metadata) and the head pose it gives.

``geometry_pipeline_metadata_landmarks.binarypb`` (inside the Face Landmarker
``.task``) is a small protobuf (``GeometryPipelineMetadata`` in MediaPipe's
``face_geometry/proto``): the canonical face mesh (468 vertices, x y z u v each,
centimetres, x toward the image's right when the face looks at the camera, y up,
z toward the camera) and a weighted basis of 33 landmarks for the Procrustes
fit, chosen by MediaPipe to respond to head pose and not to expressions. The
file is untrusted input: it is parsed by hand with bounds (size, field numbers,
wire types, counts) and anything unexpected is refused.

The pose is a weighted orthogonal Procrustes fit (rotation, scale, translation)
of the canonical basis to the mesh points, under a weak-perspective camera: the
mesh's z is in pixels of the x scale, as MediaPipe's landmark model gives it.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

import numpy as np

from edge.errors import ModelError

MAX_METADATA_BYTES = 1 << 20  # the real file is 19 kB
CANONICAL_VERTICES = 468
_VERTEX_FLOATS = 5  # VERTEX_PT: x, y, z, u, v
MAX_BASIS = 478


class GeometryError(ModelError, ValueError):
    """The geometry metadata file is not the canonical-face protobuf we expect."""


@dataclass(frozen=True)
class CanonicalFace:
    """The canonical face: ``vertices`` (468, 3) float64 in cm; ``basis_ids``/``basis_weights``
    the Procrustes landmark basis (weights sum to 1)."""

    vertices: np.ndarray = field(repr=False, compare=False)
    basis_ids: np.ndarray = field(repr=False, compare=False)
    basis_weights: np.ndarray = field(repr=False, compare=False)

    @property
    def basis_points(self) -> np.ndarray:
        return self.vertices[self.basis_ids]


def _varint(buf: bytes, i: int, end: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= end:
            raise GeometryError("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7
        if shift > 63:
            raise GeometryError("varint longer than 10 bytes")


def _fields(buf: bytes, start: int, end: int):
    """(field number, wire type, value) of one message; value is an int, or (start, end) of the payload."""
    i = start
    while i < end:
        key, i = _varint(buf, i, end)
        num, wt = key >> 3, key & 7
        if num == 0:
            raise GeometryError("field number 0")
        if wt == 0:
            v, i = _varint(buf, i, end)
            yield num, wt, v
        elif wt == 2:
            n, i = _varint(buf, i, end)
            if n > end - i:
                raise GeometryError(f"field {num}: length {n} runs past the message")
            yield num, wt, (i, i + n)
            i += n
        elif wt == 5:
            if i + 4 > end:
                raise GeometryError(f"field {num}: truncated fixed32")
            yield num, wt, (i, i + 4)
            i += 4
        elif wt == 1:
            if i + 8 > end:
                raise GeometryError(f"field {num}: truncated fixed64")
            yield num, wt, (i, i + 8)
            i += 8
        else:
            raise GeometryError(f"field {num}: unsupported wire type {wt}")


def _floats(buf: bytes, wt: int, v, out: list[float], limit: int) -> None:
    """A repeated float, packed (wire type 2) or not (5)."""
    if wt == 5:
        out.append(struct.unpack_from("<f", buf, v[0])[0])
    elif wt == 2:
        a, b = v
        if (b - a) % 4:
            raise GeometryError("packed float field length is not a multiple of 4")
        out.extend(struct.unpack_from(f"<{(b - a) // 4}f", buf, a))
    else:
        raise GeometryError(f"float field with wire type {wt}")
    if len(out) > limit:
        raise GeometryError(f"more than {limit} floats")


def parse_geometry_metadata(data: bytes) -> CanonicalFace:
    """Parse ``geometry_pipeline_metadata_landmarks.binarypb``; raises :class:`GeometryError`."""
    if len(data) > MAX_METADATA_BYTES:
        raise GeometryError(f"geometry metadata is {len(data)} bytes, more than {MAX_METADATA_BYTES}")
    vb: list[float] = []
    basis: list[tuple[int, float]] = []
    mesh_seen = False
    for num, wt, v in _fields(data, 0, len(data)):
        if num == 1 and wt == 2:  # canonical_mesh: Mesh3d
            if mesh_seen:
                raise GeometryError("two canonical meshes")
            mesh_seen = True
            for mnum, mwt, mv in _fields(data, *v):
                if mnum in (1, 2) and mwt == 0:
                    if mv != 0:  # VERTEX_PT / TRIANGLE are the only types MediaPipe defines
                        raise GeometryError(f"mesh field {mnum}: unknown type {mv}")
                elif mnum == 3:
                    _floats(data, mwt, mv, vb, CANONICAL_VERTICES * _VERTEX_FLOATS)
                elif mnum == 4:
                    pass  # triangle index buffer: not needed for the pose
                else:
                    raise GeometryError(f"mesh: unexpected field {mnum} (wire type {mwt})")
        elif num == 2 and wt == 2:  # procrustes_landmark_basis: WeightedLandmarkRef
            lid, weight = None, None
            for bnum, bwt, bv in _fields(data, *v):
                if bnum == 1 and bwt == 0:
                    lid = bv
                elif bnum == 2 and bwt == 5:
                    weight = struct.unpack_from("<f", data, bv[0])[0]
                else:
                    raise GeometryError(f"basis: unexpected field {bnum} (wire type {bwt})")
            if lid is None or weight is None or not (0 <= lid < CANONICAL_VERTICES) or not (weight > 0):
                raise GeometryError(f"basis entry {len(basis)}: landmark {lid}, weight {weight}")
            basis.append((lid, weight))
            if len(basis) > MAX_BASIS:
                raise GeometryError(f"more than {MAX_BASIS} basis landmarks")
        elif num == 3 and wt == 0:  # input_source
            if v not in (0, 1):
                raise GeometryError(f"input_source {v}: not the face-landmark pipeline")
        else:
            raise GeometryError(f"unexpected field {num} (wire type {wt})")
    if len(vb) != CANONICAL_VERTICES * _VERTEX_FLOATS:
        raise GeometryError(f"{len(vb)} vertex floats, expected {CANONICAL_VERTICES * _VERTEX_FLOATS}")
    if len(basis) < 4:
        raise GeometryError(f"{len(basis)} basis landmarks, need at least 4")
    verts = np.asarray(vb, dtype=np.float64).reshape(CANONICAL_VERTICES, _VERTEX_FLOATS)[:, :3].copy()
    if not np.all(np.isfinite(verts)):
        raise GeometryError("non-finite vertex coordinates")
    ids = np.asarray([b[0] for b in basis], dtype=np.intp)
    w = np.asarray([b[1] for b in basis], dtype=np.float64)
    for arr in (verts, ids, w):
        arr.setflags(write=False)
    return CanonicalFace(verts, ids, w / w.sum())


class PoseSolver:
    """Weighted Procrustes of the canonical basis onto mesh points; yaw, pitch, roll in degrees.

    Conventions (see :mod:`edge.landmarks.base`): yaw > 0 when the person turns to their left
    (nose toward the image's right), pitch > 0 chin up, roll > 0 toward the person's left shoulder.
    The canonical centroid and spread are computed once; per call the work is a 3x3 SVD.
    """

    def __init__(self, face: CanonicalFace):
        self.ids = face.basis_ids
        w = face.basis_weights
        c = face.basis_points
        self._w = w
        self._cc = c - w @ c  # weighted-centred canonical basis
        n = len(self.ids)
        self._p32 = np.zeros((n, 3), dtype=np.float32)
        self._p = np.zeros((n, 3), dtype=np.float64)
        self._pc = np.zeros((n, 3), dtype=np.float64)
        self._mu = np.zeros(3, dtype=np.float64)
        self._h = np.zeros((3, 3), dtype=np.float64)
        self.rotation = np.eye(3, dtype=np.float64)
        self._ccw = np.ascontiguousarray(self._cc.T * self._w)  # weighted basis, transposed once

    def solve(self, points: np.ndarray) -> tuple[float, float, float]:
        """(yaw, pitch, roll) of the mesh ``points`` (N, 3) float32: image x, y (down), z (smaller =
        nearer). Allocates only numpy's 3x3 SVD temporaries."""
        p = self._p
        np.take(points, self.ids, axis=0, out=self._p32)
        p[...] = self._p32
        # Image axes -> the canonical face's: x right, y up, z toward the camera.
        p[:, 1] *= -1.0
        p[:, 2] *= -1.0
        np.matmul(self._w, p, out=self._mu)
        np.subtract(p, self._mu, out=self._pc)
        np.matmul(self._ccw, self._pc, out=self._h)  # sum_i w_i c_i p_i^T
        u, _, vt = np.linalg.svd(self._h)
        # Determinants by hand: np.linalg.det kept ~28 B per call alive (measured with tracemalloc
        # over 600 frames), and the hot loop must not grow.
        d = 1.0 if _det3(u) * _det3(vt) > 0 else -1.0
        vt[2] *= d
        r = np.matmul(vt.T, u.T, out=self.rotation)  # p ~ s R c + t
        # R = Ry(yaw) Rx(a) Rz(g): Rx's positive angle moves the nose down, Rz's the head top to
        # the image's left (the person's right shoulder); flip both to our conventions.
        pitch = math.degrees(math.asin(max(-1.0, min(1.0, float(r[1, 2])))))
        yaw = math.degrees(math.atan2(float(r[0, 2]), float(r[2, 2])))
        roll = -math.degrees(math.atan2(float(r[1, 0]), float(r[1, 1])))
        return yaw, pitch, roll

    def wipe(self) -> None:
        for a in (self._p32, self._p, self._pc, self._mu, self._h):
            a.fill(0.0)
        self.rotation[...] = np.eye(3)


def _det3(m: np.ndarray) -> float:
    a, b, c = float(m[0, 0]), float(m[0, 1]), float(m[0, 2])
    d, e, f = float(m[1, 0]), float(m[1, 1]), float(m[1, 2])
    g, h, i = float(m[2, 0]), float(m[2, 1]), float(m[2, 2])
    return a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g)
