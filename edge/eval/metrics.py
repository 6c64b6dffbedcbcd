"""ISO/IEC 30107-3 presentation-attack-detection metrics from liveness scores.

Conventions (everything in this module follows them):

* A score is "higher = more live" (bona fide). A presentation is **accepted as
  bona fide when ``score >= threshold``** and classified as an attack when
  ``score < threshold``. A score exactly equal to the threshold is therefore
  accepted: ties at the threshold go to "bona fide", which is the conservative
  side for APCER (a tied attack counts as an error).
* **No face found** (or, from the pipeline, no frame with a face that passed
  the quality gate: no usable face) is stored as ``NaN``. Such a presentation is never accepted
  at any threshold (``NaN >= t`` is false): a bona fide presentation without a
  face is a rejected bona fide (it counts in BPCER), an attack without a face
  is a rejected attack (it is *not* an APCER error). The face-not-found rate is
  reported separately by :func:`face_not_found`. Every metric here, including
  the threshold-free ones (EER, AUC, DET, operating points), uses this one rule,
  so the numbers describe the whole system as a person at the door meets it.
* APCER is computed per attack type (PAI species); the APCER of an operating
  point, of the DET curve, of the EER and of the ``@`` operating points is the
  **maximum over attack types** (ISO's worst-case species). AUC is pooled
  over all attacks (it is a ranking statistic, with no per-species form).
* Candidate thresholds are the distinct finite scores plus one value just
  above the largest (``numpy.nextafter``), where every presentation is
  rejected. Operating points are chosen exactly from that set; nothing is
  interpolated except the EER (see :func:`eer`).
* Rates targets (``apcer=0.05``) are "at most": the count of errors may not
  exceed ``floor(target * n)``.

Pure numpy; no per-item output is produced anywhere (scores are personal data).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from edge.errors import EdgeError

#: Attack type given to attack presentations whose type is unknown.
UNSPECIFIED_ATTACK = "unspecified"

#: The fixed operating points reported by default (1 %, 5 %, 10 %).
DEFAULT_TARGETS = (0.01, 0.05, 0.10)


class EmptyClassError(EdgeError, ValueError):
    """A metric needs bona fide and attack presentations, and one class is empty."""


class UnreachableTargetError(EdgeError, ValueError):
    """No threshold in the score set meets the requested error-rate target."""


def _as_scores(values: Iterable[float | None], what: str) -> np.ndarray:
    out = np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)
    if np.isinf(out).any():
        raise ValueError(f"{what} scores contain an infinite value; scores must be finite or None (no face)")
    return out


@dataclass(frozen=True)
class Scores:
    """Scores of one evaluation: bona fide and attack presentations.

    ``bona_fide`` and ``attack`` are float64 arrays, ``NaN`` = no face found.
    ``attack_types[i]`` is the attack type (PAI species) of ``attack[i]``.
    """

    bona_fide: np.ndarray = field(repr=False)
    attack: np.ndarray = field(repr=False)
    attack_types: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_lists(
        cls,
        bona_fide: Iterable[float | None],
        attack: Iterable[float | None],
        attack_types: Sequence[str] | None = None,
    ) -> "Scores":
        bf = _as_scores(bona_fide, "bona fide")
        at = _as_scores(attack, "attack")
        if attack_types is None:
            types = (UNSPECIFIED_ATTACK,) * len(at)
        else:
            types = tuple(t or UNSPECIFIED_ATTACK for t in attack_types)
            if len(types) != len(at):
                raise ValueError(f"attack_types has {len(types)} entries for {len(at)} attack scores")
        return cls(bf, at, types)

    @property
    def n_bona_fide(self) -> int:
        return int(self.bona_fide.size)

    @property
    def n_attack(self) -> int:
        return int(self.attack.size)

    def types(self) -> tuple[str, ...]:
        """Distinct attack types, sorted."""
        return tuple(sorted(set(self.attack_types)))

    def require_both(self, what: str = "this metric") -> None:
        missing = []
        if self.n_bona_fide == 0:
            missing.append("bona fide (label 'live')")
        if self.n_attack == 0:
            missing.append("attack (label 'spoof')")
        if missing:
            raise EmptyClassError(
                f"{what} needs both bona fide and attack presentations, but there are no "
                f"{' and no '.join(missing)} presentations; add them to the dataset or manifest"
            )


# --------------------------------------------------------------------------- rates at one threshold


def _accepted(scores: np.ndarray, threshold: float) -> np.ndarray:
    # NaN (no face) compares false, so it is never accepted.
    with np.errstate(invalid="ignore"):
        return scores >= threshold


def apcer_per_type(scores: Scores, threshold: float) -> dict[str, float]:
    """Per attack type: fraction of that type's attack presentations accepted as bona fide."""
    if scores.n_attack == 0:
        raise EmptyClassError("APCER needs attack presentations (label 'spoof'), and there are none")
    acc = _accepted(scores.attack, threshold)
    types = np.array(scores.attack_types, dtype=object)
    return {t: float(acc[types == t].mean()) for t in scores.types()}


def apcer(scores: Scores, threshold: float) -> float:
    """Maximum over attack types of the per-type APCER."""
    return max(apcer_per_type(scores, threshold).values())


def bpcer(scores: Scores, threshold: float) -> float:
    """Fraction of bona fide presentations classified as attacks (incl. no face)."""
    if scores.n_bona_fide == 0:
        raise EmptyClassError("BPCER needs bona fide presentations (label 'live'), and there are none")
    rejected = scores.n_bona_fide - int(_accepted(scores.bona_fide, threshold).sum())
    return rejected / scores.n_bona_fide


@dataclass(frozen=True)
class OperatingPoint:
    """Error rates at one threshold. ``apcer`` is the maximum over attack types."""

    threshold: float
    apcer_per_type: Mapping[str, float]
    apcer: float
    bpcer: float

    @property
    def acer(self) -> float:
        """(max APCER + BPCER) / 2."""
        return (self.apcer + self.bpcer) / 2.0

    def to_dict(self) -> dict:
        return {
            "threshold": self.threshold,
            "apcer_per_type": dict(self.apcer_per_type),
            "apcer": self.apcer,
            "bpcer": self.bpcer,
            "acer": self.acer,
        }


def operating_point(scores: Scores, threshold: float) -> OperatingPoint:
    """APCER per type, max APCER, BPCER and ACER at ``threshold``."""
    scores.require_both("APCER/BPCER/ACER")
    per = apcer_per_type(scores, threshold)
    return OperatingPoint(float(threshold), per, max(per.values()), bpcer(scores, threshold))


def acer(scores: Scores, threshold: float) -> float:
    return operating_point(scores, threshold).acer


# --------------------------------------------------------------------------- rates over all thresholds


def candidate_thresholds(scores: Scores) -> np.ndarray:
    """Distinct finite scores ascending, plus one value above the largest (reject all)."""
    allv = np.concatenate([scores.bona_fide, scores.attack])
    finite = np.unique(allv[np.isfinite(allv)])
    if finite.size == 0:
        # Nobody had a face: the only distinguishable operating point is "reject all".
        return np.array([0.0])
    return np.append(finite, np.nextafter(finite[-1], np.inf))


def _count_ge(sorted_scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of ``sorted_scores`` (ascending, finite) are >= each threshold."""
    return sorted_scores.size - np.searchsorted(sorted_scores, thresholds, side="left")


@dataclass(frozen=True)
class DetCurve:
    """Error rates over every candidate threshold (ascending thresholds).

    ``apcer`` is the maximum over attack types; ``apcer_per_type`` holds each
    type's curve. APCER falls and BPCER rises with the threshold.
    """

    thresholds: np.ndarray = field(repr=False)
    apcer: np.ndarray = field(repr=False)
    bpcer: np.ndarray = field(repr=False)
    apcer_per_type: Mapping[str, np.ndarray] = field(repr=False)


def det_curve(scores: Scores) -> DetCurve:
    """APCER (max over types) and BPCER at every candidate threshold."""
    scores.require_both("the DET curve")
    t = candidate_thresholds(scores)
    bf = np.sort(scores.bona_fide[np.isfinite(scores.bona_fide)])
    bp = (scores.n_bona_fide - _count_ge(bf, t)) / scores.n_bona_fide
    types = np.array(scores.attack_types, dtype=object)
    per: dict[str, np.ndarray] = {}
    for name in scores.types():
        sel = scores.attack[types == name]
        n = sel.size
        fin = np.sort(sel[np.isfinite(sel)])
        per[name] = _count_ge(fin, t) / n
    ap = np.max(np.vstack(list(per.values())), axis=0)
    return DetCurve(t, ap, bp, per)


def _max_errors(target: float, n: int) -> int:
    if not 0.0 <= target <= 1.0:
        raise ValueError(f"error-rate target must be within 0..1, got {target!r}")
    # the epsilon absorbs decimal-to-binary rounding of e.g. 0.07 * 100
    return int(math.floor(target * n + 1e-9))


def _type_counts(scores: Scores) -> dict[str, int]:
    return {t: scores.attack_types.count(t) for t in scores.types()}


def bpcer_at_apcer(scores: Scores, target: float) -> OperatingPoint:
    """Lowest-BPCER operating point whose APCER (every type) is at most ``target``.

    The threshold is the *smallest* candidate at which every attack type has at
    most ``floor(target * n_type)`` accepted presentations. Because a score
    equal to the threshold is accepted, an attack tied with bona fide scores is
    accepted together with them, so ties can push the threshold above the tie.
    The reject-all candidate always meets the target, so this never fails.
    """
    curve = det_curve(scores)
    counts = _type_counts(scores)
    ok = np.ones(curve.thresholds.size, dtype=bool)
    for name, rates in curve.apcer_per_type.items():
        n = counts[name]
        ok &= np.rint(rates * n) <= _max_errors(target, n)
    idx = int(np.argmax(ok))  # first True; the last candidate is always True
    return operating_point(scores, float(curve.thresholds[idx]))


def apcer_at_bpcer(scores: Scores, target: float) -> OperatingPoint:
    """Lowest-APCER operating point whose BPCER is at most ``target``.

    The threshold is the *largest* candidate with at most
    ``floor(target * n_bona_fide)`` rejected bona fide presentations (no-face
    ones included). Raises :class:`UnreachableTargetError` when even accepting
    every face rejects too many bona fide presentations (too many live faces
    not found).
    """
    curve = det_curve(scores)
    n = scores.n_bona_fide
    ok = np.rint(curve.bpcer * n) <= _max_errors(target, n)
    if not ok.any():
        raise UnreachableTargetError(
            f"BPCER <= {target:.2%} is unreachable: {curve.bpcer[0]:.2%} of bona fide presentations are "
            "rejected even at the lowest threshold (faces not found); fix detection or relax the target"
        )
    idx = int(np.flatnonzero(ok)[-1])
    return operating_point(scores, float(curve.thresholds[idx]))


def calibrate_threshold(scores: Scores, target_bpcer: float) -> float:
    """Threshold for a target BPCER: the largest score-set threshold with BPCER <= target.

    Same selection as :func:`apcer_at_bpcer`; returned value is one of the
    scores (accepted when equal), or just above the largest score.
    """
    return apcer_at_bpcer(scores, target_bpcer).threshold


@dataclass(frozen=True)
class EqualErrorRate:
    eer: float
    threshold: float


def eer(scores: Scores) -> EqualErrorRate:
    """Equal error rate of max-APCER and BPCER, interpolated between neighbouring thresholds.

    Walk the ascending candidate thresholds ``t_k``; let ``d_k = APCER_k - BPCER_k``
    (APCER falls, BPCER rises, so ``d`` is non-increasing). At the first ``k``
    with ``d_k <= 0``, both rates are interpolated linearly between ``t_{k-1}``
    and ``t_k`` with weight ``a = d_{k-1} / (d_{k-1} - d_k)``; they are equal
    there, and that value is the EER. The threshold is interpolated the same
    way, ``t_{k-1} + a (t_k - t_{k-1})``. If ``d_k == 0`` exactly the EER is the
    rate at ``t_k`` and the threshold is ``t_k`` (so a perfectly separated set
    has EER 0 at the lowest bona fide score). The rates measured *at* an
    interpolated threshold are the step values there, so they can differ from
    the EER by up to one presentation. If already ``d_0 <= 0`` (curves
    never cross, e.g. all attacks without a face), EER is ``(APCER_0 + BPCER_0)/2``
    at ``t_0``.
    """
    curve = det_curve(scores)
    d = curve.apcer - curve.bpcer
    k = int(np.argmax(d <= 0))  # reject-all candidate has d = -1 (or 0), so one exists
    if k == 0:
        return EqualErrorRate(float((curve.apcer[0] + curve.bpcer[0]) / 2), float(curve.thresholds[0]))
    d0, d1 = float(d[k - 1]), float(d[k])
    a = d0 / (d0 - d1)
    rate = curve.apcer[k - 1] + a * (curve.apcer[k] - curve.apcer[k - 1])
    thr = curve.thresholds[k - 1] + a * (curve.thresholds[k] - curve.thresholds[k - 1])
    return EqualErrorRate(float(rate), float(thr))


def auc(scores: Scores) -> float:
    """Probability that a bona fide presentation outscores an attack; ties count half.

    Mann-Whitney U / (n_bf * n_attack), from average ranks. No-face scores rank
    below every score (tied with each other), matching the rejection rule.
    """
    scores.require_both("AUC")
    bf = np.where(np.isnan(scores.bona_fide), -np.inf, scores.bona_fide)
    at = np.where(np.isnan(scores.attack), -np.inf, scores.attack)
    allv = np.concatenate([bf, at])
    _, inverse, counts = np.unique(allv, return_inverse=True, return_counts=True)
    # average 1-based rank of each distinct value
    ends = np.cumsum(counts)
    avg_rank = ends - (counts - 1) / 2.0
    ranks = avg_rank[inverse]
    n1, n2 = bf.size, at.size
    u = ranks[:n1].sum() - n1 * (n1 + 1) / 2.0
    return float(u / (n1 * n2))


@dataclass(frozen=True)
class FaceNotFound:
    bona_fide: int
    attack: int
    n_bona_fide: int
    n_attack: int

    @property
    def rate(self) -> float:
        n = self.n_bona_fide + self.n_attack
        return (self.bona_fide + self.attack) / n if n else 0.0

    @property
    def bona_fide_rate(self) -> float:
        return self.bona_fide / self.n_bona_fide if self.n_bona_fide else 0.0

    @property
    def attack_rate(self) -> float:
        return self.attack / self.n_attack if self.n_attack else 0.0

    def to_dict(self) -> dict:
        return {
            "bona_fide": self.bona_fide,
            "attack": self.attack,
            "rate": self.rate,
            "bona_fide_rate": self.bona_fide_rate,
            "attack_rate": self.attack_rate,
        }


def face_not_found(scores: Scores) -> FaceNotFound:
    return FaceNotFound(
        int(np.isnan(scores.bona_fide).sum()),
        int(np.isnan(scores.attack).sum()),
        scores.n_bona_fide,
        scores.n_attack,
    )


# --------------------------------------------------------------------------- everything at once


@dataclass(frozen=True)
class Metrics:
    """The full metric set of one score set."""

    n_bona_fide: int
    n_attack_per_type: Mapping[str, int]
    face_not_found: FaceNotFound
    at_threshold: OperatingPoint | None  # the configured threshold, if one was given
    at_calibrated: OperatingPoint
    calibrated_from: str  # "eer" or "bpcer<=0.05"
    bpcer_at_apcer: Mapping[float, OperatingPoint]
    apcer_at_bpcer: Mapping[float, OperatingPoint | None]  # None: unreachable
    eer: EqualErrorRate
    auc: float

    def to_dict(self) -> dict:
        return {
            "counts": {
                "bona_fide": self.n_bona_fide,
                "attack": sum(self.n_attack_per_type.values()),
                "attack_per_type": dict(self.n_attack_per_type),
            },
            "face_not_found": self.face_not_found.to_dict(),
            "at_threshold": self.at_threshold.to_dict() if self.at_threshold else None,
            "at_calibrated": {"from": self.calibrated_from, **self.at_calibrated.to_dict()},
            "bpcer_at_apcer": {f"{k:g}": v.to_dict() for k, v in self.bpcer_at_apcer.items()},
            "apcer_at_bpcer": {f"{k:g}": (v.to_dict() if v else None) for k, v in self.apcer_at_bpcer.items()},
            "eer": {"eer": self.eer.eer, "threshold": self.eer.threshold},
            "auc": self.auc,
        }


def evaluate(
    scores: Scores,
    threshold: float | None = None,
    *,
    calibrate_bpcer: float | None = None,
    targets: Sequence[float] = DEFAULT_TARGETS,
) -> Metrics:
    """Every metric of :mod:`edge.eval.metrics` for one score set.

    The calibrated operating point is at :func:`calibrate_threshold` for
    ``calibrate_bpcer`` when given, else at the EER threshold.
    """
    scores.require_both("evaluation")
    e = eer(scores)
    if calibrate_bpcer is None:
        cal, cal_from = operating_point(scores, e.threshold), "eer"
    else:
        cal = apcer_at_bpcer(scores, calibrate_bpcer)
        cal_from = f"bpcer<={calibrate_bpcer:g}"
    a_at_b: dict[float, OperatingPoint | None] = {}
    for t in targets:
        try:
            a_at_b[t] = apcer_at_bpcer(scores, t)
        except UnreachableTargetError:
            a_at_b[t] = None
    return Metrics(
        n_bona_fide=scores.n_bona_fide,
        n_attack_per_type=_type_counts(scores),
        face_not_found=face_not_found(scores),
        at_threshold=operating_point(scores, threshold) if threshold is not None else None,
        at_calibrated=cal,
        calibrated_from=cal_from,
        bpcer_at_apcer={t: bpcer_at_apcer(scores, t) for t in targets},
        apcer_at_bpcer=a_at_b,
        eer=e,
        auc=auc(scores),
    )
