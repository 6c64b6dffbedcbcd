"""The 3-D check on synthetic geometry: a solid face turning vs a plane (print, screen) moved in 3-D."""

from __future__ import annotations

import math
import tracemalloc

import numpy as np
import pytest

from edge.landmarks.base import N_BLENDSHAPES, N_POINTS, FaceLandmarks
from edge.liveness.depth import (
    DEFAULT_THRESHOLD,
    LEFT_EYE_OUTER,
    NOSE_TIP,
    RIGHT_EYE_OUTER,
    STABLE_POINTS,
    DepthCheck,
    nose_offset,
    planar_residual,
)
from edge.types import FaceBox
from edge.eval.depth3d import render_sheet, rotation

FOCAL = 800.0
DIST = 50.0  # cm: a face 9 cm between the outer eye corners spans ~140 px


def face_cloud(rng: np.random.Generator, flat: bool = False) -> np.ndarray:
    """A face-like point set in cm (x right, y down, z away from the camera): a curved face with a nose.

    Depths like a real face's: the nose tip 4 cm in front of the eye corners, cheeks curving away.
    ``flat`` puts every point on one plane (a photo of that face).
    """
    p = np.zeros((N_POINTS, 3))
    p[:, 0] = rng.uniform(-6.0, 6.0, N_POINTS)
    p[:, 1] = rng.uniform(-7.0, 7.0, N_POINTS)
    r2 = (p[:, 0] ** 2 + (p[:, 1] + 1.0) ** 2)
    p[:, 2] = 0.06 * p[:, 0] ** 2 - 4.0 * np.exp(-r2 / 3.0)  # cheeks recede, nose protrudes
    p[RIGHT_EYE_OUTER] = (-4.45, -2.6, 1.2)
    p[LEFT_EYE_OUTER] = (4.45, -2.6, 1.2)
    p[NOSE_TIP] = (0.0, 1.1, -4.0)
    if flat:
        p[:, 2] = 0.0
    return p


def project(p: np.ndarray, yaw=0.0, pitch=0.0, roll=0.0, shift=(0.0, 0.0, 0.0), noise_px=0.0,
            rng: np.random.Generator | None = None) -> np.ndarray:
    q = p @ rotation(yaw, pitch, roll).T + np.array([shift[0], shift[1], DIST + shift[2]])
    xy = FOCAL * q[:, :2] / q[:, 2:3] + np.array([320.0, 240.0])
    if noise_px:
        xy = xy + rng.normal(0.0, noise_px, xy.shape)
    return xy


def landmarks(xy: np.ndarray, yaw: float = 0.0) -> FaceLandmarks:
    pts = np.zeros((N_POINTS, 3), np.float32)
    pts[:, :2] = xy
    size = float(np.linalg.norm(xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]))
    return FaceLandmarks(points_px=pts, blendshapes=np.zeros(N_BLENDSHAPES, np.float32), presence=1.0,
                         yaw_deg=yaw, pitch_deg=0.0, roll_deg=0.0, face_size_px=size,
                         box=FaceBox(200, 100, 240, 240, 1.0))


IDX = np.asarray(STABLE_POINTS)


def _iod(xy):
    return float(np.linalg.norm(xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]))


@pytest.mark.parametrize("yaw", [15.0, 20.0, 30.0, -25.0])
def test_a_turning_solid_face_leaves_a_residual_no_homography_explains(yaw):
    rng = np.random.default_rng(1)
    face = face_cloud(rng)
    a, b = project(face), project(face, yaw=yaw)
    r = planar_residual(a[IDX], b[IDX], 0.5 * (_iod(a) + _iod(b)))
    assert r > 1.5 * DEFAULT_THRESHOLD  # real turns of 15 degrees measured 0.024-0.029 (docs/ACTIVE-EVAL.md)
    with DepthCheck() as check:
        check.set_reference(landmarks(a))
        res = check.measure(landmarks(b, yaw=yaw))
    assert res.is_3d and res.turned
    assert res.residual == pytest.approx(r, rel=1e-6)
    assert abs(res.parallax) > 0.1  # the nose moved across the face
    assert math.copysign(1.0, res.yaw_delta_deg) == math.copysign(1.0, yaw)


@pytest.mark.parametrize("seed", range(6))
def test_a_plane_moved_in_3d_is_explained_by_one_homography(seed):
    rng = np.random.default_rng(seed)
    photo = face_cloud(rng, flat=True)
    yaw = rng.uniform(15, 35) * rng.choice((-1, 1))
    a = project(photo, *rng.uniform(-4, 4, 3), noise_px=0.5, rng=rng)
    b = project(photo, yaw=yaw, pitch=rng.uniform(-8, 8), roll=rng.uniform(-5, 5),
                shift=(rng.uniform(-3, 3), rng.uniform(-3, 3), rng.uniform(-8, 8)), noise_px=0.5, rng=rng)
    with DepthCheck() as check:
        check.set_reference(landmarks(a))
        res = check.measure(landmarks(b, yaw=yaw))
    assert not res.is_3d
    # No more than the 0.5 px jitter (on a ~140 px face) alone leaves without any motion.
    still = planar_residual(a[IDX], project(photo, noise_px=0.5, rng=rng)[IDX], _iod(a))
    assert res.residual < 1.5 * still
    assert abs(res.parallax) < 0.08  # perspective alone shifts the nose a little, a 3-D nose far more


def test_residual_grows_with_the_turn_and_is_zero_without_one():
    face = face_cloud(np.random.default_rng(2))
    a = project(face)
    rs = [planar_residual(a[IDX], project(face, yaw=y)[IDX], _iod(a)) for y in (0.0, 5.0, 10.0, 20.0, 30.0)]
    assert rs[0] < 1e-6
    assert all(x < y for x, y in zip(rs, rs[1:]))


def test_measure_matches_the_pure_function_and_copies_its_input():
    face = face_cloud(np.random.default_rng(3))
    a, b = project(face), project(face, yaw=20)
    la, lb = landmarks(a), landmarks(b, yaw=20)
    check = DepthCheck()
    check.set_reference(la)
    la.points_px.fill(0.0)  # a borrowed buffer reused by the landmark stage
    res = check.measure(lb)
    scale = 0.5 * (_iod(a) + _iod(b))
    assert res.residual == pytest.approx(planar_residual(a[IDX], b[IDX], scale), rel=1e-6)
    assert res.points == len(STABLE_POINTS)
    assert res.threshold == DEFAULT_THRESHOLD


def test_degenerate_points_fail_secure():
    check = DepthCheck()
    flat = np.full((N_POINTS, 2), 100.0)
    check.set_reference(landmarks(flat))
    res = check.measure(landmarks(flat))
    assert not res.is_3d


def test_measure_before_reference_and_after_wipe_refuses():
    check = DepthCheck()
    xy = project(face_cloud(np.random.default_rng(4)))
    with pytest.raises(RuntimeError, match="set_reference"):
        check.measure(landmarks(xy))
    check.set_reference(landmarks(xy))
    assert check.has_reference
    check.close()
    check.close()  # idempotent
    assert not check.has_reference
    assert not check._ref.any() and not check._cur.any()
    with pytest.raises(RuntimeError):
        check.measure(landmarks(xy))


def test_too_few_points_and_bad_settings_are_refused():
    with pytest.raises(ValueError, match="threshold"):
        DepthCheck(0.0)
    with pytest.raises(ValueError, match="min_turn"):
        DepthCheck(min_turn_deg=-1)
    with pytest.raises(ValueError, match="8 points"):
        DepthCheck(indices=(1, 2, 3))
    check = DepthCheck()
    lm = landmarks(np.zeros((N_POINTS, 2)))
    short = FaceLandmarks(points_px=lm.points_px[:100], blendshapes=lm.blendshapes, presence=1.0, yaw_deg=0,
                          pitch_deg=0, roll_deg=0, face_size_px=1.0, box=lm.box)
    with pytest.raises(ValueError, match="do not hold point"):
        check.set_reference(short)
    with pytest.raises(ValueError, match="N >= 5"):
        planar_residual(np.zeros((3, 2)), np.zeros((3, 2)))


def test_the_stable_subset_leaves_out_expression_points():
    lips_and_lids = {0, 13, 14, 17, 61, 291, 78, 308, 159, 145, 386, 374, 33, 133, 263, 362}
    iris = set(range(468, 478))
    assert not (set(STABLE_POINTS) & (lips_and_lids | iris))
    assert NOSE_TIP in STABLE_POINTS
    assert len(set(STABLE_POINTS)) == len(STABLE_POINTS) and max(STABLE_POINTS) < 468


def test_nose_offset_is_signed_along_the_eye_line():
    xy = np.zeros((N_POINTS, 2))
    xy[RIGHT_EYE_OUTER], xy[LEFT_EYE_OUTER], xy[NOSE_TIP] = (0, 0), (100, 0), (60, 40)
    assert nose_offset(xy) == pytest.approx(0.1)
    xy[NOSE_TIP] = (40, 40)
    assert nose_offset(xy) == pytest.approx(-0.1)


def test_measure_allocates_no_arrays_per_call():
    face = face_cloud(np.random.default_rng(5))
    la, lb = landmarks(project(face)), landmarks(project(face, yaw=20), yaw=20)
    check = DepthCheck()
    check.set_reference(la)
    check.measure(lb)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            check.measure(lb)
        grown = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert grown < 4096  # no per-call buffer of the point set's size (151 x 2 x 8 B = 2.4 KB) is kept


def test_render_sheet_is_the_identity_when_flat_and_unrotated():
    rng = np.random.default_rng(6)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    out = render_sheet(img, (40.0, 30.0), rotation(0, 0, 0), focal=100.0)
    assert np.abs(out[2:-2, 2:-2].astype(int) - img[2:-2, 2:-2]).max() <= 1
    turned = render_sheet(img, (40.0, 30.0), rotation(30, 0, 0), focal=100.0)
    assert turned[30, 40].tolist() == pytest.approx(img[30, 40].tolist(), abs=2)  # the centre stays put
    bent = render_sheet(img, (40.0, 30.0), rotation(0, 0, 0), focal=100.0, bend_radius=200.0)
    assert np.abs(bent[28:33, 38:43].astype(int) - img[28:33, 38:43]).max() <= 2


def _pair(kind, residual, dyaw, source="x"):
    from edge.eval.depth3d import Pair
    from edge.liveness.depth import DepthResult

    return Pair(kind, source, DepthResult(residual, 0.0, dyaw, 0.0, 151, DEFAULT_THRESHOLD, abs(dyaw) >= 12,
                                          residual >= DEFAULT_THRESHOLD))


def test_depth_report_separation_figures():
    from edge.eval.depth3d import build_report

    pairs = ([_pair("turn", r, 25) for r in (0.03, 0.05, 0.08)] + [_pair("turn_frame", 0.025, 16)]
             + [_pair("planar", r, 3) for r in (0.004, 0.006, 0.01)] + [_pair("bent", 0.012, 5)])
    rep = build_report(pairs, DEFAULT_THRESHOLD)
    assert rep.auc_flat == 1.0 and rep.auc_all == 1.0 and math.isnan(rep.auc_turned)
    assert rep.suggested == pytest.approx(math.sqrt(0.012 * 0.03))
    text = rep.render()
    assert "AUC real turns vs flat photos: 1.0000" in text and "no photo pair reached it" in text
    assert "12-18" in text
    rep = build_report(pairs + [_pair("planar", 0.04, 20)], DEFAULT_THRESHOLD)
    assert rep.auc_flat == pytest.approx(11 / 12) and rep.auc_turned == pytest.approx(2 / 3)


def test_cli_depth3d_prints_the_report(tmp_path, monkeypatch, capsys):
    import edge.eval.depth3d as depth3d
    import edge.eval.meshes as meshes
    from edge.eval.cli import main

    class Fake:
        closed = False

        def close(self):
            Fake.closed = True

    seen = {}

    def fake_run(shared, measure, *, draws, seed, threshold, progress):
        seen.update(draws=draws, seed=seed, threshold=threshold)
        return depth3d.build_report([_pair("turn", 0.05, 25), _pair("planar", 0.005, 3)], threshold)

    monkeypatch.setattr(meshes, "default_measurer", lambda cfg=None: Fake())
    monkeypatch.setattr(depth3d, "run", fake_run)
    assert main(["eval", str(tmp_path), "--depth3d", "--quiet"]) == 0
    assert "AUC real turns vs flat photos: 1.0000" in capsys.readouterr().out
    assert seen == {"draws": 2, "seed": 7, "threshold": DEFAULT_THRESHOLD} and Fake.closed
