"""Active and step-up liveness through the session runner, with test stages."""

import pytest

from edge.bridge.base import SessionRequest
from edge.camera import open_camera
from edge.challenge import ChallengeConfig, challenge_seed, draw
from edge.decision import DecisionConfig
from edge.detect import StaticDetector
from edge.landmarks import ScriptedLandmarks, ScriptedPose
from edge.liveness import ScriptedLiveness
from edge.pipeline import Pipeline
from edge.types import FaceBox, Prompt, Reason, VerdictKind

FACE = FaceBox(250, 150, 150, 150, 0.95)


class RecordingSink:
    def __init__(self):
        self.prompts, self.results = [], []

    def prompt(self, request, prompt):
        self.prompts.append(prompt)

    def result(self, request, verdict):
        self.results.append(verdict)

    def close(self):
        pass


def script(*parts):
    out = []
    for n, pose in parts:
        out.extend([pose] * n)
    return out


NEUTRAL = ScriptedPose()
BLINK = ScriptedPose(blendshapes=(("eyeBlinkLeft", 0.9), ("eyeBlinkRight", 0.9)))
LEFT = ScriptedPose(yaw_deg=25.0)

# blink then turn_left, answered as a person would at 30 fps
ANSWER = script((22, NEUTRAL), (3, BLINK), (10, NEUTRAL), (8, LEFT), (30, NEUTRAL))


def active(landmarks, scores=(0.9,), mode="active", faces=(FACE,), **kw):
    return Pipeline(
        StaticDetector(faces), ScriptedLiveness(scores), DecisionConfig(), mode=mode,
        landmarks=landmarks, challenge=ChallengeConfig(**kw),
    )


def synthetic(frames=300):
    return open_camera(f"synthetic://?pattern=black&frames={frames}")


def test_active_session_passes_with_the_asked_order_and_sends_prompts():
    sink = RecordingSink()
    lms = ScriptedLandmarks(ANSWER)
    out = active(lms).run_session(synthetic(), SessionRequest(1, challenge=("blink", "turn_left")), sink)
    assert out.verdict.kind is VerdictKind.PASS, out.verdict
    assert out.verdict.challenge == ("blink", "turn_left")
    for p in (Prompt.BLINK, Prompt.TURN_LEFT, Prompt.BACK_TO_NEUTRAL):
        assert p in sink.prompts
    assert sink.prompts.index(Prompt.BLINK) < sink.prompts.index(Prompt.TURN_LEFT)
    assert lms.wiped == 1


def test_the_same_answer_fails_another_order():
    out = active(ScriptedLandmarks(ANSWER)).run_session(synthetic(), SessionRequest(1, challenge=("turn_left", "blink")))
    assert out.verdict.kind is VerdictKind.FAIL
    assert out.verdict.reason in (Reason.CHALLENGE_TIMEOUT, Reason.CHALLENGE_FAILED)


def test_order_from_the_controller_seed():
    seed = challenge_seed(b"\x01" * 32, b"\x02" * 16)
    out = active(ScriptedLandmarks()).run_session(synthetic(30), SessionRequest(1, challenge_seed=seed))
    assert out.verdict.challenge == draw(seed, 2)


def test_random_order_without_a_nonce():
    orders = {active(ScriptedLandmarks()).run_session(synthetic(5)).verdict.challenge for _ in range(40)}
    assert len(orders) > 5


def test_still_frames_never_pass_in_active_mode():
    # A still picture: the mesh never moves, whatever the passive models say.
    out = active(ScriptedLandmarks([NEUTRAL])).run_session(synthetic(600))
    assert out.verdict.kind is VerdictKind.FAIL and out.verdict.reason is Reason.CHALLENGE_TIMEOUT
    out = active(ScriptedLandmarks([NEUTRAL])).run_session(open_camera("synthetic://?pattern=black&frames=1"))
    assert out.verdict.kind is not VerdictKind.PASS


def test_attack_scores_fail_an_answered_challenge():
    out = active(ScriptedLandmarks(ANSWER), scores=(0.1,)).run_session(synthetic(), SessionRequest(1, challenge=("blink", "turn_left")))
    assert out.verdict.kind is VerdictKind.FAIL and out.verdict.reason is Reason.SPOOF_DETECTED


def test_second_face_mid_session_fails():
    second = FaceBox(20, 20, 140, 140, 0.9)
    det = [(FACE,)] * 30 + [(FACE, second)]
    p = Pipeline(StaticDetector(det), ScriptedLiveness((0.9,)), DecisionConfig(), mode="active",
                 landmarks=ScriptedLandmarks(ANSWER), challenge=ChallengeConfig())
    p.every_n_frames = 1
    out = p.run_session(synthetic(), SessionRequest(1, challenge=("blink", "turn_left")))
    assert out.verdict.kind is VerdictKind.FAIL and out.verdict.reason is Reason.FACE_CHANGED


def test_step_up_clear_passive_evidence_stands():
    lms = ScriptedLandmarks()
    out = active(lms, scores=(0.95,), mode="step_up").run_session(synthetic())
    assert out.verdict.kind is VerdictKind.PASS and out.verdict.challenge == () and lms.calls == 0
    out = active(ScriptedLandmarks(), scores=(0.05,), mode="step_up").run_session(synthetic())
    assert out.verdict.kind is VerdictKind.FAIL and out.verdict.challenge == ()


def test_step_up_unclear_evidence_goes_to_the_challenge():
    lms = ScriptedLandmarks(ANSWER)
    sink = RecordingSink()
    out = active(lms, scores=(0.7,), mode="step_up").run_session(synthetic(), SessionRequest(3, challenge=("blink", "turn_left")), sink)
    assert out.verdict.kind is VerdictKind.PASS and out.verdict.challenge == ("blink", "turn_left")
    assert lms.calls > 0 and Prompt.BLINK in sink.prompts
    assert out.verdict.elapsed_ms > 1000  # counted from the session's start, passive part included


def test_model_error_in_the_mesh_is_a_fault():
    class Broken(ScriptedLandmarks):
        def estimate(self, image, face):
            from edge.errors import ModelError
            raise ModelError("mesh exploded")

    out = active(Broken()).run_session(synthetic())
    assert out.verdict.kind is VerdictKind.FAULT and out.verdict.reason is Reason.MODEL_ERROR


def test_active_mode_needs_a_landmark_stage():
    with pytest.raises(ValueError, match="landmark"):
        Pipeline(StaticDetector((FACE,)), ScriptedLiveness(), mode="active")
    with pytest.raises(ValueError, match="mode"):
        Pipeline(StaticDetector((FACE,)), ScriptedLiveness(), mode="paranoid")
