"""``edge eval --active``: the challenge engine on real recordings.

Three studies, all on meshes measured once per recording (:mod:`edge.eval.meshes`)
and replayed through :class:`edge.challenge.Challenge` itself:

(a) **Detection** on ../shared/action-dev: per engine action, the share of
    labelled segments the engine's own per-action rule completes (an excursion from
    onset to completion overlapping the label, +-5 frames: recall), and
    completions inside ``hold`` stretches (false triggers per minute) and inside
    distractor stretches (gaze shifts, tilts, squints, winks, closed eyes). The
    neutral reference of a clip is the median of its frames outside every
    labelled action, as the engine's baseline is the median of a still face.
(b) **Replay**: every recording presented to the engine as an attack, ``draws``
    times with a random challenge (the controller's draw, k actions) from a
    random offset: fas-dev images as still sessions, simulated camera sessions
    (scripts/sim_sessions.py), every action-dev clip (a replayed recording of a
    live person is an attack too). Fraction passing = APCER of the active mode
    against recordings. Reported with the passive votes forced live (the
    challenge alone, as against a replay the passive models miss) and with the
    passive models' real votes, and without the 3-D check.
(c) **Time to verdict** of a responding person, a simulation: the person of one
    clip holds still (the clip's own quiet frames, played back and forth), and
    a reaction time after each prompt performs one of the clip's labelled
    segments of that action, then holds still again. Orders are drawn from the
    actions each clip shows (with a head movement when it has one).

Figures come out as tables on stdout. Meshes live only in memory for the run.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Protocol, Sequence

import numpy as np

from edge.challenge import ACTION_PROMPTS as _PROMPTS
from edge.challenge import ACTIONS, POSE_ACTIONS, Challenge, ChallengeConfig, Signals, draw
from edge.errors import EdgeError
from edge.eval.actions import Clip, Segment, load_action_manifest
from edge.eval.meshes import MeshSeries, measure_series, read_frames
from edge.landmarks.base import FaceLandmarks
from edge.liveness.depth import DepthCheck
from edge.types import FaceBox, Prompt, Reason, VerdictKind

log = logging.getLogger(__name__)

#: action-dev labels (image-based directions) -> engine actions (the person's own directions):
#: a nose toward the image's right is the person's own left (edge/landmarks/base.py).
LABEL_TO_ACTION = {
    "blink": "blink",
    "turn_right": "turn_left",
    "slight_turn_right": "turn_left",
    "turn_left": "turn_right",
    "slight_turn_left": "turn_right",
    "look_up": "look_up",
    "mouth_open": "open_mouth",
    "yawn": "open_mouth",
    "smile": "smile",
}
HOLD_LABELS = frozenset({"hold", "hold_still", "hold_still_eyes_open"})
DISTRACTOR_LABELS = frozenset({"gaze_shift_only", "tilt_left", "tilt_right", "squint", "eyes_wide", "wink",
                               "eyes_closed", "eyes_squeezed", "hand_occlusion", "camera_exposure_ramp"})
#: label slack (frames): eye events are +-2 frames, turns +-5 (../shared/action-dev/README.md)
SLACK = 5


# --------------------------------------------------------------------------- signals and detectors


def signal_matrix(series: MeshSeries) -> np.ndarray:
    """The engine's per-frame signal vector (:class:`edge.challenge.Signals`) for every frame; NaN rows
    where there is no mesh."""
    sig = Signals()
    out = np.full((len(series), sig.v.size), np.nan)
    for i in range(len(series)):
        lm = series.landmarks(i)
        if lm is not None:
            out[i] = sig.update(lm)
    return out


def neutral_reference(signals: np.ndarray, clip: Clip | None) -> np.ndarray:
    """Median signal vector of the frames outside every labelled action (+-SLACK), else of all frames."""
    n = signals.shape[0]
    quiet = np.isfinite(signals[:, 0])
    if clip is not None:
        busy = np.zeros(n, bool)
        for s in clip.all_segments():
            if s.action not in HOLD_LABELS:
                busy[max(0, s.start - SLACK): min(n, s.end + SLACK + 1)] = True
        if (quiet & ~busy).sum() >= 5:
            quiet &= ~busy
    if not quiet.any():
        return np.zeros(signals.shape[1])
    return np.median(signals[quiet], axis=0)


class ActionDetector(Protocol):
    """Turns a per-frame signal series into completed actions: ``(onset, done)`` frame pairs."""

    def __call__(self, signals: np.ndarray, baseline: np.ndarray, action: str) -> list[tuple[int, int]]: ...


class EngineDetector:
    """The engine's own per-action rule (:meth:`edge.challenge.Challenge._strength`, its
    thresholds from ``config``) with the engine's event logic: an excursion starts at half
    the threshold and completes at the threshold (a blink when the eyes open again after
    closing, to ``blink_open`` of the threshold); the next one needs the signal back below half-way. Frames without a mesh
    leave the state as it is."""

    def __init__(self, config: ChallengeConfig | None = None):
        self._engine = Challenge(config or ChallengeConfig())
        # The engine's blink is done when the eyes are open again to this fraction of the threshold.
        self._blink_open = float(getattr(self._engine.config, "blink_open", 0.5))

    def strength(self, action: str, delta: np.ndarray) -> float:
        return float(self._engine._strength(action, delta))

    def __call__(self, signals: np.ndarray, baseline: np.ndarray, action: str) -> list[tuple[int, int]]:
        events = []
        onset = None
        acting = False
        d = np.zeros(signals.shape[1])
        for i in range(signals.shape[0]):
            if not np.isfinite(signals[i, 0]):
                continue
            np.subtract(signals[i], baseline, out=d)
            s = self.strength(action, d)
            if s >= 0.5 and onset is None:
                onset = i
            if action == "blink":
                if s >= 1.0:
                    acting = True
                elif acting and s < self._blink_open:
                    events.append((onset if onset is not None else i, i))
                    onset, acting = None, False
                elif s < 0.5:
                    onset = None
                continue
            if s >= 1.0 and not acting:
                acting = True
                events.append((onset if onset is not None else i, i))
            elif s < 0.5:
                onset, acting = None, False
        return events


@dataclass(frozen=True)
class DetectionRow:
    action: str
    segments: int
    detected: int
    hold_frames: int
    hold_events: int
    hold_minutes: float
    distractor_frames: int
    distractor_events: int
    missed: tuple[str, ...] = field(default=(), repr=False)

    @property
    def recall(self) -> float:
        return self.detected / self.segments if self.segments else math.nan

    @property
    def false_per_minute(self) -> float:
        return self.hold_events / self.hold_minutes if self.hold_minutes > 0 else math.nan


def detection_study(clips: Sequence[Clip], series: dict[str, MeshSeries], detector: ActionDetector,
                    actions: Sequence[str] = ACTIONS) -> list[DetectionRow]:
    """(a): recall per engine action on labelled segments, false completions in holds and distractors."""
    per = {a: dict(seg=0, det=0, hf=0, he=0, hmin=0.0, df=0, de=0, missed=[]) for a in actions}
    for clip in clips:
        s = series.get(clip.file)
        if s is None:
            continue
        sig = signal_matrix(s)
        base = neutral_reference(sig, clip)
        segs = clip.all_segments()
        for a in actions:
            events = detector(sig, base, a)
            done = [e[1] for e in events]
            row = per[a]
            for seg in segs:
                lo, hi = seg.start - SLACK, seg.end + SLACK
                # Detected: an excursion (onset to completion) overlapping the labelled range: a slow
                # reopening completes a blink after its label ends.
                hits = sum(1 for on, f in events if on <= hi and f >= lo)
                if LABEL_TO_ACTION.get(seg.action) == a:
                    row["seg"] += 1
                    if hits:
                        row["det"] += 1
                    else:
                        row["missed"].append(f"{clip.file}:{seg.action}@{seg.start}-{seg.end}")
                elif seg.action in HOLD_LABELS or seg.action in DISTRACTOR_LABELS:
                    inside = sum(1 for f in done if seg.start <= f <= seg.end)
                    n = seg.frames
                    if seg.action in HOLD_LABELS:
                        row["hf"] += n
                        row["he"] += inside
                        row["hmin"] += n / s.fps / 60.0
                    else:
                        row["df"] += n
                        row["de"] += inside
    return [DetectionRow(a, r["seg"], r["det"], r["hf"], r["he"], r["hmin"], r["df"], r["de"], tuple(r["missed"]))
            for a, r in per.items()]


def render_detection(rows: Sequence[DetectionRow]) -> str:
    lines = ["(a) detection on action-dev (the engine's own per-action rule and thresholds; an excursion overlapping "
             "the label +-5 frames)",
             f"{'action':<12}{'segments':>9}{'detected':>9}{'recall':>8}   {'hold frames':>11}{'false':>6}"
             f"{'per min':>8}   {'distractor frames':>17}{'false':>6}"]
    for r in rows:
        rec = f"{r.recall * 100:6.1f}%" if r.segments else "     -"
        fpm = f"{r.false_per_minute:8.2f}" if r.hold_minutes else "       -"
        lines.append(f"{r.action:<12}{r.segments:>9}{r.detected:>9}{rec:>8}   {r.hold_frames:>11}{r.hold_events:>6}"
                     f"{fpm}   {r.distractor_frames:>17}{r.distractor_events:>6}")
    missed = [m for r in rows for m in r.missed]
    if missed:
        lines.append("missed: " + "; ".join(missed))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Recording:
    """A recording to replay: its mesh series and how its frames are played (indices into the series)."""

    name: str
    kind: str  # "still", "sim", "clip"
    series: MeshSeries = field(repr=False)
    loop: bool = False  # play the frames over and over (stills and short simulated sessions)


def _frames_for(series: MeshSeries) -> list[FaceLandmarks | None]:
    return [series.landmarks(i) for i in range(len(series))]


@dataclass(frozen=True)
class ReplayOutcome:
    passed: int
    runs: int
    reasons: dict[str, int]


def replay_once(ch: Challenge, frames: list[FaceLandmarks | None], series: MeshSeries, order: Sequence[str],
                offset: int, *, passive: bool, loop: bool, max_ms: float = 30000.0):
    """Present one recording to ``ch`` from ``offset`` with challenge ``order``; the verdict.

    ``passive`` False: every frame with one face votes live (the challenge alone decides);
    True: the passive models' own votes. A looping source plays until the engine decides or
    ``max_ms`` passes; otherwise the source ends and the engine is told so."""
    n = len(series)
    dt = 1000.0 / series.fps
    ch.start(0.0, order)
    t = 0.0
    i = offset
    steps = 0
    try:
        while t <= max_ms:
            if i >= n:
                if not loop:
                    return ch.on_end(t)
                i = 0
            lm = frames[i]
            faces = int(series.faces[i])
            if passive:
                sc = float(series.score[i])
                score = sc if math.isfinite(sc) else None
                reason = Reason(int(series.reason[i]))
            else:
                score = 1.0 if (faces == 1 and lm is not None) else None
                reason = Reason.NONE
            v = ch.on_frame(t, faces=faces, landmarks=lm if faces == 1 else None, score=score, reason=reason,
                            box=series.box(i) if faces == 1 else None)
            if v is not None:
                return v
            i += 1
            steps += 1
            t = steps * dt
        return ch.on_end(t)
    finally:
        ch.wipe()


def replay_study(recordings: Sequence[Recording], *, draws: int, k: int, seed: int,
                 config: ChallengeConfig | None = None, depth_threshold: float | None = None,
                 sim_draws: int | None = None,
                 progress: Callable[[str], None] | None = None) -> dict[tuple[str, str], dict]:
    """(b): per recording kind and variant, how many replays pass. Variants: ``active`` (votes
    forced live, 3-D check on), ``active_no3d``, ``with_passive`` (real votes, 3-D on).
    ``sim_draws``: draws per simulated session (there are hundreds of them), default ``draws``."""
    cfg = config or ChallengeConfig(k=k)
    rng = np.random.default_rng(seed)
    depth = DepthCheck(depth_threshold) if depth_threshold else DepthCheck()
    engines = {"active": (Challenge(cfg, depth), False), "active_no3d": (Challenge(cfg, None), False),
               "with_passive": (Challenge(cfg, depth), True)}
    out: dict[tuple[str, str], dict] = {}
    for r_i, rec in enumerate(recordings):
        if progress and r_i % 25 == 0:
            progress(f"replay {r_i + 1}/{len(recordings)}: {rec.name}")
        frames = _frames_for(rec.series)
        n = len(rec.series)
        # A one-frame recording (a still) gives the same frame whatever the offset, so its verdict
        # depends on the order alone: each distinct order is replayed once.
        memo: dict = {}
        for _ in range(sim_draws if (rec.kind == "sim" and sim_draws) else draws):
            order = draw(rng.bytes(32), cfg.k, cfg.actions, cfg.require_pose)
            offset = int(rng.integers(0, max(1, n - 1))) if not rec.loop else int(rng.integers(0, n))
            for variant, (ch, passive) in engines.items():
                key_ = (variant, order)
                if n == 1 and key_ in memo:
                    v = memo[key_]
                else:
                    v = replay_once(ch, frames, rec.series, order, offset, passive=passive, loop=rec.loop)
                    memo[key_] = v
                slot = out.setdefault((rec.kind, variant), {"runs": 0, "passed": 0, "reasons": {}, "who": {}})
                slot["runs"] += 1
                key = f"{v.kind.value}/{v.reason.name}"
                slot["reasons"][key] = slot["reasons"].get(key, 0) + 1
                if v.kind is VerdictKind.PASS:
                    slot["passed"] += 1
                    slot["who"][rec.name] = slot["who"].get(rec.name, 0) + 1
    return out


def _wilson_upper(passed: int, runs: int, z: float = 1.96) -> float:
    if runs == 0:
        return math.nan
    p = passed / runs
    den = 1 + z * z / runs
    centre = p + z * z / (2 * runs)
    return (centre + z * math.sqrt(p * (1 - p) / runs + z * z / (4 * runs * runs))) / den


def render_replay(res: dict, counts: dict[str, int], k: int, draws: int, sim_draws: int | None = None) -> str:
    names = {"still": "fas-dev images, still", "sim": "simulated sessions (looped)", "clip": "action-dev clips"}
    sim = f" ({sim_draws} per simulated session)" if sim_draws and ("sim", "active") in res else ""
    lines = [f"(b) replayed recordings against the challenge (k = {k}, {draws} random challenges each{sim}, "
             "random offsets)",
             "APCER = replays that PASS; 95 % upper bound (Wilson) in brackets; 'challenge alone' forces every "
             "passive vote live",
             f"{'recordings':<30}{'n':>5}{'runs':>8}   {'challenge alone':>22}   {'without 3-D check':>22}   "
             f"{'with passive votes':>22}"]
    for kind in ("still", "sim", "clip"):
        if (kind, "active") not in res:
            continue
        cells = []
        for variant in ("active", "active_no3d", "with_passive"):
            r = res[(kind, variant)]
            cells.append(f"{r['passed'] / r['runs'] * 100:6.2f}% [{_wilson_upper(r['passed'], r['runs']) * 100:5.2f}%]")
        lines.append(f"{names[kind]:<30}{counts.get(kind, 0):>5}{res[(kind, 'active')]['runs']:>8}   "
                     + "   ".join(f"{c:>22}" for c in cells))
    tot = {v: [sum(res[(kd, v)]["passed"] for kd in ("still", "sim", "clip") if (kd, v) in res),
               sum(res[(kd, v)]["runs"] for kd in ("still", "sim", "clip") if (kd, v) in res)]
           for v in ("active", "active_no3d", "with_passive")}
    if tot["active"][1]:
        lines.append(f"{'all':<30}{sum(counts.values()):>5}{tot['active'][1]:>8}   " + "   ".join(
            f"{p / n * 100:6.2f}% [{_wilson_upper(p, n) * 100:5.2f}%]".rjust(22) for p, n in tot.values()))
    for kind in ("still", "sim", "clip"):
        if (kind, "active") in res:
            top = sorted(res[(kind, "active")]["reasons"].items(), key=lambda kv: -kv[1])[:4]
            lines.append(f"  {names[kind]}: verdicts (challenge alone) " + ", ".join(f"{k_} {v}" for k_, v in top))
            who = res[(kind, "active")]["who"]
            if who:
                lines.append("    passed: " + ", ".join(f"{w} x{c}" for w, c in sorted(who.items(), key=lambda kv: -kv[1])))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- time to verdict (simulation)


def _quiet_runs(clip: Clip, series: MeshSeries, min_len: int = 8) -> list[tuple[int, int]]:
    """Stretches of frames with a mesh outside every labelled action (+-SLACK)."""
    n = len(series)
    busy = np.zeros(n, bool)
    for s in clip.all_segments():
        if s.action not in HOLD_LABELS:
            busy[max(0, s.start - SLACK): min(n, s.end + SLACK + 1)] = True
    ok = series.present & ~busy
    runs, start = [], None
    for i in range(n + 1):
        if i < n and ok[i]:
            start = i if start is None else start
        elif start is not None:
            if i - start >= min_len:
                runs.append((start, i - 1))
            start = None
    return runs


class Responder:
    """A person who does what the prompts ask, played from one clip's frames.

    Holds still by playing a quiet stretch of the clip back and forth; a reaction time after
    an action prompt, plays a labelled segment of that action (from 2 frames before its labelled
    start to its labelled end) and then goes back to the quiet stretch. The cuts are not the
    person's doing, so :class:`Stitcher` hides them from the engine's face-continuity check."""

    def __init__(self, quiet: tuple[int, int], segments: dict[str, list[Segment]], fps: float,
                 rng: np.random.Generator, reaction_ms: tuple[float, float] = (300.0, 700.0), n: int = 0):
        self.quiet = quiet
        self.segments = segments
        self.fps = fps
        self.rng = rng
        self.reaction_ms = reaction_ms
        self.n = n
        self._q = quiet[0]
        self._dir = 1
        self._queue: list[int] = []
        self._prompt = Prompt.NONE
        self._react_until: float | None = None
        self._pending: str | None = None

    def _hold(self) -> int:
        a, b = self.quiet
        i = self._q
        if a == b:
            return a
        nxt = self._q + self._dir
        if nxt > b or nxt < a:
            self._dir = -self._dir
            nxt = self._q + self._dir
        self._q = nxt
        return i

    def next_frame(self, t_ms: float, prompt: Prompt) -> int:
        if prompt != self._prompt:
            self._prompt = prompt
            action = next((a for a, p in _PROMPTS.items() if p == prompt), None)
            if action is not None and action in self.segments:
                self._pending = action
                self._react_until = t_ms + float(self.rng.uniform(*self.reaction_ms))
        if self._pending is not None and self._react_until is not None and t_ms >= self._react_until:
            seg = self.segments[self._pending][int(self.rng.integers(0, len(self.segments[self._pending])))]
            lo, hi = max(0, seg.start - 2), (min(self.n - 1, seg.end) if self.n else seg.end)
            self._queue = list(range(lo, hi + 1))
            self._pending = None
        if self._queue:
            return self._queue.pop(0)
        return self._hold()


class Stitcher:
    """Frames of one clip in a stitched order, each cut hidden by a similarity (shift and scale of the
    mesh) that puts the new frame's face where the last shown one was: a cut in a simulation must
    not look like a swapped face. A similarity changes no 3-D residual (it scales the residual and
    the face size alike) and no blendshape or pose."""

    ANCHOR = 168  # between the eyes, as the engine's continuity check

    def __init__(self, series: MeshSeries):
        self.series = series
        self._prev: int | None = None
        self._scale = 1.0
        self._shift = np.zeros(2)
        self._shown_anchor: np.ndarray | None = None
        self._shown_size = 0.0
        self._pts = np.zeros((series.points.shape[1], 3), np.float32)

    def box(self, i: int) -> FaceBox | None:
        """The detector's box of frame ``i`` under the same similarity as its mesh (call after :meth:`frame`)."""
        b = self.series.box(i)
        if b is None:
            return None
        k = self._scale
        return FaceBox(b.x * k + float(self._shift[0]), b.y * k + float(self._shift[1]), b.w * k, b.h * k, b.score)

    def frame(self, i: int) -> FaceLandmarks | None:
        s = self.series
        lm = s.landmarks(i)
        if lm is None:
            self._prev = i
            return None
        raw_anchor = lm.points_px[self.ANCHOR, :2].astype(np.float64)
        if self._prev is not None and abs(i - self._prev) > 1 and self._shown_anchor is not None:
            self._scale = self._shown_size / max(float(lm.face_size_px), 1e-6)
            self._shift = self._shown_anchor - raw_anchor * self._scale
        self._prev = i
        np.multiply(lm.points_px, self._scale, out=self._pts)
        self._pts[:, :2] += self._shift
        self._shown_anchor = self._pts[self.ANCHOR, :2].astype(np.float64)
        self._shown_size = float(lm.face_size_px) * self._scale
        b = lm.box
        box = FaceBox(b.x * self._scale + self._shift[0], b.y * self._scale + self._shift[1],
                      b.w * self._scale, b.h * self._scale, b.score)
        return FaceLandmarks(points_px=self._pts, blendshapes=lm.blendshapes, presence=lm.presence,
                             yaw_deg=lm.yaw_deg, pitch_deg=lm.pitch_deg, roll_deg=lm.roll_deg,
                             face_size_px=self._shown_size, box=box)


@dataclass(frozen=True)
class TimingRow:
    clip: str
    actions: tuple[str, ...]  # the engine actions the clip shows (the orders are drawn from these)
    k: int
    runs: int
    passed: int
    median_ms: float
    p90_ms: float
    reasons: dict[str, int]


def responder_segments(clip: Clip) -> dict[str, list[Segment]]:
    """The clip's labelled segments per engine action that a responding person could play: those
    overlapping no segment of another action (a blink in mid-turn, the turns and looks of a head
    circle answer no single prompt)."""
    mapped = [(LABEL_TO_ACTION.get(s.action), s) for s in clip.all_segments()]
    out: dict[str, list[Segment]] = {}
    for a, seg in mapped:
        if a is None:
            continue
        if any(b is not None and b != a and o.start <= seg.end and seg.start <= o.end for b, o in mapped):
            continue
        out.setdefault(a, []).append(seg)
    return out


def timing_study(clips: Sequence[Clip], series: dict[str, MeshSeries], *, runs: int, k: int, seed: int,
                 config: ChallengeConfig | None = None, depth_threshold: float | None = None) -> list[TimingRow]:
    """(c): closed-loop responder per clip that shows at least one engine action and a quiet stretch."""
    rng = np.random.default_rng(seed)
    rows = []
    for clip in clips:
        s = series.get(clip.file)
        if s is None:
            continue
        segs = responder_segments(clip)
        quiet = _quiet_runs(clip, s)
        if not segs or not quiet:
            continue
        acts = tuple(a for a in ACTIONS if a in segs)
        has_pose = any(a in POSE_ACTIONS for a in acts)
        kk = min(k, len(acts))
        base = config or ChallengeConfig()
        cfg = ChallengeConfig(**{**base.__dict__, "k": kk, "actions": acts, "require_pose": has_pose})
        ch = Challenge(cfg, DepthCheck(depth_threshold) if depth_threshold else DepthCheck())
        q = max(quiet, key=lambda r: r[1] - r[0])
        times, reasons, passed = [], {}, 0
        dt = 1000.0 / s.fps
        for _ in range(runs):
            order = draw(rng.bytes(32), kk, acts, has_pose)
            person = Responder(q, segs, s.fps, rng, n=len(s))
            stitch = Stitcher(s)
            ch.start(0.0, order)
            t, v = 0.0, None
            step = 0
            while v is None and t <= 30000.0:
                i = person.next_frame(t, ch.prompt)
                lm = stitch.frame(i)
                faces = int(s.faces[i])
                v = ch.on_frame(t, faces=faces, landmarks=lm if faces == 1 else None,
                                score=1.0 if (faces == 1 and lm is not None) else None,
                                box=stitch.box(i) if faces == 1 else None)
                step += 1
                t = step * dt
            if v is None:
                v = ch.on_end(t)
            ch.wipe()
            key = f"{v.kind.value}/{v.reason.name}"
            reasons[key] = reasons.get(key, 0) + 1
            if v.kind is VerdictKind.PASS:
                passed += 1
                times.append(v.elapsed_ms)
        tt = np.array(times, float)
        rows.append(TimingRow(clip.file, acts, kk, runs, passed, float(np.median(tt)) if tt.size else math.nan,
                              float(np.quantile(tt, 0.9)) if tt.size else math.nan, reasons))
    return rows


def render_timing(rows: Sequence[TimingRow], k: int) -> str:
    short = {"blink": "B", "turn_left": "L", "turn_right": "R", "look_up": "U", "open_mouth": "M", "smile": "S"}
    lines = ["(c) time to verdict of a responding person: a SIMULATION. Each clip's person holds still (its quiet "
             "frames), and 300-700 ms after each prompt plays one of the clip's own labelled segments of that action "
             "(cuts aligned), orders drawn from the actions the clip shows (B blink, L/R turn left/right, U look up, "
             "M open mouth, S smile) with a head movement when it has one, k as shown; passive votes live",
             f"{'clip':<58}{'actions':>8}{'k':>3}{'runs':>5}{'PASS':>7}{'median ms':>10}{'p90 ms':>8}   other verdicts"]
    for r in rows:
        other = ", ".join(f"{k_} {v}" for k_, v in sorted(r.reasons.items(), key=lambda kv: -kv[1])
                          if not k_.startswith("PASS"))
        med = f"{r.median_ms:10.0f}" if math.isfinite(r.median_ms) else f"{'-':>10}"
        p90 = f"{r.p90_ms:8.0f}" if math.isfinite(r.p90_ms) else f"{'-':>8}"
        acts = "".join(short.get(a, "?") for a in r.actions)
        lines.append(f"{r.clip:<58}{acts:>8}{r.k:>3}{r.runs:>5}{r.passed / r.runs * 100:6.1f}%{med}{p90}   {other}")
    full = [r for r in rows if r.k == k and any(a in POSE_ACTIONS for a in r.actions)]
    if full:
        runs = sum(r.runs for r in full)
        passed = sum(r.passed for r in full)
        lines.append(f"clips with k = {k} and a head movement: {len(full)}, {passed}/{runs} PASS "
                     f"({passed / runs * 100:.1f} %); median of the clips' medians "
                     f"{np.nanmedian([r.median_ms for r in full]):.0f} ms")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- the whole run


def load_recordings(shared: Path, measure, *, sessions: Path | None = None,
                    progress: Callable[[str], None] | None = None
                    ) -> tuple[list[Clip], dict[str, MeshSeries], list[Recording]]:
    """Measure every recording once: action-dev clips, fas-dev images, simulated sessions (if given)."""
    action_root, fas_root = shared / "action-dev", shared / "fas-dev"
    for p in (action_root / "manifest.csv", fas_root / "manifest.csv"):
        if not p.is_file():
            raise EdgeError(f"{p} not found: --active wants the shared data folder holding action-dev/ and fas-dev/")
    clips = load_action_manifest(action_root / "manifest.csv")
    series: dict[str, MeshSeries] = {}
    recs: list[Recording] = []
    for k_, clip in enumerate(clips):
        if progress:
            progress(f"mesh {k_ + 1}/{len(clips)}: {clip.file}")
        s = measure_series(clip.file, read_frames(action_root / clip.file), clip.frames, clip.fps, measure)
        series[clip.file] = s
        recs.append(Recording(clip.file, "clip", s))
    with (fas_root / "manifest.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    for k_, row in enumerate(rows):
        if progress and k_ % 50 == 0:
            progress(f"mesh fas-dev {k_ + 1}/{len(rows)}")
        s = measure_series(row["file"], read_frames(fas_root / row["file"]), 1, 30.0, measure)
        recs.append(Recording(row["file"], "still", s, loop=True))
    if sessions is not None:
        man = sessions / "manifest.csv"
        if not man.is_file():
            raise EdgeError(f"{man} not found: --sessions wants the output folder of scripts/sim_sessions.py")
        with man.open(newline="") as fh:
            srows = list(csv.DictReader(fh))
        for k_, row in enumerate(srows):
            if progress and k_ % 100 == 0:
                progress(f"mesh sessions {k_ + 1}/{len(srows)}")
            folder = sessions / row["file"]
            files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
            s = measure_series(row["file"], _images(files), len(files), 30.0, measure)
            recs.append(Recording(row["file"], "sim", s, loop=True))
    return clips, series, recs


def _images(files: Iterable[Path]):
    for f in files:
        yield from read_frames(f)


def run(shared: Path, measure, *, draws: int = 200, k: int = 2, seed: int = 7, sessions: Path | None = None,
        sim_draws: int = 20,
        timing_runs: int = 100, config: ChallengeConfig | None = None, depth_threshold: float | None = None,
        progress: Callable[[str], None] | None = None) -> str:
    """All three studies on a ../shared layout; the tables as text."""
    base = config or ChallengeConfig()
    cfg = ChallengeConfig(**{**base.__dict__, "k": k})
    clips, series, recs = load_recordings(shared, measure, sessions=sessions, progress=progress)
    try:
        parts = [render_detection(detection_study(clips, series, EngineDetector(cfg)))]
        if progress:
            progress("replaying")
        res = replay_study(recs, draws=draws, k=k, seed=seed, config=cfg, depth_threshold=depth_threshold,
                           sim_draws=sim_draws, progress=progress)
        counts: dict[str, int] = {}
        for r in recs:
            counts[r.kind] = counts.get(r.kind, 0) + 1
        parts.append(render_replay(res, counts, k, draws, sim_draws))
        if progress:
            progress("time to verdict")
        parts.append(render_timing(timing_study(clips, series, runs=timing_runs, k=k, seed=seed, config=cfg,
                                                depth_threshold=depth_threshold), k))
        thr = depth_threshold if depth_threshold else DepthCheck().threshold
        head = (f"active liveness on {shared}: k = {k}, turn {cfg.turn_deg} deg, look up {cfg.look_up_deg} deg, "
                f"blink +{cfg.blink_delta}, mouth +{cfg.mouth_delta}, smile +{cfg.smile_delta}, "
                f"3-D residual >= {thr}\n")
        return head + "\n" + "\n".join(parts)
    finally:
        for r in recs:
            r.series.wipe()
