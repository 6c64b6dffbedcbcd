"""The decision state machine: every verdict path, deadlines, fail-closed behaviour."""

import math

import pytest

from edge.decision import Decision, DecisionConfig
from edge.types import Reason, VerdictKind


def run(events, cfg=None):
    d = Decision(cfg or DecisionConfig())
    d.start(0.0, session_id=7)
    v = None
    for ev in events:
        kind, t, *rest = ev
        if kind == "f":
            faces, score = rest
            v = d.on_frame(t, faces=faces, score=score)
        elif kind == "tick":
            v = d.on_tick(t)
        elif kind == "end":
            v = d.on_end(t)
        elif kind == "fault":
            v = d.on_fault(t, rest[0])
        if v is not None:
            return d, v
    return d, v


def test_pass_after_k_live_votes():
    d, v = run([("f", 33 * i, 1, 0.9) for i in range(10)])
    assert v.kind is VerdictKind.PASS and v.reason is Reason.LIVE_CONFIRMED
    assert v.frames_used == 3 and v.frames_seen == 3
    assert v.elapsed_ms == 66 and v.session_id == 7


def test_fail_after_k_attack_votes():
    d, v = run([("f", 33 * i, 1, 0.1) for i in range(10)])
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.SPOOF_DETECTED
    assert v.frames_used == 3


def test_fail_is_checked_before_pass():
    cfg = DecisionConfig(window=5, pass_votes=2, fail_votes=2)
    d, v = run([("f", 0, 1, 0.9), ("f", 10, 1, 0.1), ("f", 20, 1, 0.2)], cfg)
    assert v.kind is VerdictKind.FAIL


def test_split_votes_are_decided_by_the_mean_of_the_window():
    # three live votes barely above the threshold, two far below: no early decision; at the
    # fifth vote the mean (0.31) decides -> FAIL, where counting live votes would have passed
    cfg = DecisionConfig(threshold=0.5, window=5, pass_votes=3, fail_votes=3)
    events = [("f", 0, 1, 0.51), ("f", 10, 1, 0.0), ("f", 20, 1, 0.51), ("f", 30, 1, 0.0)]
    d, v = run(events, cfg)
    assert v is None
    v = d.on_frame(40, faces=1, score=0.51)
    assert v.kind is VerdictKind.FAIL and v.reason is Reason.SPOOF_DETECTED and v.frames_used == 5


def test_split_votes_with_a_high_mean_pass_at_the_window():
    cfg = DecisionConfig(threshold=0.5, window=5, pass_votes=3, fail_votes=3)
    d, v = run([("f", 0, 1, 0.95), ("f", 10, 1, 0.45), ("f", 20, 1, 0.9), ("f", 30, 1, 0.4), ("f", 40, 1, 0.9)], cfg)
    assert v.kind is VerdictKind.PASS and v.frames_used == 5


def test_early_pass_needs_the_last_votes_in_a_row_and_the_mean():
    cfg = DecisionConfig(threshold=0.5, window=9, pass_votes=3, fail_votes=3)
    # live, attack, then three live in a row with the mean above the threshold: PASS at the fifth vote
    d, v = run([("f", 0, 1, 0.9), ("f", 10, 1, 0.1), ("f", 20, 1, 0.9), ("f", 30, 1, 0.9), ("f", 40, 1, 0.9)], cfg)
    assert v.kind is VerdictKind.PASS and v.frames_used == 5
    # three live in a row, but the mean of all votes so far is below the threshold: wait
    events = [("f", 0, 1, 0.0), ("f", 10, 1, 0.0), ("f", 15, 1, 0.9), ("f", 20, 1, 0.51), ("f", 30, 1, 0.51),
              ("f", 40, 1, 0.51)]
    d, v = run(events, cfg)
    assert v is None


def test_split_votes_short_of_the_window_time_out():
    cfg = DecisionConfig(threshold=0.5, window=5, pass_votes=3, fail_votes=3)
    d, v = run([("f", 0, 1, 0.9), ("f", 10, 1, 0.1), ("f", 20, 1, 0.9), ("f", 30, 1, 0.1)], cfg)
    assert v is None
    v = d.on_tick(3000)
    assert v.kind is VerdictKind.TIMEOUT and v.reason is Reason.NOT_ENOUGH_VOTES


def test_score_exactly_at_threshold_votes_live():
    cfg = DecisionConfig(threshold=0.5, window=1, pass_votes=1, fail_votes=1)
    _, v = run([("f", 0, 1, 0.5)], cfg)
    assert v.kind is VerdictKind.PASS


def test_no_face_after_no_face_ms():
    d, v = run([("f", 100 * i, 0, None) for i in range(30)])
    assert v.kind is VerdictKind.NO_FACE and v.reason is Reason.NO_FACE_FOUND
    assert v.elapsed_ms == 2000 and v.frames_used == 0


def test_timeout_when_faces_but_no_votes():
    # faces seen (quality gate refused every frame): TIMEOUT at the session budget
    d, v = run([("f", 100 * i, 1, None) for i in range(40)])
    assert v.kind is VerdictKind.TIMEOUT and v.elapsed_ms == 3000


def test_timeout_on_tick_without_frames():
    d = Decision()
    d.start(0.0)
    d.on_frame(10, faces=1, score=0.9)
    assert d.on_tick(2999) is None
    assert d.on_tick(3000).kind is VerdictKind.TIMEOUT


def test_alternating_scores_never_pass():
    d, v = run([("f", 30 * i, 1, 0.9 if i % 2 else 0.1) for i in range(200)])
    assert v.kind is VerdictKind.FAIL


@pytest.mark.parametrize(
    "events,kind",
    [
        ([], VerdictKind.NO_FACE),
        ([("f", 0, 1, None)], VerdictKind.TIMEOUT),
        ([("f", 0, 1, 0.8)], VerdictKind.PASS),
        ([("f", 0, 1, 0.2)], VerdictKind.FAIL),
        ([("f", 0, 1, 0.8), ("f", 33, 1, 0.2)], VerdictKind.FAIL),  # no live majority: fail closed
    ],
)
def test_end_of_finite_source(events, kind):
    d, v = run(events)
    assert v is None
    assert d.on_end(100).kind is kind


def test_min_votes_at_end():
    d, v = run([("f", 0, 1, 0.9)], DecisionConfig(min_votes_at_end=2))
    assert d.on_end(50).kind is VerdictKind.FAIL


def test_fault_overrides_everything_and_is_sticky():
    d, v = run([("f", 0, 1, 0.9), ("f", 10, 1, 0.9), ("fault", 15, Reason.CAMERA_LOST)])
    assert v.kind is VerdictKind.FAULT and v.reason is Reason.CAMERA_LOST
    assert d.on_frame(20, faces=1, score=0.9).kind is VerdictKind.FAULT
    assert d.on_end(30).kind is VerdictKind.FAULT


def test_fault_after_pass_is_fault():
    d, v = run([("f", 33 * i, 1, 0.9) for i in range(3)])
    assert v.kind is VerdictKind.PASS
    assert d.on_fault(200, Reason.INTERNAL_ERROR).kind is VerdictKind.FAULT


def test_non_finite_score_is_a_fault():
    d, v = run([("f", 0, 1, math.nan)])
    assert v.kind is VerdictKind.FAULT and v.reason is Reason.MODEL_ERROR


def test_verdict_is_sticky():
    d, v = run([("f", 33 * i, 1, 0.9) for i in range(3)])
    assert d.on_frame(500, faces=1, score=0.0) is v
    assert d.on_tick(10_000) is v


def test_events_before_start_raise():
    d = Decision()
    with pytest.raises(RuntimeError):
        d.on_frame(0, faces=1, score=0.9)


def test_restart_resets_state():
    d, v = run([("f", 33 * i, 1, 0.9) for i in range(3)])
    d.start(1000.0, session_id=8)
    assert d.verdict is None
    v2 = d.on_frame(1010, faces=1, score=0.1)
    assert v2 is None and d.verdict is None


def test_wipe_zeroes_history():
    d, _ = run([("f", 0, 1, 0.9), ("f", 10, 1, 0.8)])
    d.wipe()
    assert not d._scores.any()


@pytest.mark.parametrize(
    "kwargs",
    [dict(threshold=1.5), dict(window=3, pass_votes=4), dict(fail_votes=0), dict(timeout_ms=0), dict(min_votes_at_end=0)],
)
def test_bad_config_rejected(kwargs):
    with pytest.raises(ValueError):
        DecisionConfig(**kwargs)


def test_defaults_fail_closed():
    """With defaults, nothing but enough live evidence gives PASS."""
    cfg = DecisionConfig()
    assert cfg.pass_votes >= 2 and cfg.threshold >= 0.5


def test_timeout_reason_is_the_commonest_quality_refusal():
    d = Decision()
    d.start(0.0)
    for i, r in enumerate([Reason.TOO_DARK, Reason.FACE_TOO_SMALL, Reason.TOO_DARK]):
        d.on_frame(10 * i, faces=1, score=None, reason=r)
    v = d.on_end(40)
    assert v.kind is VerdictKind.TIMEOUT and v.reason is Reason.TOO_DARK


def test_timeout_after_inconclusive_votes_is_not_enough_votes():
    d = Decision(DecisionConfig(window=5, pass_votes=5, fail_votes=5))
    d.start(0.0)
    d.on_frame(0, faces=1, score=None, reason=Reason.BLURRY)
    d.on_frame(10, faces=1, score=0.9)
    assert d.on_tick(3000).reason is Reason.NOT_ENOUGH_VOTES


def test_controller_budget_shortens_the_session():
    d = Decision()
    d.start(0.0, budget_ms=1200)
    d.on_frame(10, faces=1, score=None, reason=Reason.BLURRY)
    assert d.on_tick(1199) is None
    assert d.on_tick(1200).kind is VerdictKind.TIMEOUT
    d.start(0.0, budget_ms=10_000)  # a budget never lengthens the configured one
    assert d.on_tick(2000).kind is VerdictKind.NO_FACE
