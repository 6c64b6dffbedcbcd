"""The mesh's signals on real clips (../shared/action-dev; skipped when absent).

Labels are image-based and approximate (eye events +-2 frames, turns +-5): the tests compare a
labelled stretch with the clip's own hold level, never an absolute accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
CLIPS = REPO.parent / "shared" / "action-dev"

pytestmark = [
    pytest.mark.skipif(not (CLIPS / "manifest.csv").is_file(), reason=f"{CLIPS} absent (dev clips)"),
    pytest.mark.many_frames,  # clips through the face mesh: skipped under emulation
]


@pytest.fixture(scope="module")
def stages():
    from edge.detect.blazeface import BlazeFaceDetector
    from edge.landmarks.mesh import MeshLandmarker
    from edge.models.registry import artifact_path

    try:
        det = BlazeFaceDetector(artifact_path("blazeface_short", "float32"))
        mesh = MeshLandmarker.from_registry("float32")
    except Exception as err:  # noqa: BLE001
        pytest.skip(f"models not built ({err}); run: edge models build")
    yield det, mesh
    mesh.close()
    det.close()


def signals(stages, clip: str, frames: range) -> dict[int, tuple[float, float, float, float]]:
    """frame -> (yaw, pitch, eyeBlinkLeft, eyeBlinkRight) over ``frames`` (decoding stops after the last)."""
    import cv2

    det, mesh = stages
    cap = cv2.VideoCapture(str(CLIPS / clip))
    out = {}
    try:
        for i in range(frames.stop):
            ok, frame = cap.read()
            if not ok:
                break
            if i not in frames:
                continue
            faces = det.detect(frame)
            if not faces:
                continue
            r = mesh.estimate(frame, max(faces, key=lambda f: f.area))
            if r is not None:
                out[i] = (r.yaw_deg, r.pitch_deg, r.blendshape("eyeBlinkLeft"), r.blendshape("eyeBlinkRight"))
    finally:
        cap.release()
        mesh.wipe()
    return out


def test_labelled_blinks_rise_above_hold(stages):
    # perrito0409_FaceAI/test_blink.mp4: hold@0-80; blink@85-89; blink@120-125; hold@160-216
    s = signals(stages, "perrito0409_FaceAI/test_blink.mp4", range(40, 130))
    hold = [max(v[2], v[3]) for i, v in s.items() if 40 <= i <= 80]
    assert len(hold) > 30
    level = float(np.percentile(hold, 95))
    for a, b in ((85, 89), (120, 125)):
        peak = max(min(s[i][2], s[i][3]) for i in range(a - 2, b + 3) if i in s)  # both eyes closed
        assert peak > level + 0.25, (a, peak, level)


def test_image_right_turn_is_positive_yaw_and_left_negative(stages):
    # Zulkhuu_head-gesture-recogniton/1.no_motion_resize.mp4: turn_right@4-16(~26); turn_left@25-46(~32)
    s = signals(stages, "Zulkhuu_head-gesture-recogniton/1.no_motion_resize.mp4", range(0, 47))
    right = [s[i][0] for i in range(6, 15) if i in s]
    left = [s[i][0] for i in range(28, 44) if i in s]
    assert max(right) > 15 and min(left) < -15


def test_frontal_face_pose_near_zero(stages):
    # vardanagarwal_Proctoring-AI/center_focus.mp4: looks straight at the (phone) camera throughout
    s = signals(stages, "vardanagarwal_Proctoring-AI/center_focus.mp4", range(0, 60, 3))
    yaw = np.array([v[0] for v in s.values()])
    pitch = np.array([v[1] for v in s.values()])
    assert len(yaw) >= 15
    assert abs(np.median(yaw)) < 6 and np.ptp(yaw) < 6
    # a phone held a little below the eyes reads as a few degrees of chin-up; frontal within 12
    assert abs(np.median(pitch)) < 12
