"""Camera faults through the real session runner: CameraLost -> FAULT (CAMERA_LOST), buffers wiped."""

from __future__ import annotations

import cv2
import pytest

from camera_fakes import write_video
from edge.camera import open_camera
from edge.decision import DecisionConfig
from edge.detect.base import StaticDetector
from edge.liveness.base import ScriptedLiveness
from edge.pipeline import Pipeline
from edge.types import FaceBox, Reason, VerdictKind

FACE = FaceBox(100, 60, 120, 120, 0.9)


def _pipeline():
    # Votes never conclude a live session (pass/fail need 10,000 votes), so only the camera ends it;
    # a finite file ends with its votes judged (0.3 < threshold -> FAIL).
    return Pipeline(StaticDetector([FACE]), ScriptedLiveness((0.3,)),
                    DecisionConfig(fail_votes=10_000, pass_votes=10_000, window=10_000, timeout_ms=60_000,
                                   min_votes_at_end=1))


@pytest.mark.parametrize("spec", ["synthetic://?width=320&height=240&fail_after=3",
                                  "synthetic://?width=320&height=240&freeze_after=3"])
def test_simulated_camera_loss_ends_the_session_with_fault(spec):
    cam = open_camera(spec)
    outcome = _pipeline().run_session(cam)
    assert outcome.verdict.kind is VerdictKind.FAULT and outcome.verdict.reason is Reason.CAMERA_LOST
    assert not cam.is_open and not cam.buffer.any()


def test_device_gone_mid_session_through_the_v4l2_path(tmp_path):
    clip = write_video(tmp_path / "v.avi", 8, size=(320, 240))
    cam = open_camera("v4l2:///dev/video0?width=320&height=240",
                      capture_factory=lambda d: cv2.VideoCapture(str(clip)))
    outcome = _pipeline().run_session(cam)
    assert outcome.verdict.kind is VerdictKind.FAULT and outcome.verdict.reason is Reason.CAMERA_LOST
    assert outcome.verdict.frames_seen == 8


def test_end_of_a_file_is_a_normal_end(tmp_path):
    clip = write_video(tmp_path / "v.avi", 5, size=(320, 240))
    outcome = _pipeline().run_session(open_camera(f"video://{clip}"))
    assert outcome.verdict.kind is VerdictKind.FAIL and outcome.verdict.frames_seen == 5
