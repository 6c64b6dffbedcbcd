"""The session runner with test stages: verdict paths, faults, prompts, privacy wipe."""

import threading

import numpy as np
import pytest

from edge.bridge.base import SessionRequest
from edge.camera import open_camera
from edge.decision import DecisionConfig
from edge.detect import StaticDetector
from edge.errors import CameraError, ModelError
from edge.liveness import ScriptedLiveness
from edge.pipeline import Pipeline, Runtime, SimpleGate
from edge.quality import QualityConfig, count_faces
from edge.types import FaceBox, Prompt, Reason, VerdictKind

FACE = FaceBox(250, 150, 150, 150, 0.95)


class RecordingSink:
    def __init__(self):
        self.prompts = []
        self.results = []

    def prompt(self, request, prompt):
        self.prompts.append((request.session_id, prompt))

    def result(self, request, verdict):
        self.results.append((request.session_id, verdict))

    def close(self):
        pass


def pipeline(faces=(FACE,), scores=(0.9,), **kw):
    return Pipeline(StaticDetector(faces), ScriptedLiveness(scores), DecisionConfig(**kw))


def synthetic(frames=60, **opts):
    extra = "".join(f"&{k}={v}" for k, v in opts.items())
    return open_camera(f"synthetic://?pattern=black&frames={frames}{extra}")


def test_pass_session_delivers_one_verdict_and_prompts():
    sink = RecordingSink()
    out = pipeline().run_session(synthetic(), SessionRequest(session_id=4), sink)
    assert out.verdict.kind is VerdictKind.PASS
    assert out.verdict.session_id == 4 and out.verdict.frames_used == 3
    assert sink.results == [(4, out.verdict)]
    assert sink.prompts[0] == (4, Prompt.LOOK_AT_CAMERA)
    # prompts are deduplicated: the same advice is not repeated every frame
    assert len(sink.prompts) == len(set(p for _, p in sink.prompts))


def test_fail_session():
    out = pipeline(scores=(0.1,)).run_session(synthetic())
    assert out.verdict.kind is VerdictKind.FAIL and out.verdict.reason is Reason.SPOOF_DETECTED


def test_no_face_session_on_file_timeline():
    # 90 frames at 30 fps = 3 s of source time: NO_FACE at 2 s whatever this machine's speed
    out = pipeline(faces=()).run_session(synthetic(90))
    assert out.verdict.kind is VerdictKind.NO_FACE
    assert out.verdict.elapsed_ms == pytest.approx(2000, abs=40)


def test_timeout_when_quality_never_passes():
    two = (FACE, FaceBox(20, 20, 140, 140, 0.9))
    sink = RecordingSink()
    out = pipeline(faces=two).run_session(synthetic(120), SessionRequest(session_id=1), sink)
    assert out.verdict.kind is VerdictKind.TIMEOUT and out.verdict.reason is Reason.MULTIPLE_FACES
    assert (1, Prompt.ONE_PERSON_ONLY) in sink.prompts


def test_camera_lost_is_fault():
    out = pipeline(scores=(0.6, 0.4)).run_session(synthetic(60, fail_after=2))
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.CAMERA_LOST


def test_frozen_camera_is_fault():
    out = pipeline(faces=()).run_session(synthetic(60, freeze_after=2))
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.CAMERA_LOST


def test_model_error_is_fault():
    out = pipeline(scores=(ModelError("boom"),)).run_session(synthetic())
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.MODEL_ERROR


def test_any_exception_is_fault_never_pass():
    out = pipeline(scores=(0.9, 0.9, ZeroDivisionError("x"))).run_session(synthetic())
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.INTERNAL_ERROR


class BrokenCamera:
    spec = "broken://"
    finite = False

    def __init__(self):
        self.closed = 0

    def open(self):
        raise CameraError("no such device")

    def read(self, timeout_s=1.0):
        raise AssertionError("never read")

    def close(self):
        self.closed += 1


def test_camera_open_failure_is_fault():
    cam = BrokenCamera()
    out = pipeline().run_session(cam)
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.CAMERA_OPEN_FAILED
    assert cam.closed == 1


def test_cancel_aborts_with_fault():
    req = SessionRequest(session_id=9)
    req.cancel.set()
    out = pipeline().run_session(synthetic(), req)
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.ABORTED


def test_sink_failure_does_not_raise():
    class Bad(RecordingSink):
        def prompt(self, request, prompt):
            raise OSError("gone")

        def result(self, request, verdict):
            raise OSError("gone")

    out = pipeline().run_session(synthetic(), None, Bad())
    assert out.verdict.kind is VerdictKind.PASS


def test_session_end_wipes_camera_decision_and_scores():
    cam = synthetic(60)
    p = pipeline()
    out = p.run_session(cam, keep_scores=True)
    assert out.verdict.kind is VerdictKind.PASS
    assert out.frame_scores == (0.9, 0.9, 0.9) and out.score == pytest.approx(0.9)
    assert not p.decision._scores.any() and not p._frame_scores.any()
    assert p.liveness.wiped == 1
    assert not cam.is_open if hasattr(cam, "is_open") else True


def test_every_n_frames_reuses_boxes():
    det = StaticDetector((FACE,))
    p = Pipeline(det, ScriptedLiveness((0.9,)), DecisionConfig(window=10, pass_votes=10), every_n_frames=3)
    out = p.run_session(synthetic(60))
    assert out.verdict.kind is VerdictKind.PASS and out.verdict.frames_seen == 10
    assert det.calls == 4  # frames 0, 3, 6, 9


def test_main_face_and_people_count():
    small = FaceBox(0, 0, 40, 40, 0.99)
    weak = FaceBox(300, 100, 140, 140, 0.6)
    cfg = QualityConfig(second_face_min_score=0.75, second_face_min_ratio=0.5)
    assert count_faces((small, FACE), cfg)[0] is FACE
    assert count_faces((FACE, small, weak), cfg) == (FACE, 1)  # tiny or weak: not a person
    assert count_faces((FACE, FaceBox(0, 0, 120, 120, 0.9)), cfg) == (FACE, 2)
    gate = SimpleGate()
    assert gate.assess(None, ()).reason is Reason.NO_FACE_FOUND
    assert gate.assess(None, (FACE,)).ok


class CountingTrigger:
    def __init__(self, n):
        self.n = n
        self.exhausted = False

    def wait(self, timeout_s):
        if self.n == 0:
            self.exhausted = True
            return None
        self.n -= 1
        return SessionRequest(session_id=100 - self.n)

    def close(self):
        pass


def test_runtime_runs_sessions_and_reopens_camera_each_time():
    opened = []

    def factory():
        cam = synthetic(60)
        opened.append(cam)
        return cam

    sink = RecordingSink()
    rt = Runtime(pipeline(), factory, CountingTrigger(3), sink)
    assert rt.run() == 0
    assert [v.kind for _, v in sink.results] == [VerdictKind.PASS] * 3
    assert len(opened) == 3  # camera opened per session, released between sessions


def test_runtime_shutdown_cancels_current_session():
    shutdown = threading.Event()
    sink = RecordingSink()

    class T(CountingTrigger):
        def wait(self, timeout_s):
            req = super().wait(timeout_s)
            shutdown.set()  # SIGTERM arrives as the session starts
            return req

    rt = Runtime(pipeline(), lambda: synthetic(60), T(5), sink, shutdown=shutdown)
    rt.run()
    assert len(sink.results) == 1
    assert sink.results[0][1].kind is VerdictKind.FAULT and sink.results[0][1].reason is Reason.SHUTDOWN


def test_controller_deadline_bounds_the_session():
    # no face, 3 s of frames: NO_FACE at the controller's 1 s deadline less the delivery margin
    out = pipeline(faces=()).run_session(synthetic(90), SessionRequest(session_id=3, deadline_ms=1000))
    assert out.verdict.kind is VerdictKind.NO_FACE
    assert out.verdict.elapsed_ms == pytest.approx(700, abs=40)


def test_runtime_reopens_a_lost_camera_with_backoff_before_the_next_session(monkeypatch):
    from edge.camera import retry

    made = []

    def factory():
        # the first camera dies mid-session, the next open fails once, then the device is back
        n = len(made)
        cam = synthetic(60, fail_after=2) if n == 0 else (BrokenCamera() if n == 1 else synthetic(60))
        made.append(cam)
        return cam

    sink = RecordingSink()
    rt = Runtime(pipeline(faces=()), factory, CountingTrigger(1), sink, wait_s=0.01, retry_attempts=3)
    monkeypatch.setattr(retry.Backoff, "delays", lambda self, rand=None: iter([0.01] * 5))
    rt.run()
    assert sink.results[0][1].reason is Reason.CAMERA_LOST
    assert len(made) == 3  # lost, one failed reopen, one good reopen
    assert made[1].closed == 1 and not made[2].is_open  # probed, then released again


class FaultSink(RecordingSink):
    def __init__(self):
        super().__init__()
        self.faults = []

    def fault(self, reason, detail="", session_id=0):
        self.faults.append(reason)


def test_runtime_tells_the_controller_on_shutdown_and_on_a_broken_loop():
    shutdown = threading.Event()
    sink = FaultSink()

    class T(CountingTrigger):
        def wait(self, timeout_s):
            shutdown.set()
            return None

    Runtime(pipeline(), lambda: synthetic(60), T(1), sink, shutdown=shutdown).run()
    assert sink.faults == [Reason.SHUTDOWN]

    class Broken(CountingTrigger):
        def wait(self, timeout_s):
            raise OSError("serial port vanished")

    sink = FaultSink()
    with pytest.raises(OSError):
        Runtime(pipeline(), lambda: synthetic(60), Broken(1), sink).run()
    assert sink.faults == [Reason.INTERNAL_ERROR]


def test_score_to_end_scores_the_whole_clip_but_keeps_the_verdict():
    scores = (0.9, 0.8, 0.7, 0.2, 0.1, 0.3, 0.6, 0.9, 0.4, 0.5)
    plain = pipeline(scores=scores).run_session(synthetic(10), keep_scores=True)
    full = pipeline(scores=scores).run_session(synthetic(10), keep_scores=True, score_to_end=True)
    assert plain.verdict == full.verdict and full.verdict.kind is VerdictKind.PASS
    assert plain.frame_scores == scores[:3] and full.frame_scores == scores
    assert full.score == pytest.approx(0.8)  # the session score is the one at the verdict


def test_score_to_end_is_for_finite_sources_only():
    # A live camera (not finite) ends at the verdict, whatever the caller asked.
    cam = open_camera("synthetic://?pattern=black&realtime=0")
    cam.finite = False
    out = pipeline().run_session(cam, keep_scores=True, score_to_end=True)
    assert out.verdict.kind is VerdictKind.PASS and len(out.frame_scores) == 3
