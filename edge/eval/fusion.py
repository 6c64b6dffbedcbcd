"""Does multi-frame fusion beat a single-frame decision at the same BPCER?

Input is per-session sequences of per-frame live scores (``None`` = a frame
without a usable face), as the pipeline's scorer reports them in
``ItemResult.frame_scores`` (``edge eval --fusion`` scores every frame of a
clip, not only those up to the verdict). Three rules are compared:

* ``single_frame``: the first frame with a usable face (a one-shot system);
* ``fused_mean``: the mean over every frame with a usable face;
* ``decision``: the runtime's own verdict logic (:class:`edge.decision.Decision`
  with the configured window and vote counts), replayed on the frames at every
  threshold. It is a verdict, not a score: its operating points come from
  sweeping ``decision.threshold``, and it has no AUC.

Every rule is reduced to an *accept matrix* (session x threshold) on one
common grid of thresholds: every distinct score of every rule, plus one value
above them all. That makes the rules comparable on identical terms, and exact:
a decision replay is only re-run where its outcome can change (at its own
votes and running means).

Figures per rule at one BPCER target: in sample (each rule's own best
threshold with BPCER <= target, its APCER; EER), held out (thresholds
calibrated on a random half of the groups, judged on the other half, averaged
over many splits), leave-one-source-out when there are sources to leave out,
and a bootstrap over groups of the difference to ``single_frame`` (confidence
interval and a one-sided p-value). APCER here is pooled over attack types, so
a type with two presentations cannot dominate; per-type figures are in the main
report. A *group* is what sessions share when they are not independent: the
subject or the source image they were made from (manifest column ``group``);
resampling and splitting are by group, never by session.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from edge.errors import EdgeError
from edge.eval import metrics as m

FrameScores = Sequence[float | None]
Fuse = Callable[[FrameScores], float | None]

#: Frame interval used when replaying the decision (the timeline of a 30 fps clip).
REPLAY_FRAME_MS = 1000.0 / 30.0


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


SCORE_RULES: Mapping[str, Fuse] = {"single_frame": first_face, "fused_mean": mean_of_faces}


class FusionInputError(EdgeError, ValueError):
    """The scored items cannot be compared (per-frame scores missing, one class empty)."""


@dataclass(frozen=True)
class Session:
    bona_fide: bool
    attack: str  # attack type ("" for bona fide)
    source: str
    frame_scores: tuple[float | None, ...]
    group: str = ""  # sessions made from one subject or image share a group ("" = its own)


# -- accept matrices ---------------------------------------------------------------------------
def _grid(values: np.ndarray) -> np.ndarray:
    """Every distinct finite value, plus one above them all (where everything is rejected)."""
    v = np.unique(values[np.isfinite(values)])
    if v.size == 0:
        return np.array([0.5])
    return np.append(v, np.nextafter(v[-1], np.inf))


def _score_accept(scores: np.ndarray, grid: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return scores[:, None] >= grid[None, :]  # NaN (no usable face) is never accepted


def decision_accept(frames: FrameScores, grid: np.ndarray, config) -> np.ndarray:
    """Whether the runtime's decision passes this session, at every threshold of ``grid``.

    The verdict depends on the threshold only through comparisons with the votes and
    their running means, so it is replayed once per interval between those values.
    """
    from dataclasses import replace

    from edge.decision import Decision
    from edge.types import VerdictKind

    votes = [float(s) for s in frames if s is not None]
    out = np.zeros(grid.size, dtype=bool)
    if not votes:
        return out
    means = np.cumsum(votes) / np.arange(1, len(votes) + 1)
    points = sorted(set(votes) | {float(x) for x in means})
    # Thresholds with the same number of breakpoints at or above them give the same verdict.
    keys = [len(points) - bisect.bisect_left(points, float(t)) for t in grid]
    seen: dict[int, bool] = {}
    for i, (t, k) in enumerate(zip(grid, keys)):
        if k not in seen:
            d = Decision(replace(config, threshold=float(min(max(t, 0.0), 1.0))))
            d.start(0.0)
            v = None
            for j, s in enumerate(frames):
                v = d.on_frame(j * REPLAY_FRAME_MS, faces=0 if s is None else 1, score=None if s is None else float(s))
                if v is not None:
                    break
            if v is None:
                v = d.on_end(len(frames) * REPLAY_FRAME_MS)
            # Thresholds outside [0, 1] cannot be configured; clamped, they mean "accept all" / "reject all".
            seen[k] = v.kind is VerdictKind.PASS and 0.0 <= t <= 1.0
        out[i] = seen[k]
    return out


# -- results ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Delta:
    """Bootstrap of (rule - single_frame): point estimate, 95 % interval, one-sided p (rule not better)."""

    value: float
    low: float
    high: float
    p: float

    def to_dict(self) -> dict:
        return {"value": self.value, "ci95": [self.low, self.high], "p_not_better": self.p}


@dataclass(frozen=True)
class RuleResult:
    name: str
    threshold: float | None  # in sample, at the BPCER target
    apcer: float | None
    bpcer: float | None
    eer: float
    auc: float | None  # None for the decision (a verdict has no ranking)
    held_out_apcer: float | None = None
    held_out_bpcer: float | None = None
    loso_apcer: float | None = None
    loso_bpcer: float | None = None
    apcer_delta: Delta | None = None
    eer_delta: Delta | None = None

    def to_dict(self) -> dict:
        d = {k: getattr(self, k) for k in ("threshold", "apcer", "bpcer", "eer", "auc", "held_out_apcer",
                                           "held_out_bpcer", "loso_apcer", "loso_bpcer")}
        d["apcer_delta_vs_single"] = self.apcer_delta.to_dict() if self.apcer_delta else None
        d["eer_delta_vs_single"] = self.eer_delta.to_dict() if self.eer_delta else None
        return d


@dataclass(frozen=True)
class FusionComparison:
    target_bpcer: float
    rules: Mapping[str, RuleResult]
    sessions: int
    groups: int
    splits: int
    bootstrap: int
    folds: tuple[str, ...]  # held-out sources that were used
    skipped: Mapping[str, str] = field(default_factory=dict)  # held-out source -> why it was not used

    def to_dict(self) -> dict:
        return {
            "target_bpcer": self.target_bpcer,
            "sessions": self.sessions,
            "groups": self.groups,
            "held_out_splits": self.splits,
            "bootstrap": self.bootstrap,
            "apcer": "pooled over attack types",
            "rules": {k: v.to_dict() for k, v in self.rules.items()},
            "folds": list(self.folds),
            "skipped": dict(self.skipped),
        }


def compare_fusion(
    sessions: Sequence[Session],
    *,
    target_bpcer: float = 0.05,
    decision=None,
    rules: Mapping[str, Fuse] | None = None,
    splits: int = 200,
    bootstrap: int = 1000,
    seed: int = 0,
) -> FusionComparison:
    """Compare ``single_frame``, ``fused_mean`` (or ``rules``) and, when ``decision`` (a
    :class:`~edge.decision.DecisionConfig`) is given, the runtime's verdict logic."""
    if not sessions:
        raise FusionInputError("no sessions to compare")
    live = np.array([s.bona_fide for s in sessions])
    if live.all() or not live.any():
        raise FusionInputError("the fusion comparison needs bona fide and attack sessions")
    rules = dict(rules or SCORE_RULES)
    if "single_frame" not in rules:
        rules = {"single_frame": first_face, **rules}
    scores = {name: np.array([np.nan if (v := f(s.frame_scores)) is None else v for s in sessions], dtype=np.float64)
              for name, f in rules.items()}
    frame_values = np.array([v for s in sessions for v in s.frame_scores if v is not None], dtype=np.float64)
    grid = _grid(np.concatenate([frame_values, *scores.values()]))
    acc = {name: _score_accept(sc, grid) for name, sc in scores.items()}
    if decision is not None:
        acc["decision"] = np.array([decision_accept(s.frame_scores, grid, decision) for s in sessions])

    # Groups: resampling and splitting units. Keyed with the label and the source too, so a group
    # never mixes classes and lies inside one source (leave-one-source-out then splits by group as well).
    keys = np.array([f"{s.group or '#' + str(i)}\x00{int(s.bona_fide)}\x00{s.source}" for i, s in enumerate(sessions)])
    uniq, first, gidx = np.unique(keys, return_index=True, return_inverse=True)
    g_live = live[first]
    g_src = np.array([sessions[i].source for i in first])
    n_g = np.bincount(gidx, minlength=uniq.size).astype(np.float64)
    acc_g = {}
    for name, a in acc.items():
        per_group = np.zeros((uniq.size, grid.size))
        np.add.at(per_group, gidx, a.astype(np.float64))
        acc_g[name] = per_group
    rng = np.random.default_rng(seed)

    def rates(w: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(APCER, BPCER), one row per row of group weights ``w`` (draws x groups)."""
        g = acc_g[name]
        wl, wa = w[:, g_live], w[:, ~g_live]
        with np.errstate(invalid="ignore", divide="ignore"):
            n_live = (wl @ n_g[g_live])[:, None]
            bp = (n_live - wl @ g[g_live]) / n_live  # rejected / total: exact where 1 - accepted/total is not
            ap = (wa @ g[~g_live]) / (wa @ n_g[~g_live])[:, None]
        return ap, bp

    def best(ap: np.ndarray, bp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row: index of the lowest APCER with BPCER <= target (ties: the lower BPCER, then the
        higher threshold, failing closed), and whether there is any."""
        ok = bp <= target_bpcer + 1e-12
        key = np.where(ok, ap + 1e-9 * bp, np.inf)[:, ::-1]
        return key.shape[1] - 1 - np.argmin(key, axis=1), ok.any(axis=1)

    def eers(ap: np.ndarray, bp: np.ndarray) -> np.ndarray:
        i = np.argmin(np.abs(ap - bp), axis=1)
        r = np.arange(ap.shape[0])
        return (ap[r, i] + bp[r, i]) / 2

    def calibrated(train: np.ndarray, test: np.ndarray, name: str) -> tuple[float | None, float | None]:
        """Thresholds chosen on the ``train`` weights, errors counted on the ``test`` weights (one row
        per split or fold) and pooled over the rows whose training reached the target."""
        i, ok = best(*rates(train, name))
        r = np.flatnonzero(ok)
        if r.size == 0:
            return None, None
        ap_t, bp_t = rates(test[r], name)
        k, j = np.arange(r.size), i[r]
        att_n = test[r][:, ~g_live] @ n_g[~g_live]
        live_n = test[r][:, g_live] @ n_g[g_live]
        return (float(np.nansum(ap_t[k, j] * att_n) / att_n.sum()) if att_n.sum() else None,
                float(np.nansum(bp_t[k, j] * live_n) / live_n.sum()) if live_n.sum() else None)

    # Held out: random halves of the groups, stratified by class; threshold on one half, errors on the other.
    train = np.zeros((splits, uniq.size))
    for k in range(splits):
        for cls in (True, False):
            ids = np.flatnonzero(g_live == cls)
            train[k, rng.permutation(ids)[: ids.size // 2]] = 1.0
    held = {name: calibrated(train, 1.0 - train, name) if splits else (None, None) for name in acc}

    # Leave one source out: thresholds calibrated on the other sources.
    folds: list[str] = []
    skipped: dict[str, str] = {}
    sources = sorted(set(g_src))
    for held_src in sources if len(sources) > 1 else ():
        rest = g_src != held_src
        if not (g_live & rest).any() or not (~g_live & rest).any():
            skipped[held_src] = "the other sources lack bona fide or attack sessions"
        else:
            folds.append(held_src)
    fold_test = np.array([(g_src == f).astype(np.float64) for f in folds]).reshape(len(folds), uniq.size)
    loso = {name: calibrated(1.0 - fold_test, fold_test, name) if folds else (None, None) for name in acc}

    # Bootstrap by group, stratified by class: how often each group is drawn, per draw.
    counts = np.zeros((bootstrap, uniq.size))
    for cls in (True, False):
        ids = np.flatnonzero(g_live == cls)
        draws = rng.integers(0, ids.size, (bootstrap, ids.size))
        np.add.at(counts, (np.arange(bootstrap)[:, None], ids[draws]), 1.0)
    boot: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in acc:
        if bootstrap == 0:
            boot[name] = (np.empty(0), np.empty(0))
            continue
        ap, bp = rates(counts, name)
        i, ok = best(ap, bp)
        boot[name] = (np.where(ok, ap[np.arange(bootstrap), i], np.nan), eers(ap, bp))

    def delta(x: np.ndarray, y: np.ndarray, point: float) -> Delta | None:
        d = x - y
        d = d[np.isfinite(d)]
        if d.size == 0:
            return None
        lo, hi = np.percentile(d, [2.5, 97.5])
        return Delta(point, float(lo), float(hi), float((d >= 0).mean()))

    out: dict[str, RuleResult] = {}
    ones = np.ones((1, uniq.size))
    base_ap, base_bp = rates(ones, "single_frame")
    base_i, base_ok = best(base_ap, base_bp)
    base_eer = float(eers(base_ap, base_bp)[0])
    for name in acc:
        ap, bp = rates(ones, name)
        i, ok = best(ap, bp)
        i = int(i[0]) if ok[0] else None
        e = float(eers(ap, bp)[0])
        lo_a, lo_b = loso[name]
        d_ap = d_eer = None
        if name != "single_frame":
            if i is not None and base_ok[0]:
                d_ap = delta(boot[name][0], boot["single_frame"][0], float(ap[0, i] - base_ap[0, base_i[0]]))
            d_eer = delta(boot[name][1], boot["single_frame"][1], e - base_eer)
        out[name] = RuleResult(
            name=name,
            threshold=float(grid[i]) if i is not None else None,
            apcer=float(ap[0, i]) if i is not None else None,
            bpcer=float(bp[0, i]) if i is not None else None,
            eer=e,
            auc=m.auc(m.Scores.from_lists(scores[name][live], scores[name][~live])) if name in scores else None,
            held_out_apcer=held[name][0],
            held_out_bpcer=held[name][1],
            loso_apcer=lo_a,
            loso_bpcer=lo_b,
            apcer_delta=d_ap,
            eer_delta=d_eer,
        )
    return FusionComparison(target_bpcer, out, len(sessions), int(uniq.size), splits, bootstrap, tuple(folds), skipped)


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
        group = getattr(s.item, "group", "") or s.item.rel
        out.append(Session(s.item.bona_fide, s.item.attack, s.item.source, tuple(frames), group))
    return out


def render(c: FusionComparison) -> str:
    """A small text table of a comparison."""

    def pct(x):
        return "n/a" if x is None else f"{100.0 * x:.1f}%"

    def dl(d: Delta | None) -> str:
        if d is None:
            return "-"
        return f"{100 * d.value:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}] p={d.p:.3f}"

    lines = [
        f"fusion at BPCER <= {c.target_bpcer:.0%}: {c.sessions} sessions from {c.groups} groups "
        "(APCER pooled over attack types)",
        f"{'rule':<14}{'APCER':>8}{'BPCER':>8}{'EER':>7}{'AUC':>8}{'held-out APCER/BPCER':>22}"
        f"{'LOSO APCER/BPCER':>18}",
    ]
    for name, r in c.rules.items():
        auc = f"{r.auc:.4f}" if r.auc is not None else "-"
        ho = f"{pct(r.held_out_apcer)} / {pct(r.held_out_bpcer)}" if r.held_out_apcer is not None else "n/a"
        lo = f"{pct(r.loso_apcer)} / {pct(r.loso_bpcer)}" if r.loso_apcer is not None else "n/a"
        lines.append(f"{name:<14}{pct(r.apcer):>8}{pct(r.bpcer):>8}{pct(r.eer):>7}{auc:>8}{ho:>22}{lo:>18}")
    lines.append(f"difference to single_frame, bootstrap over groups ({c.bootstrap} draws): value [95% CI] "
                 "p = share of draws where the rule is not better")
    for name, r in c.rules.items():
        if name != "single_frame":
            lines.append(f"  {name:<12} APCER {dl(r.apcer_delta)}   EER {dl(r.eer_delta)}")
    lines.append(f"held out: threshold calibrated on a random half of the groups, judged on the other half "
                 f"({c.splits} splits, errors pooled)")
    if c.folds:
        lines.append(f"leave-one-source-out over {len(c.folds)} source(s): thresholds calibrated without the "
                     "held-out source")
    for s, why in c.skipped.items():
        lines.append(f"fold {s} skipped: {why}")
    return "\n".join(lines) + "\n"
