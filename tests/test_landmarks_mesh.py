"""The Face Landmarker v2 stage: canonical-face parsing, pose conventions, the real mesh on real frames."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from edge.landmarks.base import N_BLENDSHAPES, N_POINTS, LandmarkEstimator
from edge.landmarks.geometry import CanonicalFace, GeometryError, PoseSolver, parse_geometry_metadata
from edge.models.registry import artifact_path
from edge.types import FaceBox


def _built(name: str):
    try:
        return artifact_path(name, "float32")
    except Exception as err:  # noqa: BLE001 - any reason the artifact is unusable
        pytest.skip(f"{name} not built ({err}); run: edge models build")


@pytest.fixture(scope="module")
def canonical() -> CanonicalFace:
    return parse_geometry_metadata(_built("face_geometry").read_bytes())


# -- the canonical face ---------------------------------------------------------------------------


def test_canonical_face_parses(canonical):
    assert canonical.vertices.shape == (468, 3)
    assert len(canonical.basis_ids) == 33 and abs(canonical.basis_weights.sum() - 1.0) < 1e-9
    v = canonical.vertices
    # x toward the image's right for a face looking at the camera: the person's right eye outer corner (33)
    # is on the image's left; y up (forehead above chin); z toward the camera (nose tip in front).
    assert v[33, 0] < 0 < v[263, 0]
    assert v[10, 1] > v[152, 1]
    assert v[1, 2] > v[33, 2]


def _key(num: int, wt: int) -> bytes:
    return bytes([(num << 3) | wt])


@pytest.mark.parametrize(
    "data, msg",
    [
        (b"\x0a\x80", "truncated varint"),
        (_key(1, 2) + b"\x05ab", "runs past"),
        (_key(7, 0) + b"\x01", "unexpected field 7"),
        (_key(1, 3), "wire type 3"),
        (_key(3, 0) + b"\x02", "input_source 2"),
        (_key(1, 2) + b"\x05" + _key(3, 5) + struct.pack("<f", 1.0), "vertex floats"),
        (b"\x00" * ((1 << 20) + 1), "more than"),
        (_key(2, 2) + b"\x02\x08\x01", "basis entry 0"),
    ],
)
def test_geometry_parser_refuses_bad_input(data, msg):
    with pytest.raises(GeometryError, match=msg):
        parse_geometry_metadata(data)


# -- pose conventions (synthetic: the canonical face rotated, then put in image axes) -------------


def _rot(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Rotation in the canonical frame giving our conventions' yaw, pitch, roll (degrees)."""
    b, a, g = math.radians(yaw), math.radians(-pitch), math.radians(-roll)
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    rz = np.array([[math.cos(g), -math.sin(g), 0], [math.sin(g), math.cos(g), 0], [0, 0, 1]])
    return ry @ rx @ rz


def _image_points(canonical: CanonicalFace, r: np.ndarray, scale: float = 12.0) -> np.ndarray:
    p = canonical.vertices @ r.T * scale
    out = np.zeros((N_POINTS, 3), np.float32)
    out[:468, 0] = 320 + p[:, 0]
    out[:468, 1] = 240 - p[:, 1]  # image y is down
    out[:468, 2] = -p[:, 2]  # smaller z = nearer the camera
    return out


@pytest.mark.parametrize("yaw, pitch, roll", [(0, 0, 0), (30, 0, 0), (-25, 10, 0), (0, -20, 0), (5, 5, 15), (0, 0, -30)])
def test_pose_recovers_angles(canonical, yaw, pitch, roll):
    solver = PoseSolver(canonical)
    got = solver.solve(_image_points(canonical, _rot(yaw, pitch, roll)))
    assert got == pytest.approx((yaw, pitch, roll), abs=1e-3)


def test_pose_signs_in_image_terms(canonical):
    """yaw > 0: nose toward the image's right; pitch > 0: nose up in the image; roll > 0: the
    person's left eye (image right) lower in the image."""
    solver = PoseSolver(canonical)
    for yaw, pitch, roll in [(20, 0, 0), (0, 20, 0), (0, 0, 20)]:
        pts = _image_points(canonical, _rot(yaw, pitch, roll))
        front = _image_points(canonical, np.eye(3))
        if yaw:
            assert pts[1, 0] > front[1, 0]
        if pitch:
            assert pts[1, 1] < front[1, 1]
        if roll:
            assert pts[263, 1] > pts[33, 1]
        y, p, r = solver.solve(pts)
        assert (y > 10) == bool(yaw) and (p > 10) == bool(pitch) and (r > 10) == bool(roll)


# -- the real models ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh():
    _built("face_mesh_v2")
    _built("face_blendshapes")
    _built("face_geometry")
    from edge.landmarks.mesh import MeshLandmarker

    m = MeshLandmarker.from_registry("float32", threads=1)
    yield m
    m.close()


def test_mesh_is_a_landmark_estimator(mesh):
    assert isinstance(mesh, LandmarkEstimator)


def test_mesh_on_noise_finds_no_face(mesh):
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    box = FaceBox(100, 60, 120, 120, 0.9, ((130, 100), (190, 100), (160, 130), (160, 160), (105, 110), (215, 110)))
    assert mesh.estimate(img, box) is None


def test_mesh_refuses_bad_image(mesh):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        mesh.estimate(np.zeros((10, 10), np.uint8), FaceBox(0, 0, 5, 5, 1.0))


def test_wipe_zeroes_and_close_is_idempotent():
    _built("face_mesh_v2")
    from edge.landmarks.mesh import MeshLandmarker
    from edge.service.wipe import is_zeroed

    m = MeshLandmarker.from_registry()
    img = np.full((200, 200, 3), 128, np.uint8)
    m.estimate(img, FaceBox(50, 50, 100, 100, 0.9, ((80, 90), (120, 90))))
    m.wipe()
    assert is_zeroed(m._crop, m._rgb, m._mapped, m._raw, m._points, m._blend, m._bs_pts)
    m.close()
    m.close()
    with pytest.raises(Exception, match="closed"):
        m.estimate(img, FaceBox(50, 50, 100, 100, 0.9))


# -- the quality gate's pose hook -----------------------------------------------------------------


def test_quality_gate_uses_the_mesh_pose_when_given():
    from edge.landmarks.base import ScriptedLandmarks, ScriptedPose
    from edge.quality import QualityGate
    from edge.types import Reason

    img = np.full((480, 640, 3), 128, np.uint8)
    img[::2, ::2] = 40  # texture, so the blur check passes
    kp = ((290.0, 220.0), (350.0, 220.0), (320.0, 250.0), (320.0, 280.0), (260.0, 230.0), (380.0, 230.0))
    face = FaceBox(250, 170, 140, 140, 0.95, kp)
    gate = QualityGate()
    plain = gate.assess(img, [face])
    assert plain.measures.pose_source == "keypoints" and Reason.FACE_TURNED not in plain.failures
    turned = ScriptedLandmarks([ScriptedPose(yaw_deg=50.0)]).estimate(img, face)
    res = gate.assess(img, [face], landmarks=turned)
    assert res.measures.pose_source == "mesh" and res.measures.yaw_deg == 50.0
    assert Reason.FACE_TURNED in res.failures
    # a mesh of another face is ignored
    other = ScriptedLandmarks([ScriptedPose(yaw_deg=50.0)]).estimate(img, FaceBox(0, 0, 60, 60, 0.9))
    assert gate.assess(img, [face], landmarks=other).measures.pose_source == "keypoints"
