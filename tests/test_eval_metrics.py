"""ISO/IEC 30107-3 metrics on tiny score sets whose figures are worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.eval import metrics as m

NAN = None  # no face


def S(bf, at, types=None):
    return m.Scores.from_lists(bf, at, types)


# ---------------------------------------------------------------- rates at one threshold


def test_apcer_bpcer_acer_at_threshold():
    s = S([0.9, 0.8, 0.7, 0.4], [0.1, 0.3, 0.5, 0.75], ["print", "print", "screen", "screen"])
    op = m.operating_point(s, 0.6)
    # accepted attacks: 0.75 (screen) -> print 0/2, screen 1/2; rejected bona fide: 0.4 -> 1/4
    assert op.apcer_per_type == {"print": 0.0, "screen": 0.5}
    assert op.apcer == 0.5
    assert op.bpcer == 0.25
    assert op.acer == 0.375


def test_score_equal_to_threshold_is_accepted():
    s = S([0.5, 0.9], [0.5, 0.1])
    op = m.operating_point(s, 0.5)
    assert op.apcer == 0.5  # the attack at exactly 0.5 is accepted (counts as an error)
    assert op.bpcer == 0.0  # the bona fide at exactly 0.5 is accepted


def test_no_face_is_rejection_for_both_classes():
    s = S([NAN, 0.9], [NAN, 0.1])
    op = m.operating_point(s, 0.0)  # even the lowest threshold never accepts a missing face
    assert op.bpcer == 0.5
    assert op.apcer == 0.5  # only the 0.1 attack is accepted at threshold 0
    op = m.operating_point(s, 0.5)
    assert op.apcer == 0.0 and op.bpcer == 0.5
    f = m.face_not_found(s)
    assert (f.bona_fide, f.attack, f.rate, f.bona_fide_rate) == (1, 1, 0.5, 0.5)


# ---------------------------------------------------------------- EER


def test_eer_interpolated_between_neighbouring_thresholds():
    # thresholds .1 .3 .5 .6 .9: APCER 1, 2/3, 2/3, 1/3, 0; BPCER 0, 0, 1/2, 1/2, 1/2
    # d = APCER-BPCER: 1, 2/3, 1/6, -1/6 -> crossing halfway between t=.5 and t=.6
    e = m.eer(S([0.3, 0.9], [0.1, 0.5, 0.6]))
    assert e.eer == pytest.approx(0.5)
    assert e.threshold == pytest.approx(0.55)


def test_eer_with_ties():
    # bona fide .5 ties with attack .5. Thresholds .1 .5 .9: APCER 1, 1/2, 0; BPCER 0, 0, 1/2
    # d: 1, 1/2, -1/2 -> a = 1/2 between .5 and .9: EER = 1/2 + 1/2 (0 - 1/2) = 1/4, threshold .7
    e = m.eer(S([0.5, 0.9], [0.5, 0.1]))
    assert e.eer == pytest.approx(0.25)
    assert e.threshold == pytest.approx(0.7)


def test_eer_perfect_separation_is_zero_at_lowest_bona_fide_score():
    e = m.eer(S([0.8, 0.9], [0.1, 0.3]))
    assert e.eer == 0.0
    assert e.threshold == 0.8


def test_eer_exact_meeting_point():
    # thresholds .2 .5 .6 .8: APCER 1, 1, 1/2, 0; BPCER 0, 1/2, 1/2, 1/2 -> d = 0 at .6 exactly
    e = m.eer(S([0.2, 0.8], [0.5, 0.6]))
    assert (e.eer, e.threshold) == (0.5, 0.6)


def test_eer_total_overlap():
    e = m.eer(S([0.5, 0.5], [0.5, 0.5]))
    assert e.eer == pytest.approx(0.5)


def test_eer_uses_worst_attack_type():
    # print is perfectly separated, screen fully overlaps the bona fide scores
    s = S([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.65, 0.85], ["print", "print", "screen", "screen"])
    pooled = m.eer(S([0.6, 0.7, 0.8, 0.9], [0.1, 0.2, 0.65, 0.85]))
    assert m.eer(s).eer > pooled.eer


# ---------------------------------------------------------------- AUC


def test_auc_with_ties_counted_half():
    # pairs (bf, att): (.5,.5) tie -> 1/2, (.5,.1) 1, (.9,.5) 1, (.9,.1) 1 -> 3.5 / 4
    assert m.auc(S([0.5, 0.9], [0.5, 0.1])) == pytest.approx(0.875)


def test_auc_no_face_ranks_lowest():
    # (nf,nf) 1/2, (nf,.1) 0, (.9,nf) 1, (.9,.1) 1 -> 2.5 / 4
    assert m.auc(S([NAN, 0.9], [NAN, 0.1])) == pytest.approx(0.625)


def test_auc_matches_pairwise_count():
    rng = np.random.default_rng(3)
    bf = np.round(rng.random(40), 1)  # rounding creates many ties
    at = np.round(rng.random(30) * 0.8, 1)
    pairs = (bf[:, None] > at[None, :]).sum() + 0.5 * (bf[:, None] == at[None, :]).sum()
    assert m.auc(S(bf, at)) == pytest.approx(pairs / (40 * 30))


def test_auc_extremes():
    assert m.auc(S([0.9, 0.8], [0.1])) == 1.0
    assert m.auc(S([0.1], [0.9, 0.8])) == 0.0


# ---------------------------------------------------------------- operating points

# integer scores keep the arithmetic exact: attacks 0..9, bona fide 5..14 (ties at 5..9)
BF = list(range(5, 15))
AT = list(range(0, 10))


def test_bpcer_at_apcer_picks_smallest_threshold_meeting_target():
    s = S(BF, AT)
    op = m.bpcer_at_apcer(s, 0.10)  # at most 1 of 10 attacks accepted -> t = 9 (only 9 >= 9)
    assert (op.threshold, op.apcer, op.bpcer) == (9.0, 0.1, 0.4)  # bona fide 5..8 rejected
    op = m.bpcer_at_apcer(s, 0.05)  # floor(0.5) = 0 attacks -> t = 10
    assert (op.threshold, op.apcer, op.bpcer) == (10.0, 0.0, 0.5)
    assert m.bpcer_at_apcer(s, 0.01).threshold == 10.0


def test_apcer_at_bpcer_picks_largest_threshold_meeting_target():
    s = S(BF, AT)
    op = m.apcer_at_bpcer(s, 0.10)  # at most 1 bona fide rejected -> t = 6
    assert (op.threshold, op.apcer, op.bpcer) == (6.0, 0.4, 0.1)
    op = m.apcer_at_bpcer(s, 0.01)  # none rejected -> t = 5; tied attacks 5..9 all accepted
    assert (op.threshold, op.apcer, op.bpcer) == (5.0, 0.5, 0.0)
    assert m.calibrate_threshold(s, 0.10) == 6.0


def test_operating_point_ties_are_accepted_together():
    # three presentations share 0.5: a threshold can only take all three or none
    s = S([0.5, 0.5, 0.9, 0.95], [0.5, 0.1, 0.2, 0.3])
    op = m.bpcer_at_apcer(s, 0.0)
    assert op.threshold == 0.9 and op.bpcer == 0.5  # both tied bona fide go with the tied attack
    op = m.apcer_at_bpcer(s, 0.0)
    assert op.threshold == 0.5 and op.apcer == 0.25  # and the tied attack goes with them


def test_bpcer_at_apcer_needs_every_attack_type():
    s = S(BF, AT, ["a"] * 9 + ["b"])  # type b: the single attack at 9
    op = m.bpcer_at_apcer(s, 0.10)  # b allows floor(0.1 * 1) = 0 errors -> 9 must be rejected
    assert op.threshold == 10.0 and op.apcer_per_type == {"a": 0.0, "b": 0.0}


def test_reject_all_threshold_is_just_above_the_largest_score():
    s = S([0.2], [1.0])
    op = m.bpcer_at_apcer(s, 0.0)
    assert op.threshold == np.nextafter(1.0, 2.0) and op.apcer == 0.0 and op.bpcer == 1.0


def test_unreachable_bpcer_target_when_live_faces_missing():
    s = S([NAN, 0.9], [NAN, 0.1])
    with pytest.raises(m.UnreachableTargetError, match="faces not found"):
        m.apcer_at_bpcer(s, 0.0)
    op = m.apcer_at_bpcer(s, 0.5)  # one rejection allowed: the no-face one
    assert (op.threshold, op.apcer, op.bpcer) == (0.9, 0.0, 0.5)
    assert m.evaluate(s).apcer_at_bpcer[0.01] is None


def test_target_out_of_range():
    with pytest.raises(ValueError, match="0..1"):
        m.bpcer_at_apcer(S(BF, AT), 1.5)


# ---------------------------------------------------------------- DET curve


def test_det_curve_monotone_and_complete():
    rng = np.random.default_rng(0)
    s = S(rng.random(50), rng.random(40) * 0.7, ["a", "b"] * 20)
    c = m.det_curve(s)
    assert np.all(np.diff(c.thresholds) > 0)
    assert np.all(np.diff(c.apcer) <= 0) and np.all(np.diff(c.bpcer) >= 0)
    assert c.apcer[0] == 1.0 and c.bpcer[0] == 0.0  # lowest threshold accepts every face
    assert c.apcer[-1] == 0.0 and c.bpcer[-1] == 1.0  # reject-all end
    assert np.array_equal(c.apcer, np.maximum(c.apcer_per_type["a"], c.apcer_per_type["b"]))
    for i in (0, 7, 33, len(c.thresholds) - 1):
        op = m.operating_point(s, c.thresholds[i])
        assert (op.apcer, op.bpcer) == (c.apcer[i], c.bpcer[i])


# ---------------------------------------------------------------- empty classes / bad input


@pytest.mark.parametrize(
    "bf, at, missing",
    [([], [0.1], "bona fide"), ([0.9], [], "attack"), ([], [], "no bona fide .* and no attack")],
)
def test_empty_class_errors_name_what_is_missing(bf, at, missing):
    s = S(bf, at)
    for fn in (m.evaluate, m.eer, m.auc, m.det_curve, lambda x: m.operating_point(x, 0.5)):
        with pytest.raises(m.EmptyClassError, match=missing) as exc:
            fn(s)
        assert isinstance(exc.value, ValueError) and isinstance(exc.value, EdgeError)


def test_single_rate_functions_name_their_class():
    with pytest.raises(m.EmptyClassError, match="bona fide"):
        m.bpcer(S([], [0.1]), 0.5)
    with pytest.raises(m.EmptyClassError, match="attack"):
        m.apcer(S([0.9], []), 0.5)


def test_bad_inputs():
    with pytest.raises(ValueError, match="infinite"):
        S([math.inf], [0.1])
    with pytest.raises(ValueError, match="attack_types"):
        S([0.9], [0.1, 0.2], ["print"])


# ---------------------------------------------------------------- evaluate


def test_evaluate_bundle_and_dict():
    s = S(BF, AT, ["print"] * 5 + ["screen"] * 5)
    r = m.evaluate(s, 7.0)
    assert r.n_bona_fide == 10 and r.n_attack_per_type == {"print": 5, "screen": 5}
    assert r.at_threshold.apcer_per_type == {"print": 0.0, "screen": 0.6}  # 7, 8, 9 of 5..9
    assert r.at_threshold.bpcer == 0.2  # 5, 6
    assert r.calibrated_from == "eer" and r.at_calibrated.threshold == r.eer.threshold
    cal = m.evaluate(s, 7.0, calibrate_bpcer=0.1)
    assert cal.at_calibrated.threshold == 6.0 and cal.calibrated_from == "bpcer<=0.1"
    d = r.to_dict()
    assert set(d["bpcer_at_apcer"]) == {"0.01", "0.05", "0.1"}
    assert d["at_threshold"]["acer"] == pytest.approx((0.6 + 0.2) / 2)
