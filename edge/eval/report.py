"""Score a dataset with an injected scorer and turn the scores into a report.

The scorer is any callable ``score_item(path) -> ItemResult``; the runtime's is
``edge.pipeline.make_scorer(config)``. Scores stay in memory: the report holds
aggregate figures only, never a per-item score or verdict.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping, Sequence, TextIO

import numpy as np

from edge.errors import EdgeError
from edge.eval import metrics as m
from edge.eval.dataset import Dataset, Item

log = logging.getLogger(__name__)

#: attack types with fewer presentations than this get a note in the table
SMALL_TYPE = 20


@dataclass(frozen=True)
class ItemResult:
    """What a scorer returns for one presentation.

    ``score``: fused live score (higher = more live), ``None`` when no usable
    face was found (none detected, or no frame passed the quality gate). ``verdict``: the session verdict (``VerdictKind`` value such as
    ``"PASS"``) when the item went through the decision logic, else ``None``.
    ``frames``: frames read up to the verdict. ``frame_scores``: optional per-frame live scores
    (``None`` = frame without a usable face), for the fusion comparison.
    """

    score: float | None
    verdict: str | None
    frames: int
    frame_scores: tuple[float | None, ...] = field(default=(), repr=False)


Scorer = Callable[[Path], ItemResult]


class ScoringError(EdgeError, RuntimeError):
    """The scorer failed on one item; the message names the item."""


@dataclass(frozen=True)
class Scored:
    item: Item
    result: ItemResult = field(repr=False)


class Progress:
    """A progress line on a stream (stderr): redrawn in place on a terminal, every 10 % otherwise."""

    def __init__(self, total: int, stream: TextIO | None = None, label: str = "scoring"):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._t0 = time.monotonic()
        self._last_decile = -1

    def __call__(self, done: int) -> None:
        elapsed = time.monotonic() - self._t0
        eta = elapsed / done * (self.total - done) if done else 0.0
        text = f"{self.label} {done}/{self.total} ({elapsed:.0f}s, ~{eta:.0f}s left)"
        if self._tty:
            end = "\n" if done >= self.total else ""
            self.stream.write(f"\r{text}\x1b[K{end}")
            self.stream.flush()
        else:
            decile = done * 10 // max(self.total, 1)
            if decile != self._last_decile:
                self._last_decile = decile
                self.stream.write(text + "\n")
                self.stream.flush()


def score_dataset(
    dataset: Dataset, scorer: Scorer, progress: Callable[[int], None] | None = None
) -> list[Scored]:
    """Run ``scorer`` over every item, in order."""
    out: list[Scored] = []
    for n, item in enumerate(dataset.items, start=1):
        try:
            res = scorer(item.path)
        except EdgeError:
            raise
        except Exception as err:  # a scorer bug or an unreadable file: name the item
            raise ScoringError(f"scoring {item.rel} failed: {type(err).__name__}: {err}") from err
        if res.score is not None and not math.isfinite(res.score):
            raise ScoringError(f"scorer returned a non-finite score for {item.rel}; this is a model fault")
        out.append(Scored(item, res))
        if progress is not None:
            progress(n)
    return out


def to_scores(scored: Sequence[Scored]) -> m.Scores:
    bf = [s.result.score for s in scored if s.item.bona_fide]
    at = [s for s in scored if not s.item.bona_fide]
    return m.Scores.from_lists(bf, [s.result.score for s in at], [s.item.attack for s in at])


@dataclass(frozen=True)
class VerdictRates:
    """Error rates of the pipeline's own verdicts (PASS = accepted as bona fide)."""

    n: int
    apcer_per_type: Mapping[str, float]
    apcer: float
    bpcer: float
    kinds: Mapping[str, int]  # verdict kind -> count

    @property
    def acer(self) -> float:
        return (self.apcer + self.bpcer) / 2.0

    def to_dict(self) -> dict:
        return {
            "n": self.n,
            "apcer_per_type": dict(self.apcer_per_type),
            "apcer": self.apcer,
            "bpcer": self.bpcer,
            "acer": self.acer,
            "kinds": dict(self.kinds),
        }


def verdict_rates(scored: Sequence[Scored]) -> VerdictRates | None:
    """Verdict-level APCER/BPCER, when every item carries a verdict (else ``None``)."""
    if not scored or any(s.result.verdict is None for s in scored):
        return None
    live = [s for s in scored if s.item.bona_fide]
    att = [s for s in scored if not s.item.bona_fide]
    if not live or not att:
        return None
    per: dict[str, float] = {}
    for t in sorted({s.item.attack for s in att}):
        sel = [s for s in att if s.item.attack == t]
        per[t] = sum(s.result.verdict == "PASS" for s in sel) / len(sel)
    kinds: dict[str, int] = {}
    for s in scored:
        kinds[s.result.verdict] = kinds.get(s.result.verdict, 0) + 1
    bp = sum(s.result.verdict != "PASS" for s in live) / len(live)
    return VerdictRates(len(scored), per, max(per.values()), bp, dict(sorted(kinds.items())))


@dataclass(frozen=True)
class SourceSummary:
    """Figures of one source. ``metrics`` only when it has both classes."""

    name: str
    n_bona_fide: int
    n_attack: int
    metrics: m.Metrics | None
    # with one class only: its error rate at the configured / calibrated threshold
    bpcer: tuple[float | None, float] | None = None
    apcer: tuple[float | None, float] | None = None

    def to_dict(self) -> dict:
        d: dict = {"bona_fide": self.n_bona_fide, "attack": self.n_attack}
        if self.metrics is not None:
            d["metrics"] = self.metrics.to_dict()
        if self.bpcer is not None:
            d["bpcer"] = {"configured": self.bpcer[0], "calibrated": self.bpcer[1]}
        if self.apcer is not None:
            d["apcer"] = {"configured": self.apcer[0], "calibrated": self.apcer[1]}
        return d


@dataclass(frozen=True)
class EvalReport:
    dataset: str
    manifest: str | None
    threshold: float | None
    threshold_from: str
    frames: int
    overall: m.Metrics
    verdicts: VerdictRates | None
    sources: tuple[SourceSummary, ...]
    # kept for plotting only; never serialised
    scores: m.Scores = field(repr=False, compare=False)

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "manifest": self.manifest,
            "threshold": self.threshold,
            "threshold_from": self.threshold_from,
            "frames": self.frames,
            "conventions": {
                "accept": "score >= threshold is bona fide",
                "no_face": "bona fide without face = rejected (BPCER); attack without face = rejected (not APCER)",
                "apcer": "maximum over attack types",
            },
            "overall": self.overall.to_dict(),
            "verdicts": self.verdicts.to_dict() if self.verdicts else None,
            "sources": {s.name: s.to_dict() for s in self.sources},
        }

    def render(self) -> str:
        return render(self)


def build_report(
    dataset: Dataset,
    scored: Sequence[Scored],
    *,
    threshold: float | None,
    threshold_from: str = "--threshold",
    calibrate_bpcer: float | None = None,
    targets: Sequence[float] = m.DEFAULT_TARGETS,
) -> EvalReport:
    scores = to_scores(scored)
    overall = m.evaluate(scores, threshold, calibrate_bpcer=calibrate_bpcer, targets=targets)
    cal_t = overall.at_calibrated.threshold
    sources: list[SourceSummary] = []
    names = sorted({s.item.source for s in scored})
    if len(names) > 1:
        for name in names:
            sub = [s for s in scored if s.item.source == name]
            ss = to_scores(sub)
            if ss.n_bona_fide and ss.n_attack:
                # Per source at the *global* thresholds: re-calibrating per source would be optimistic.
                met = m.evaluate(ss, threshold, targets=targets)
                met = _with_calibrated(met, m.operating_point(ss, cal_t), overall.calibrated_from)
                sources.append(SourceSummary(name, ss.n_bona_fide, ss.n_attack, met))
            elif ss.n_bona_fide:
                bp = (m.bpcer(ss, threshold) if threshold is not None else None, m.bpcer(ss, cal_t))
                sources.append(SourceSummary(name, ss.n_bona_fide, 0, None, bpcer=bp))
            else:
                ap = (m.apcer(ss, threshold) if threshold is not None else None, m.apcer(ss, cal_t))
                sources.append(SourceSummary(name, 0, ss.n_attack, None, apcer=ap))
    return EvalReport(
        dataset=str(dataset.root),
        manifest=str(dataset.manifest) if dataset.manifest else None,
        threshold=threshold,
        threshold_from=threshold_from,
        frames=sum(s.result.frames for s in scored),
        overall=overall,
        verdicts=verdict_rates(scored),
        sources=tuple(sources),
        scores=scores,
    )


def _with_calibrated(met: m.Metrics, op: m.OperatingPoint, cal_from: str) -> m.Metrics:
    from dataclasses import replace

    return replace(met, at_calibrated=op, calibrated_from=f"global {cal_from}")


# --------------------------------------------------------------------------- text rendering


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{100.0 * x:.1f}%"


def _thr(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def render(rep: EvalReport) -> str:
    o = rep.overall
    lines: list[str] = []
    src = f" (manifest {rep.manifest})" if rep.manifest else " (folders live/ spoof/)"
    lines.append(f"edge eval: {rep.dataset}{src}")
    n_att = sum(o.n_attack_per_type.values())
    per_type = ", ".join(f"{t} {n}" for t, n in o.n_attack_per_type.items())
    lines.append(
        f"presentations {o.n_bona_fide + n_att}: bona fide {o.n_bona_fide}, attack {n_att} ({per_type}); frames to the verdicts {rep.frames}"
    )
    f = o.face_not_found
    lines.append(
        f"no usable face (not found, or no frame passed the quality gate): {_pct(f.rate)} "
        f"(bona fide {f.bona_fide}/{f.n_bona_fide}, counted as rejected bona fide; "
        f"attack {f.attack}/{f.n_attack}, counted as rejected attacks)"
    )
    lines.append("accept as bona fide when score >= threshold; APCER = max over attack types")
    lines.append("")
    rows = []
    if o.at_threshold is not None:
        rows.append((f"configured ({rep.threshold_from})", o.at_threshold))
    rows.append((f"calibrated ({o.calibrated_from})", o.at_calibrated))
    w = max(28, *(len(r[0]) + 2 for r in rows))
    lines.append(f"{'operating point':<{w}}{'threshold':>10}{'APCER':>9}{'BPCER':>9}{'ACER':>9}")
    for name, op in rows:
        lines.append(f"{name:<{w}}{_thr(op.threshold):>10}{_pct(op.apcer):>9}{_pct(op.bpcer):>9}{_pct(op.acer):>9}")
    if rep.verdicts is not None:
        v = rep.verdicts
        lines.append(f"{'pipeline verdicts':<{w}}{'':>10}{_pct(v.apcer):>9}{_pct(v.bpcer):>9}{_pct(v.acer):>9}")
    lines.append("")
    lines.append(f"{'APCER per attack type':<{w}}" + "".join(f"{name.split(' ')[0]:>12}" for name, _ in rows))
    for t in o.n_attack_per_type:
        lines.append(f"  {t:<{w - 2}}" + "".join(f"{_pct(op.apcer_per_type[t]):>12}" for _, op in rows))
    lines.append("")
    lines.append(f"{'fixed operating points':<{w}}{'threshold':>10}{'APCER':>9}{'BPCER':>9}")
    for t, op in o.bpcer_at_apcer.items():
        lines.append(f"{'BPCER @ APCER <= ' + format(t, '.0%'):<{w}}{_thr(op.threshold):>10}{_pct(op.apcer):>9}{_pct(op.bpcer):>9}")
    for t, op in o.apcer_at_bpcer.items():
        name = "APCER @ BPCER <= " + format(t, ".0%")
        if op is None:
            lines.append(f"{name:<{w}}{'unreachable (too many live faces not found)':>37}")
        else:
            lines.append(f"{name:<{w}}{_thr(op.threshold):>10}{_pct(op.apcer):>9}{_pct(op.bpcer):>9}")
    lines.append("")
    lines.append(f"EER {_pct(o.eer.eer)} at threshold {_thr(o.eer.threshold)}; AUC {o.auc:.4f}")
    small = {t: n for t, n in o.n_attack_per_type.items() if n < SMALL_TYPE}
    for t, n in small.items():
        lines.append(f"note: attack type '{t}' has only {n} presentation(s); its APCER moves in steps of "
                     f"{1 / n:.0%} and can dominate the maximum")
    if rep.sources:
        lines.append("")
        lines.append("per source (at the global thresholds)")
        sw = max(24, *(len(s.name) + 2 for s in rep.sources))
        lines.append(
            f"{'source':<{sw}}{'bf':>5}{'att':>5}{'APCER':>9}{'BPCER':>9}{'APCERc':>9}{'BPCERc':>9}{'EER':>8}{'AUC':>8}"
        )
        for s in rep.sources:
            if s.metrics is not None:
                sm = s.metrics
                a = sm.at_threshold
                lines.append(
                    f"{s.name:<{sw}}{s.n_bona_fide:>5}{s.n_attack:>5}{_pct(a.apcer if a else None):>9}"
                    f"{_pct(a.bpcer if a else None):>9}{_pct(sm.at_calibrated.apcer):>9}{_pct(sm.at_calibrated.bpcer):>9}"
                    f"{_pct(sm.eer.eer):>8}{sm.auc:>8.3f}"
                )
            elif s.bpcer is not None:
                lines.append(
                    f"{s.name:<{sw}}{s.n_bona_fide:>5}{0:>5}{'-':>9}{_pct(s.bpcer[0]):>9}{'-':>9}{_pct(s.bpcer[1]):>9}{'-':>8}{'-':>8}"
                )
            else:
                assert s.apcer is not None
                lines.append(
                    f"{s.name:<{sw}}{0:>5}{s.n_attack:>5}{_pct(s.apcer[0]):>9}{'-':>9}{_pct(s.apcer[1]):>9}{'-':>9}{'-':>8}{'-':>8}"
                )
        lines.append("(APCER/BPCER at the configured threshold; APCERc/BPCERc at the calibrated one)")
    return "\n".join(lines) + "\n"


def calibration_toml(rep: EvalReport) -> str:
    """A config snippet setting the calibrated threshold (exact repr: ties matter)."""
    op = rep.overall.at_calibrated
    if op.threshold > 1.0:
        raise m.UnreachableTargetError(
            f"calibration ({rep.overall.calibrated_from}) lands above every score (reject all); "
            "the target cannot be met with a threshold in [0, 1]"
        )
    return (
        f"# edge eval calibration ({rep.overall.calibrated_from}) on {rep.dataset}: "
        f"{rep.overall.n_bona_fide} bona fide, {sum(rep.overall.n_attack_per_type.values())} attack presentations;\n"
        f"# measured there: BPCER {_pct(op.bpcer)}, APCER {_pct(op.apcer)} (max over types). "
        "Accept when score >= threshold.\n"
        f"[decision]\nthreshold = {op.threshold!r}\n"
    )


# --------------------------------------------------------------------------- plot


def _probit(p: np.ndarray) -> np.ndarray:
    """Standard normal quantile (Acklam's rational approximation, |error| < 1.2e-9)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    p = np.asarray(p, dtype=np.float64)
    out = np.empty_like(p)
    lo, hi = 0.02425, 1 - 0.02425
    q = np.sqrt(-2 * np.log(np.where(p < lo, p, 0.5)))
    low = ((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]
    low /= (((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1
    q2 = np.sqrt(-2 * np.log(np.where(p > hi, 1 - p, 0.5)))
    high = -(((((c[0] * q2 + c[1]) * q2 + c[2]) * q2 + c[3]) * q2 + c[4]) * q2 + c[5])
    high /= (((d[0] * q2 + d[1]) * q2 + d[2]) * q2 + d[3]) * q2 + 1
    qm = p - 0.5
    r = qm * qm
    mid = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * qm
    mid /= ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1
    out[:] = np.where(p < lo, low, np.where(p > hi, high, mid))
    return out


class PlotUnavailable(EdgeError, ImportError):
    """matplotlib is not installed."""


def plot(rep: EvalReport, path: Path | str) -> None:
    """DET curve (normal-deviate axes) and score histograms into one PNG."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed; install the extra: pip install 'edge[plot]'"
        ) from err
    s = rep.scores
    curve = m.det_curve(s)
    # rates of exactly 0 or 1 have no normal deviate: clip to half a presentation
    ap = np.clip(curve.apcer, 0.5 / s.n_attack, 1 - 0.5 / s.n_attack)
    bp = np.clip(curve.bpcer, 0.5 / s.n_bona_fide, 1 - 0.5 / s.n_bona_fide)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.8))
    ax1.plot(_probit(ap), _probit(bp), drawstyle="steps-post", label="max over types")
    if len(curve.apcer_per_type) > 1:
        for name, rates in curve.apcer_per_type.items():
            n = s.attack_types.count(name)
            ax1.plot(_probit(np.clip(rates, 0.5 / n, 1 - 0.5 / n)), _probit(bp), lw=0.8, alpha=0.7, label=name)
    ticks = np.array([0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8])
    ax1.set_xticks(_probit(ticks), [f"{t:.1%}" if t < 0.01 else f"{t:.0%}" for t in ticks])
    ax1.set_yticks(_probit(ticks), [f"{t:.1%}" if t < 0.01 else f"{t:.0%}" for t in ticks])
    lim = _probit(np.array([0.0005, 0.95]))
    ax1.set_xlim(*lim)
    ax1.set_ylim(*lim)
    e = rep.overall.eer
    ax1.plot(_probit(np.array([max(e.eer, 0.0005)])), _probit(np.array([max(e.eer, 0.0005)])), "o",
             label=f"EER {e.eer:.1%}")
    ax1.plot(lim, lim, ":", color="grey", lw=0.8)
    ax1.set_xlabel("APCER")
    ax1.set_ylabel("BPCER")
    ax1.set_title("DET curve")
    ax1.grid(True, alpha=0.3)
    ax1.legend(fontsize=8)
    bins = np.linspace(0.0, 1.0, 41)
    bf = s.bona_fide[np.isfinite(s.bona_fide)]
    types = np.array(s.attack_types, dtype=object)
    ax2.hist(bf, bins=bins, alpha=0.6, label=f"bona fide ({bf.size})")
    for name in s.types():
        sel = s.attack[(types == name) & np.isfinite(s.attack)]
        ax2.hist(sel, bins=bins, alpha=0.6, label=f"{name} ({sel.size})")
    if rep.threshold is not None:
        ax2.axvline(rep.threshold, color="k", ls="--", lw=1, label=f"configured {rep.threshold:.3f}")
    ax2.axvline(rep.overall.at_calibrated.threshold, color="r", ls=":", lw=1,
                label=f"calibrated {rep.overall.at_calibrated.threshold:.3f}")
    ax2.set_xlabel("live score")
    ax2.set_ylabel("presentations")
    ax2.set_title("score histograms (faces found)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
