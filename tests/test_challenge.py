"""The challenge engine on scripted landmark sequences: every path of the state machine."""

from __future__ import annotations

import collections
import types

import numpy as np
import pytest

from edge.challenge import (
    ACTIONS,
    Challenge,
    ChallengeConfig,
    challenge_seed,
    draw,
    parse_actions,
    random_order,
)
from edge.landmarks.base import BLENDSHAPE_INDEX, N_BLENDSHAPES, N_POINTS, FaceLandmarks
from edge.types import FaceBox, Prompt, Reason, VerdictKind

BOX = FaceBox(200.0, 150.0, 200.0, 200.0, 0.95)
DT = 33.3  # ms per frame (30 fps)


def lm(yaw=0.0, pitch=0.0, blink=0.0, blink_r=None, jaw=0.0, smile=0.0, dx=0.0, size=90.0):
    points = np.zeros((N_POINTS, 3), np.float32)
    points[:, 0] = 300.0 + dx
    points[:, 1] = 250.0
    b = np.zeros(N_BLENDSHAPES, np.float32)
    b[BLENDSHAPE_INDEX["eyeBlinkLeft"]] = blink
    b[BLENDSHAPE_INDEX["eyeBlinkRight"]] = blink if blink_r is None else blink_r
    b[BLENDSHAPE_INDEX["jawOpen"]] = jaw
    b[BLENDSHAPE_INDEX["mouthSmileLeft"]] = smile
    b[BLENDSHAPE_INDEX["mouthSmileRight"]] = smile
    return FaceLandmarks(points, b, 1.0, yaw, pitch, 0.0, size, BOX)


def neutral(n, **kw):
    return [dict(kw) for _ in range(n)]


def ramp(key, a, b, n, **kw):
    return [dict(kw, **{key: a + (b - a) * (i + 1) / n}) for i in range(n)]


def turn(key, peak, n_up=6, n_hold=3, n_down=6, **kw):
    return ramp(key, 0.0, peak, n_up, **kw) + [dict(kw, **{key: peak})] * n_hold + ramp(key, peak, 0.0, n_down, **kw)


def blink_frames(closed=0.8, **kw):
    return [dict(kw, blink=closed / 2), dict(kw, blink=closed), dict(kw, blink=closed), dict(kw, blink=closed / 2), dict(kw, blink=0.0)]


class Driver:
    """Feeds frames 33 ms apart; a frame is a dict of lm() arguments plus optional
    ``faces``, ``score``, ``absent``. Records the prompts shown."""

    def __init__(self, order, config=None, depth=None, score=0.9, **start_kw):
        self.ch = Challenge(config or ChallengeConfig(), depth=depth)
        self.ch.start(0.0, order, session_id=7, **start_kw)
        self.t = 0.0
        self.score = score
        self.prompts = [self.ch.prompt]
        self.verdict = None

    def feed(self, frames):
        for f in frames:
            f = dict(f)
            faces = f.pop("faces", 1)
            score = f.pop("score", self.score)
            absent = f.pop("absent", False)
            mesh_lost = f.pop("mesh_lost", False)
            box = f.pop("box", BOX)
            self.t += DT
            mesh = None if (absent or mesh_lost) else lm(**f)
            self.verdict = self.ch.on_frame(self.t, faces=0 if absent else faces, landmarks=mesh,
                                            score=None if (absent or mesh_lost) else score, box=None if absent else box)
            if self.ch.prompt is not self.prompts[-1]:
                self.prompts.append(self.ch.prompt)
            if self.verdict is not None:
                return self.verdict
        return None

    def wait_prompt(self, n=8):
        """Neutral frames past the reaction time after a prompt."""
        return self.feed(neutral(n))


def respond(d, frames):
    d.wait_prompt()
    return d.feed(frames)


def test_blink_then_turn_left_passes_with_prompts_and_events():
    d = Driver(("blink", "turn_left"))
    assert d.feed(neutral(15)) is None
    assert d.ch.prompt is Prompt.BLINK
    assert respond(d, blink_frames()) is None
    assert d.ch.prompt is Prompt.BACK_TO_NEUTRAL
    assert d.feed(neutral(2)) is None
    assert d.ch.prompt is Prompt.TURN_LEFT
    v = respond(d, turn("yaw", 25.0)) or d.feed(neutral(5))
    assert v is not None and v.kind is VerdictKind.PASS and v.reason is Reason.LIVE_CONFIRMED
    assert v.session_id == 7 and v.challenge == ("blink", "turn_left")
    assert [p for p in d.prompts if p is not Prompt.NONE] == [
        Prompt.LOOK_AT_CAMERA, Prompt.HOLD_STILL, Prompt.BLINK, Prompt.BACK_TO_NEUTRAL, Prompt.TURN_LEFT, Prompt.BACK_TO_NEUTRAL,
    ]
    kinds = [(e.kind, e.action) for e in v.events]
    assert kinds == [("baseline", ""), ("prompt", "blink"), ("done", "blink"), ("neutral", ""), ("prompt", "turn_left"), ("done", "turn_left"), ("neutral", "")]
    assert v.to_dict()["challenge"] == ["blink", "turn_left"]
    assert all(set(e) <= {"t_ms", "event", "action"} for e in v.to_dict()["events"])


@pytest.mark.parametrize("action,key,value", [
    ("turn_left", "yaw", 25.0), ("turn_right", "yaw", -25.0), ("look_up", "pitch", 20.0),
    ("open_mouth", "jaw", 0.6), ("smile", "smile", 0.7),
])
def test_each_action_alone(action, key, value):
    d = Driver((action,), ChallengeConfig(k=1))
    d.feed(neutral(15))
    v = respond(d, turn(key, value)) or d.feed(neutral(5))
    assert v.kind is VerdictKind.PASS, v


def until_prompt(d, prompt):
    for _ in range(100):
        if d.ch.prompt is prompt:
            return
        d.feed(neutral(1))
    raise AssertionError(f"no {prompt}")


def test_early_motion_is_ignored_and_must_be_redone():
    d = Driver(("turn_left",), ChallengeConfig(k=1))
    until_prompt(d, Prompt.TURN_LEFT)
    # Motion already under way when the prompt shows (a replay that happens to turn): ignored.
    assert d.feed(turn("yaw", 25.0, n_up=3)) is None
    assert d.ch.prompt is Prompt.TURN_LEFT
    assert any(e.kind == "early" for e in d.ch.events)
    v = respond(d, turn("yaw", 25.0)) or d.feed(neutral(5))
    assert v.kind is VerdictKind.PASS


def test_early_motion_held_through_the_window_times_out():
    d = Driver(("turn_left",), ChallengeConfig(k=1))
    until_prompt(d, Prompt.TURN_LEFT)
    v = d.feed(ramp("yaw", 0, 25, 3) + [dict(yaw=25.0)] * 200)
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_TIMEOUT


def test_wrong_direction_fails():
    d = Driver(("turn_left",), ChallengeConfig(k=1))
    d.feed(neutral(15))
    v = respond(d, turn("yaw", -25.0))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_FAILED
    assert v.events[-1].kind == "failed" and v.events[-1].action == "turn_right"


def test_open_mouth_when_asked_to_blink_fails_but_a_smile_does_not():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False))
    d.feed(neutral(15))
    assert respond(d, turn("smile", 0.8)) is None  # people smile unasked
    v = d.feed(turn("jaw", 0.7))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_FAILED


def test_natural_blink_during_a_turn_does_not_fail():
    d = Driver(("turn_left", "smile"))
    d.feed(neutral(15))
    d.wait_prompt()
    assert d.feed(blink_frames()) is None
    v = d.feed(turn("yaw", 25.0)) or d.feed(neutral(3))
    assert v is None and d.ch.prompt is Prompt.SMILE


def test_timeout_when_nothing_happens():
    d = Driver(("blink", "turn_left"))
    v = d.feed(neutral(200))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_TIMEOUT
    assert v.elapsed_ms >= 3000


def test_no_return_to_neutral_times_out():
    d = Driver(("turn_left", "blink"))
    d.feed(neutral(15))
    v = respond(d, ramp("yaw", 0, 25, 6) + [dict(yaw=25.0)] * 200)
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_TIMEOUT
    assert v.events[-1].action == "neutral"


def test_second_face_fails():
    d = Driver(("blink", "turn_left"))
    d.feed(neutral(20))
    v = d.feed([dict(faces=2)])
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED


def test_second_face_before_the_first_single_face_only_waits():
    d = Driver(("blink", "turn_left"))
    assert d.feed([dict(faces=2)] * 5) is None


def test_face_swap_mid_session_fails():
    d = Driver(("blink", "turn_left"))
    d.feed(neutral(20))
    v = d.feed([dict(dx=150.0)])  # a cut: the face jumps 1.7 face sizes between frames
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED
    d = Driver(("blink", "turn_left"))
    d.feed(neutral(20))
    v = d.feed([dict(size=150.0)])  # a different face size from one frame to the next
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED


def test_slow_drift_is_not_a_cut():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False))
    assert d.feed([dict(dx=2.0 * i) for i in range(30)]) is None


def test_face_gone_too_long_fails_but_a_short_gap_does_not():
    d = Driver(("blink", "turn_left"))
    d.feed(neutral(20))
    assert d.feed([dict(absent=True)] * 10) is None  # 333 ms
    assert d.feed(neutral(3)) is None
    v = d.feed([dict(absent=True)] * 20)
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED


def test_mesh_lost_on_a_far_turn_is_bridged_by_the_detector_box():
    d = Driver(("turn_left", "blink"))
    d.feed(neutral(15))
    d.wait_prompt()
    # Turned past what the mesh follows (~50 deg): the detector still sees the face, 1.3 s.
    assert d.feed(ramp("yaw", 0, 25, 5) + [dict(mesh_lost=True)] * 40 + ramp("yaw", 25, 0, 5)) is None
    assert d.ch.prompt in (Prompt.BACK_TO_NEUTRAL, Prompt.BLINK)
    far = FaceBox(BOX.x + 150.0, BOX.y, BOX.w, BOX.h, 0.9)
    d = Driver(("turn_left", "blink"))
    d.feed(neutral(15))
    v = d.feed([dict(mesh_lost=True)] * 3 + [dict(mesh_lost=True, box=far)])  # the box jumps: another face
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED
    d = Driver(("turn_left", "blink"))
    d.feed(neutral(15))
    v = d.feed([dict(mesh_lost=True)] * 80)  # 2.7 s without a mesh is too long
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.FACE_CHANGED


def test_a_turn_that_lifts_the_chin_is_not_a_wrong_action():
    d = Driver(("turn_left",), ChallengeConfig(k=1))
    d.feed(neutral(15))
    v = respond(d, [dict(yaw=5.0 * i, pitch=4.0 * i) for i in range(1, 6)] + neutral(8))
    assert v.kind is VerdictKind.PASS, v
    d = Driver(("look_up",), ChallengeConfig(k=1))
    d.feed(neutral(15))
    v = respond(d, [dict(yaw=5.0 * i) for i in range(1, 6)])  # asked to look up, turns 25 deg
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_FAILED


def test_attack_votes_in_a_row_fail_whatever_the_actions():
    d = Driver(("blink", "turn_left"), score=0.1)
    v = d.feed(neutral(5))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.SPOOF_DETECTED


def test_attack_majority_fails_after_the_actions():
    scores = iter([0.9, 0.1] * 200)
    d = Driver(("blink", "turn_left"))
    frames = neutral(15) + neutral(8) + blink_frames() + neutral(10) + turn("yaw", 25.0) + neutral(10)
    v = None
    for f in frames:
        f["score"] = next(scores)
        v = d.feed([f])
        if v is not None:
            break
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.SPOOF_DETECTED


def test_no_votes_never_pass():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False), score=None)
    d.feed(neutral(15))
    v = respond(d, blink_frames()) or d.feed(neutral(200))
    assert v.kind is VerdictKind.TIMEOUT and v.reason is Reason.NOT_ENOUGH_VOTES


def test_baseline_absorbs_a_resting_smile_and_narrow_eyes():
    cfg = ChallengeConfig(k=1, require_pose=False)
    d = Driver(("smile",), cfg)
    d.feed(neutral(15, smile=0.3, blink=0.3))
    assert d.ch.prompt is Prompt.SMILE
    assert respond(d, [dict(smile=0.5, blink=0.3)] * 5) is None  # +0.2 over the resting smile: not yet
    v = d.feed(ramp("smile", 0.5, 0.8, 3, blink=0.3) + neutral(10, smile=0.3, blink=0.3))
    assert v.kind is VerdictKind.PASS
    d = Driver(("blink",), cfg)
    d.feed(neutral(15, blink=0.3))
    assert respond(d, [dict(blink=0.44)] * 3 + neutral(3, blink=0.3)) is None  # narrow eyes a little more shut: no blink
    v = d.feed([dict(blink=0.7)] * 2 + neutral(10, blink=0.3))
    assert v.kind is VerdictKind.PASS


def test_baseline_waits_for_a_frontal_steady_face():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False))
    d.feed(neutral(30, yaw=30.0))
    assert d.ch.prompt is Prompt.FACE_CAMERA
    d.feed([dict(yaw=(-5.0 if i % 2 else 5.0)) for i in range(20)])  # swaying: no baseline
    assert d.ch.prompt is Prompt.HOLD_STILL
    d.feed(neutral(15))
    assert d.ch.prompt is Prompt.BLINK


def test_baseline_that_never_settles_times_out_with_the_quality_reason():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False))
    v = d.feed(neutral(200, yaw=30.0))
    assert v.kind is VerdictKind.TIMEOUT


def test_blink_only_counts_near_frontal_and_with_both_eyes():
    d = Driver(("blink",), ChallengeConfig(k=1, require_pose=False))
    d.feed(neutral(15))
    d.wait_prompt()
    assert d.feed(blink_frames(yaw=16.0)) is None  # turned: the far eye narrows, no blink
    assert d.feed([dict(blink=0.9, blink_r=0.0)] * 3 + neutral(3)) is None  # a wink
    assert d.ch.prompt is Prompt.BLINK
    v = d.feed(blink_frames()) or d.feed(neutral(10))
    assert v.kind is VerdictKind.PASS


class FakeDepth:
    """Records the calls; answers 3-D or not as told."""

    def __init__(self, is_3d):
        self.is_3d = is_3d
        self.refs, self.measures, self.wiped = [], [], 0

    def set_reference(self, lm):
        self.refs.append(lm.yaw_deg)

    def measure(self, lm):
        self.measures.append(lm.yaw_deg)
        return types.SimpleNamespace(is_3d=self.is_3d, residual=0.05 if self.is_3d else 0.001)

    def wipe(self):
        self.wiped += 1


def test_not_3d_when_the_turn_moves_like_a_plane():
    d = Driver(("turn_left",), ChallengeConfig(k=1), depth=FakeDepth(False))
    d.feed(neutral(15))
    v = respond(d, turn("yaw", 25.0))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.NOT_3D
    depth = FakeDepth(True)
    d = Driver(("turn_left",), ChallengeConfig(k=1), depth=depth)
    d.feed(neutral(15))
    v = respond(d, turn("yaw", 25.0)) or d.feed(neutral(5))
    assert v.kind is VerdictKind.PASS
    assert depth.refs == [0.0] and depth.measures and min(depth.measures) >= 15.0  # only turned frames


def test_not_3d_when_held_turned_until_the_window_ends():
    d = Driver(("turn_left",), ChallengeConfig(k=1), depth=FakeDepth(False))
    d.feed(neutral(15))
    v = respond(d, ramp("yaw", 0, 25, 5) + [dict(yaw=25.0)] * 200)
    assert v.reason is Reason.NOT_3D


def test_no_3d_check_for_expressions():
    depth = FakeDepth(False)
    d = Driver(("smile",), ChallengeConfig(k=1, require_pose=False), depth=depth)
    d.feed(neutral(15))
    v = respond(d, turn("smile", 0.8)) or d.feed(neutral(5))
    assert v.kind is VerdictKind.PASS and depth.measures == []


def test_a_still_image_or_frozen_stream_never_passes():
    d = Driver(("blink", "turn_left"))
    d.feed(neutral(1))
    v = d.ch.on_end(d.t)
    assert v.kind is not VerdictKind.PASS and v.reason is Reason.CHALLENGE_TIMEOUT or v.kind is VerdictKind.TIMEOUT
    d = Driver(("blink", "turn_left"))
    v = d.feed(neutral(1000))
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.CHALLENGE_TIMEOUT


def test_no_face_and_fault_and_budget():
    d = Driver(("blink",))
    v = d.feed([dict(absent=True)] * 100)
    assert v.kind is VerdictKind.NO_FACE
    d = Driver(("blink",))
    d.feed(neutral(3))
    v = d.ch.on_fault(d.t, Reason.CAMERA_LOST)
    assert v.kind is VerdictKind.FAULT and d.ch.on_frame(d.t + 1, faces=1, landmarks=lm()) is v
    d = Driver(("blink", "turn_left"), budget_ms=1000)
    v = d.feed(neutral(100))
    assert v.reason is Reason.CHALLENGE_TIMEOUT and v.elapsed_ms <= 1040


def test_events_before_start_are_refused():
    with pytest.raises(RuntimeError):
        Challenge().on_frame(0.0, faces=1, landmarks=lm())
    with pytest.raises(ValueError):
        Challenge().start(0.0, ("jump",))


def test_origin_shifts_reported_times():
    ch = Challenge(ChallengeConfig(k=1, require_pose=False))
    ch.start(1000.0, ("blink",), origin_ms=0.0)
    v = ch.on_frame(1000.0 + 5000.0, faces=0, landmarks=None)
    assert v.elapsed_ms == 6000


def test_wipe_zeroes_baseline_and_signals_and_the_3d_reference():
    depth = FakeDepth(True)
    d = Driver(("turn_left",), ChallengeConfig(k=1), depth=depth)
    d.feed(neutral(15, smile=0.3, blink=0.2))
    ch = d.ch
    assert ch._base.any() and ch._baseline_rows.any()
    ch.wipe()
    for buf in (ch._baseline_rows, ch._base, ch._delta, ch._last, ch._signals.v):
        assert not buf.any()
    assert depth.wiped == 1


# -- the order ----------------------------------------------------------------------------------
def test_order_from_the_nonce_is_the_documented_test_vector():
    seed = challenge_seed(bytes(range(32)), bytes(range(16)))
    assert seed.hex() == "8f1182ac5e18887ec9039b61a14a0e7cee3d5bafd94d94563cbcd16653db96c4"
    assert draw(seed, 2) == ("turn_right", "open_mouth")
    assert draw(seed, 2) == draw(seed, 2)


def test_orders_are_uniform_without_repeats_and_hold_a_head_movement():
    counts = collections.Counter(draw(challenge_seed(b"k" * 32, i.to_bytes(4, "big")), 2) for i in range(4800))
    assert len(counts) == 24  # 30 ordered pairs less the 6 without a head movement
    assert min(counts.values()) > 140 and max(counts.values()) < 260
    for order in counts:
        assert len(set(order)) == 2 and {"turn_left", "turn_right", "look_up"} & set(order)
    free = collections.Counter(draw(challenge_seed(b"k" * 32, i.to_bytes(4, "big")), 4, require_pose=False) for i in range(200))
    assert all(len(set(o)) == 4 for o in free)
    assert len(random_order(3)) == 3


def test_parse_actions():
    assert parse_actions("blink, turn_left") == ("blink", "turn_left")
    for bad, words in (("", "at least one"), ("blink,jump", "unknown"), ("blink,blink", "at most once"), (",".join(ACTIONS[:5]), "at most 4")):
        with pytest.raises(ValueError, match=words):
            parse_actions(bad)
