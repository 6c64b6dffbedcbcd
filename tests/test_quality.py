"""Quality gate: every check and reason code on synthetic frames and hand-made FaceBoxes."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge.quality import (
    PROMPTS,
    QualityConfig,
    QualityGate,
    assess,
    count_faces,
    estimate_pose,
)
from edge.types import FaceBox, Prompt, Reason

W, H = 640, 480


def frontal_keypoints(x, y, w, h, *, yaw_off=0.0, r=0.55, roll_deg=0.0, mirror=False):
    """Six BlazeFace keypoints of a synthetic face box; ``yaw_off`` shifts the nose along the eye axis
    (in inter-eye distances), ``r`` places the nose between eye line and mouth."""
    cx, cy = x + w / 2, y + h / 2
    d = 0.4 * w
    eye_y = cy - 0.15 * h
    mouth_y = cy + 0.25 * h
    re, le = (cx - d / 2, eye_y), (cx + d / 2, eye_y)
    if mirror:
        re, le = le, re
    nose = (cx + yaw_off * d * (-1 if mirror else 1), eye_y + r * (mouth_y - eye_y))
    pts = [re, le, nose, (cx, mouth_y), (cx - 0.5 * w, eye_y + 0.1 * h), (cx + 0.5 * w, eye_y + 0.1 * h)]
    if roll_deg:
        a = math.radians(roll_deg)
        ca, sa = math.cos(a), math.sin(a)
        pts = [(cx + (px - cx) * ca - (py - cy) * sa, cy + (px - cx) * sa + (py - cy) * ca) for px, py in pts]
    return tuple(pts)


def face(x=220, y=120, w=200, h=200, score=0.95, **kp):
    return FaceBox(x, y, w, h, score, frontal_keypoints(x, y, w, h, **kp))


def frame(box=None, lo=60, hi=190, background=128, squares=8, blur_sigma=0.0):
    """Grey frame with a checkerboard 'face' of ``squares`` x ``squares`` cells inside ``box``."""
    img = np.full((H, W, 3), background, dtype=np.uint8)
    if box is not None:
        x0, y0 = int(box.x), int(box.y)
        x1, y1 = int(box.x + box.w), int(box.y + box.h)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        cell = ((xx - x0) * squares // (x1 - x0) + (yy - y0) * squares // (y1 - y0)) % 2
        sel = (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
        img[yy[sel], xx[sel]] = np.where(cell[sel][..., None] == 1, hi, lo).astype(np.uint8)
    if blur_sigma:
        img = cv2.GaussianBlur(img, (0, 0), blur_sigma)
    return img


@pytest.fixture
def gate():
    with QualityGate() as g:
        yield g


def test_good_face_passes(gate):
    f = face()
    r = gate.assess(frame(f), [f])
    assert r.ok and r.reason is Reason.NONE and r.prompt is Prompt.NONE and r.failures == ()
    m = r.measures
    assert m.faces == 1 and m.face_fraction == pytest.approx(200 / 640)
    assert abs(m.yaw_deg) < 1 and abs(m.pitch_deg) < 1 and abs(m.roll_deg) < 1
    assert m.sharpness > 1000 and 100 < m.brightness < 150 and m.inside_fraction == 1.0
    assert r.face is f


def test_no_face(gate):
    r = gate.assess(frame(), [])
    assert (r.ok, r.reason, r.prompt) == (False, Reason.NO_FACE_FOUND, Prompt.LOOK_AT_CAMERA)


def test_two_faces(gate):
    a, b = face(x=60), face(x=380)
    r = gate.assess(frame(a), [a, b])
    assert (r.reason, r.prompt, r.measures.faces) == (Reason.MULTIPLE_FACES, Prompt.ONE_PERSON_ONLY, 2)


def test_weak_or_tiny_second_detection_does_not_count(gate):
    main = face()
    weak = FaceBox(20, 20, 180, 180, 0.6)  # below second_face_min_score
    tiny = FaceBox(20, 300, 60, 60, 0.99)  # narrower than half the main face
    assert count_faces([weak, main, tiny], QualityConfig()) == (main, 1)
    assert gate.assess(frame(main), [weak, main, tiny]).ok


def test_small_face(gate):
    f = face(x=300, y=220, w=50, h=50)  # 50/640 < 0.12
    r = gate.assess(frame(f), [f])
    assert (r.reason, r.prompt) == (Reason.FACE_TOO_SMALL, Prompt.MOVE_CLOSER)


def test_small_face_in_pixels_on_a_small_frame():
    f = FaceBox(50, 40, 28, 28, 0.9, frontal_keypoints(50, 40, 28, 28))  # 28/160 = 0.175 but < 32 px
    img = cv2.resize(frame(FaceBox(200, 160, 112, 112, 0.9)), (160, 120), interpolation=cv2.INTER_AREA)
    assert assess(img, [f]).reason is Reason.FACE_TOO_SMALL
    assert assess(img, [f], QualityConfig(min_face_px=16)).reason is not Reason.FACE_TOO_SMALL


def test_large_face(gate):
    f = face(x=10, y=0, w=620, h=470)
    r = gate.assess(frame(f), [f])
    assert (r.reason, r.prompt) == (Reason.FACE_TOO_LARGE, Prompt.MOVE_BACK)


@pytest.mark.parametrize("x, y", [(0, 180), (520, 180), (260, 0), (260, 360)])
def test_off_centre_face(gate, x, y):
    f = face(x=x, y=y, w=120, h=120)  # inside the frame, but its centre within 15 % of an edge
    r = gate.assess(frame(f), [f])
    assert (r.reason, r.prompt) == (Reason.FACE_NOT_CENTRED, Prompt.CENTRE_FACE)


def test_face_partly_outside_the_frame(gate):
    f = face(x=-70, y=120, w=300, h=200)  # centre x = 80/640 ok for margin 0.1, but 23 % of the box is outside
    r = assess(frame(f), [f], QualityConfig(centre_margin=0.1))
    assert r.measures.inside_fraction == pytest.approx(230 / 300)
    assert r.reason is Reason.FACE_NOT_CENTRED


@pytest.mark.parametrize(
    "kp",
    [
        {"yaw_off": 0.4 * math.tan(math.radians(45))},  # yaw 45 deg
        {"yaw_off": -0.4 * math.tan(math.radians(45))},
        {"r": 0.55 - 0.23 * math.tan(math.radians(45))},  # chin up 45 deg
        {"r": 0.55 + 0.23 * math.tan(math.radians(45))},  # chin down 45 deg
        {"roll_deg": 50},
    ],
)
def test_turned_face(gate, kp):
    f = face(**kp)
    r = gate.assess(frame(f), [f])
    assert (r.reason, r.prompt) == (Reason.FACE_TURNED, Prompt.FACE_CAMERA)


def test_pose_estimates():
    x, y, w, h = 0, 0, 200, 200
    yaw, pitch, roll = estimate_pose(frontal_keypoints(x, y, w, h, yaw_off=0.4 * math.tan(math.radians(20))))
    assert yaw == pytest.approx(20, abs=1e-6) and pitch == pytest.approx(0, abs=1e-6) and roll == 0
    yaw, pitch, _ = estimate_pose(frontal_keypoints(x, y, w, h, r=0.55 - 0.23 * math.tan(math.radians(25))))
    assert pitch == pytest.approx(25, abs=1e-6) and yaw == pytest.approx(0, abs=1e-6)
    # mirrored frames and rolled heads read the same yaw/pitch magnitude
    off = 0.4 * math.tan(math.radians(20))
    assert abs(estimate_pose(frontal_keypoints(x, y, w, h, yaw_off=off, mirror=True))[0]) == pytest.approx(20)
    yaw, pitch, roll = estimate_pose(frontal_keypoints(x, y, w, h, yaw_off=off, roll_deg=30))
    assert (yaw, roll) == (pytest.approx(20), pytest.approx(30))
    # no keypoints: unmeasurable, and the gate does not fail on it
    assert all(math.isnan(v) for v in estimate_pose(()))
    f = FaceBox(220, 120, 200, 200, 0.9)
    assert assess(frame(f), [f]).ok
    # coincident eyes: yaw from the ears instead
    kp = list(frontal_keypoints(x, y, w, h))
    kp[0] = kp[1]
    kp[2] = (100 + 0.7 * math.tan(math.radians(30)) * 200, kp[2][1])  # ears are 200 px apart
    assert estimate_pose(kp)[0] == pytest.approx(30)


def test_blurred_face(gate):
    f = face()
    sharp = gate.assess(frame(f), [f])
    blurred = gate.assess(frame(f, blur_sigma=10), [f])
    assert sharp.ok
    assert (blurred.reason, blurred.prompt) == (Reason.BLURRY, Prompt.HOLD_STILL)
    assert blurred.measures.sharpness < 15 < sharp.measures.sharpness


def test_sharpness_is_scale_invariant(gate):
    # 128 and 256 px faces resize to the same 64x64 checkerboard
    small, large = face(x=256, y=176, w=128, h=128), face(x=192, y=112, w=256, h=256)
    s1 = gate.assess(frame(small), [small]).measures.sharpness
    s2 = gate.assess(frame(large), [large]).measures.sharpness
    assert s1 == pytest.approx(s2, rel=0.01)
    # the same blur relative to the face reads (nearly) the same on both
    b1 = gate.assess(frame(small, blur_sigma=3), [small]).measures.sharpness
    b2 = gate.assess(frame(large, blur_sigma=6), [large]).measures.sharpness
    assert b1 == pytest.approx(b2, rel=0.1) and b1 < s1 / 4


def test_dark_face(gate):
    f = face()
    r = gate.assess(frame(f, lo=10, hi=40, background=20), [f])
    assert (r.reason, r.prompt) == (Reason.TOO_DARK, Prompt.MORE_LIGHT)


def test_bright_face(gate):
    f = face()
    r = gate.assess(frame(f, lo=225, hi=255, background=240), [f])
    assert (r.reason, r.prompt) == (Reason.TOO_BRIGHT, Prompt.LESS_LIGHT)


def test_mostly_saturated_face_is_too_bright_even_with_moderate_mean(gate):
    f = face(x=192, y=112, w=256, h=256)
    img = frame(f, lo=40, hi=90)
    img[112 : 112 + 154, 192 : 192 + 256] = 255  # top 60 % of the face saturated: mean ~180
    r = gate.assess(img, [f])
    assert r.measures.brightness < 220 and r.measures.bright_fraction > 0.5
    assert r.reason is Reason.TOO_BRIGHT


def test_reason_order_and_all_failures(gate):
    f = face(x=-20, y=120, yaw_off=1.0)  # off-centre (90 % inside) and turned, dark and (being dark) flat
    r = gate.assess(frame(f, lo=5, hi=12, background=8, blur_sigma=4), [f])
    assert r.reason is Reason.FACE_NOT_CENTRED
    assert r.failures == (Reason.FACE_NOT_CENTRED, Reason.FACE_TURNED, Reason.TOO_DARK, Reason.BLURRY)


def test_every_quality_reason_has_a_prompt():
    for reason, prompt in PROMPTS.items():
        assert isinstance(prompt, Prompt) and (reason is Reason.NONE or prompt.text)


def test_buffers_are_reused(gate):
    ptrs = (gate._bgr.ctypes.data, gate._grey.ctypes.data, gate._lap.ctypes.data, gate._hist.ctypes.data)
    for f in (face(), face(x=100, y=50, w=400, h=400), face(x=300, y=200, w=90, h=90)):
        gate.assess(frame(f), [f])
    assert ptrs == (gate._bgr.ctypes.data, gate._grey.ctypes.data, gate._lap.ctypes.data, gate._hist.ctypes.data)
    gate.close()
    gate.close()  # idempotent
    assert not gate._bgr.any() and not gate._grey.any()


def test_rejects_non_bgr_images(gate):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        gate.assess(np.zeros((H, W), np.uint8), [face()])
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        gate.assess(np.zeros((H, W, 3), np.float32), [face()])


def test_config_validation():
    with pytest.raises(ValueError, match="min_face_fraction"):
        QualityConfig(min_face_fraction=0.5, max_face_fraction=0.4)
    with pytest.raises(ValueError, match="brightness"):
        QualityConfig(min_brightness=200, max_brightness=100)
    with pytest.raises(ValueError, match="max_yaw_deg"):
        QualityConfig(max_yaw_deg=120)


def test_from_config_takes_the_keys_the_section_has():
    from types import SimpleNamespace

    section = SimpleNamespace(enabled=True, min_face_fraction=0.2, max_pitch_deg=30.0, min_sharpness=5.0)
    cfg = QualityConfig.from_config(section)
    assert (cfg.min_face_fraction, cfg.max_pitch_deg, cfg.min_sharpness) == (0.2, 30.0, 5.0)
    assert cfg.max_yaw_deg == QualityConfig().max_yaw_deg  # absent key -> default


def test_edge_config_quality_section_maps_onto_quality_config():
    from edge import config

    cfg = QualityConfig.from_config(config.load(None).quality)
    assert isinstance(cfg, QualityConfig)
