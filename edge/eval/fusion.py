"""Does multi-frame fusion beat a single-frame decision at the same BPCER?

Input is per-session sequences of per-frame live scores (``None`` = a frame
without a usable face), as the pipeline's scorer reports them in
``ItemResult.frame_scores``. Two comparisons, both at one BPCER target:

* in sample: each rule's own threshold for ``BPCER <= target`` on all sessions,
  then its APCER (max over attack types), plus EER and AUC;
* leave-one-source-out: for every source, calibrate each rule's threshold on
  the other sources and count errors on the held-out one; held-out decisions
  of all folds are pooled into one APCER/BPCER per rule. This is the honest
  figure: the threshold never saw the source it is judged on.

The single-frame rule is "the first frame that has a face" (what a one-shot
system would decide on); the fused rule defaults to the mean of the frames
with a face. Both are plain callables, so the decision logic's own fusion can
be passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np

from edge.errors import EdgeError
from edge.eval import metrics as m

FrameScores = Sequence[float | None]
Fuse = Callable[[FrameScores], float | None]


def first_face(frames: FrameScores) -> float | None:
    """Score of the first frame with a face (single-frame decision)."""
    for s in frames:
        if s is not None:
            return float(s)
    return None


def mean_of_faces(frames: FrameScores) -> float | None:
    """Mean score of the frames with a face."""
    vals = [float(s) for s in frames if s is not None]
    return float(np.mean(vals)) if vals else None


def median_of_faces(frames: FrameScores) -> float | None:
    vals = [float(s) for s in frames if s is not None]
    return float(np.median(vals)) if vals else None


class FusionInputError(EdgeError, ValueError):
    """The scored items cannot be compared (per-frame scores missing)."""


@dataclass(frozen=True)
class Session:
    bona_fide: bool
    attack: str  # attack type ("" for bona fide)
    source: str
    frame_scores: tuple[float | None, ...]


@dataclass(frozen=True)
class RuleResult:
    """One rule's figures. ``loso_*`` are pooled over held-out folds (None: no usable fold)."""

    name: str
    in_sample: m.OperatingPoint | None  # at BPCER <= target; None if unreachable
    eer: float
    auc: float
    loso_apcer: float | None
    loso_bpcer: float | None

    def to_dict(self) -> dict:
        return {
            "in_sample": self.in_sample.to_dict() if self.in_sample else None,
            "eer": self.eer,
            "auc": self.auc,
            "loso_apcer": self.loso_apcer,
            "loso_bpcer": self.loso_bpcer,
        }


@dataclass(frozen=True)
class FusionComparison:
    target_bpcer: float
    rules: Mapping[str, RuleResult]
    folds: tuple[str, ...]  # held-out sources that were used
    skipped: Mapping[str, str]  # held-out source -> why it was not used

    def to_dict(self) -> dict:
        return {
            "target_bpcer": self.target_bpcer,
            "rules": {k: v.to_dict() for k, v in self.rules.items()},
            "folds": list(self.folds),
            "skipped": dict(self.skipped),
        }


def _scores(sessions: Sequence[Session], rule: Fuse) -> m.Scores:
    bf = [rule(s.frame_scores) for s in sessions if s.bona_fide]
    at = [s for s in sessions if not s.bona_fide]
    return m.Scores.from_lists(bf, [rule(s.frame_scores) for s in at], [s.attack or m.UNSPECIFIED_ATTACK for s in at])


def _loso(sessions: Sequence[Session], rule: Fuse, target: float) -> tuple[float | None, float | None, list[str], dict[str, str]]:
    sources = sorted({s.source for s in sessions})
    used: list[str] = []
    skipped: dict[str, str] = {}
    live_rej = live_n = 0
    att_acc: dict[str, int] = {}
    att_n: dict[str, int] = {}
    for held in sources:
        train = [s for s in sessions if s.source != held]
        test = [s for s in sessions if s.source == held]
        tr = _scores(train, rule)
        if tr.n_bona_fide == 0 or tr.n_attack == 0:
            skipped[held] = "the other sources lack bona fide or attack sessions"
            continue
        try:
            thr = m.calibrate_threshold(tr, target)
        except m.UnreachableTargetError as err:
            skipped[held] = str(err)
            continue
        used.append(held)
        for s in test:
            score = rule(s.frame_scores)
            accepted = score is not None and score >= thr
            if s.bona_fide:
                live_n += 1
                live_rej += not accepted
            else:
                t = s.attack or m.UNSPECIFIED_ATTACK
                att_n[t] = att_n.get(t, 0) + 1
                att_acc[t] = att_acc.get(t, 0) + accepted
    apcer = max((att_acc[t] / att_n[t] for t in att_n), default=None)
    bpcer = live_rej / live_n if live_n else None
    return apcer, bpcer, used, skipped


def compare_fusion(
    sessions: Sequence[Session],
    *,
    target_bpcer: float = 0.05,
    rules: Mapping[str, Fuse] | None = None,
) -> FusionComparison:
    """Compare rules (default: single first-face frame vs mean of faces) at one BPCER."""
    rules = dict(rules or {"single_frame": first_face, "fused_mean": mean_of_faces})
    out: dict[str, RuleResult] = {}
    folds: list[str] = []
    skipped: dict[str, str] = {}
    for name, rule in rules.items():
        sc = _scores(sessions, rule)
        sc.require_both("the fusion comparison")
        try:
            op: m.OperatingPoint | None = m.apcer_at_bpcer(sc, target_bpcer)
        except m.UnreachableTargetError:
            op = None
        la, lb, folds, skipped = _loso(sessions, rule, target_bpcer)
        out[name] = RuleResult(name, op, m.eer(sc).eer, m.auc(sc), la, lb)
    return FusionComparison(target_bpcer, out, tuple(folds), skipped)


def sessions_from_scored(scored) -> list[Session]:
    """Sessions from :func:`edge.eval.report.score_dataset` output (items need ``frame_scores``)."""
    out = []
    for s in scored:
        frames = s.result.frame_scores
        if not frames:
            if s.result.score is not None and s.result.frames > 1:
                raise FusionInputError(
                    f"{s.item.rel}: the scorer gave a session score but no per-frame scores "
                    "(ItemResult.frame_scores); the fusion comparison needs them"
                )
            frames = (s.result.score,)  # one frame, or no usable face at all
        out.append(Session(s.item.bona_fide, s.item.attack, s.item.source, tuple(frames)))
    return out


def render(c: FusionComparison) -> str:
    """A small text table of a comparison."""

    def pct(x):
        return "n/a" if x is None else f"{100.0 * x:.1f}%"

    lines = [f"fusion at BPCER <= {c.target_bpcer:.0%} (APCER = max over attack types)"]
    lines.append(f"{'rule':<16}{'APCER':>9}{'BPCER':>9}{'EER':>8}{'AUC':>8}{'LOSO APCER':>12}{'LOSO BPCER':>12}")
    for name, r in c.rules.items():
        ins = r.in_sample
        lines.append(
            f"{name:<16}{pct(ins.apcer if ins else None):>9}{pct(ins.bpcer if ins else None):>9}"
            f"{pct(r.eer):>8}{r.auc:>8.4f}{pct(r.loso_apcer):>12}{pct(r.loso_bpcer):>12}"
        )
    if c.folds:
        lines.append(f"leave-one-source-out over {len(c.folds)} source(s): thresholds calibrated without the held-out source")
    for src, why in c.skipped.items():
        lines.append(f"fold {src} skipped: {why}")
    return "\n".join(lines) + "\n"
