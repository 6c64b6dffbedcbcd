"""Active liveness: a random challenge of face actions, read from the face mesh.

:class:`Challenge` is a pure state machine, like :class:`edge.decision.Decision`:
the runner feeds it one event per frame (timestamp, how many faces, the main
face's :class:`~edge.landmarks.FaceLandmarks` or None, the passive liveness
score if the frame voted) and it answers ``None`` until the session is decided,
then the :class:`~edge.types.Verdict`. What the person should do now is
:attr:`Challenge.prompt`; what happened is :attr:`Challenge.events`.

A session, in order (all thresholds relative to the person's own neutral face):

1. **Baseline.** The first ``baseline_ms`` of a near-frontal, steady face give
   the neutral values of every signal (median): head pose, eye closure, jaw
   opening, smile. Narrow eyes, glasses, a resting smile or a camera mounted
   off-axis move the baseline, not the thresholds.
2. **Actions.** ``k`` actions drawn without repeats (:mod:`firmware_bridge.challenge`).
   For each: a prompt; the motion must *start* at least ``reaction_ms`` after it
   (a human's reaction time: motion already under way was not caused by the
   prompt, so it is ignored and must be redone) and complete within
   ``response_ms``; then the face must come back to neutral within ``neutral_ms``
   before the next prompt. A clearly different head movement or an open mouth
   when something else was asked fails the session (``CHALLENGE_FAILED``); a
   blink or a smile never does (people blink and smile unasked).
3. **3-D.** During head movements the mesh's motion between the neutral face and
   the turned one must not be explained by one plane (a print, a screen or a
   flat mask moves like a plane; a head does not): ``NOT_3D`` otherwise.
4. **Passive votes.** The passive models vote on every usable frame throughout;
   ``fail_votes`` attack votes in a row, or an attack majority at the end, fail
   the session (``SPOOF_DETECTED``) whatever the actions did.
5. **One face throughout.** A second face, the face gone for longer than
   ``max_gap_ms``, or a jump of the face between frames (a cut in a replayed
   video, a swap) fails the session (``FACE_CHANGED``).

PASS needs every action done in order, the 3-D check passed (when a head
movement was asked and a checker is configured), at least ``min_votes`` passive
votes with a live majority and a mean at or above ``threshold``. Everything else
fails closed; a still image or a frozen stream can only time out.

Conventions: ``turn_left`` is the person's own left (positive yaw, see
:mod:`edge.landmarks.base`); in an unmirrored camera image the nose moves
toward the image's right.
"""

from __future__ import annotations

import enum
import math
import secrets
from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from edge.landmarks.base import BLENDSHAPE_INDEX, FaceLandmarks
from edge.types import FaceBox, Prompt, Reason, Verdict, VerdictKind
from firmware_bridge.challenge import ACTIONS, POSE_ACTIONS, challenge_seed, draw

__all__ = [
    "ACTIONS",
    "POSE_ACTIONS",
    "ACTION_PROMPTS",
    "Challenge",
    "ChallengeConfig",
    "ChallengeEvent",
    "Signals",
    "challenge_seed",
    "draw",
    "parse_actions",
    "random_order",
]

ACTION_PROMPTS = {
    "blink": Prompt.BLINK,
    "turn_left": Prompt.TURN_LEFT,
    "turn_right": Prompt.TURN_RIGHT,
    "look_up": Prompt.LOOK_UP,
    "open_mouth": Prompt.OPEN_MOUTH,
    "smile": Prompt.SMILE,
}

# What counts as a wrong answer to each action: a clear head movement or mouth opening that was
# not asked. Never a blink or a smile (people blink and smile unasked), and never looking up
# while turning (a turn often lifts the chin: 32 % of one dev clip's turns did by more than 15 deg).
_WRONG = {
    "blink": ("turn_left", "turn_right", "look_up", "open_mouth"),
    "smile": ("turn_left", "turn_right", "look_up", "open_mouth"),
    "turn_left": ("turn_right", "open_mouth"),
    "turn_right": ("turn_left", "open_mouth"),
    "look_up": ("turn_left", "turn_right", "open_mouth"),
    "open_mouth": ("turn_left", "turn_right", "look_up"),
}

# Signal vector layout (one float64 row per frame).
YAW, PITCH, ROLL, BLINK, BLINK_MIN, JAW, SMILE, CX, CY, SIZE = range(10)
N_SIGNALS = 10
_EYE_L, _EYE_R = BLENDSHAPE_INDEX["eyeBlinkLeft"], BLENDSHAPE_INDEX["eyeBlinkRight"]
_JAW = BLENDSHAPE_INDEX["jawOpen"]
_SMILE_L, _SMILE_R = BLENDSHAPE_INDEX["mouthSmileLeft"], BLENDSHAPE_INDEX["mouthSmileRight"]


def parse_actions(text: str | Sequence[str], *, k_max: int = 4) -> tuple[str, ...]:
    """``"blink,turn_left"`` -> ``("blink", "turn_left")``; ValueError naming the fix otherwise."""
    items = [a.strip() for a in (text.split(",") if isinstance(text, str) else text)]
    items = [a for a in items if a]
    if not items:
        raise ValueError("an explicit challenge needs at least one action (" + ", ".join(ACTIONS) + ")")
    for a in items:
        if a not in ACTIONS:
            raise ValueError(f"unknown challenge action {a!r}: expected a comma-separated list of " + ", ".join(ACTIONS))
    if len(set(items)) != len(items):
        raise ValueError("a challenge asks each action at most once: " + ",".join(items))
    if len(items) > k_max:
        raise ValueError(f"a challenge has at most {k_max} actions, got {len(items)}")
    return tuple(items)


def random_order(k: int, actions: Sequence[str] = ACTIONS, *, require_pose: bool = True) -> tuple[str, ...]:
    """An order from the OS's CSPRNG, for sessions without a controller nonce."""
    return draw(secrets.token_bytes(32), k, tuple(actions), require_pose)


@dataclass(frozen=True)
class ChallengeConfig:
    """Thresholds of the active challenge (user input is validated with key names in edge.config)."""

    k: int = 2
    actions: tuple[str, ...] = ACTIONS
    require_pose: bool = True  # every order holds a head movement, so the 3-D check always runs
    # timing, milliseconds
    baseline_ms: int = 400
    baseline_frames: int = 4
    reaction_ms: int = 200
    response_ms: int = 3000
    neutral_ms: int = 2500
    max_gap_ms: int = 500  # no face at all for longer: FACE_CHANGED
    # The mesh gives up on a face turned far (beyond ~50 deg) while the detector still sees it:
    # that gap may last longer, as long as the detector's box stays continuous.
    max_mesh_gap_ms: int = 2000
    no_face_ms: int = 2000
    baseline_timeout_ms: int = 3000
    # action thresholds, relative to the baseline
    turn_deg: float = 15.0
    look_up_deg: float = 12.0
    blink_delta: float = 0.18  # mean of both eyes' blink scores over the neutral face
    blink_both: float = 0.7  # ... and the less closed eye at least this fraction of it (not a wink)
    # A blink is done once the eyes have opened again below this fraction of blink_delta: lids
    # open more slowly than they close, and a slow reopening is still an answer.
    blink_open: float = 0.75
    mouth_delta: float = 0.30
    smile_delta: float = 0.35
    frontal_deg: float = 12.0  # blinks count only this close to the neutral pose
    neutral_deg: float = 7.0
    neutral_delta: float = 0.20
    baseline_max_deg: float = 25.0  # a baseline needs a roughly frontal face (cameras sit off-axis) ...
    baseline_steady_deg: float = 6.0  # ... held this steady
    wrong_factor: float = 1.3  # another action counts as done wrong at this multiple of its threshold
    # face continuity: the largest jump of the face centre between frames (in face sizes) and
    # the largest change of face size between frames (ratio)
    max_jump: float = 0.5
    max_size_ratio: float = 1.4
    # passive votes
    threshold: float = 0.5
    min_votes: int = 3
    fail_votes: int = 3

    def __post_init__(self) -> None:
        # Programming errors only: user input is validated (with key names) in edge.config.
        if not 1 <= self.k <= min(4, len(self.actions)):
            raise ValueError("k must be within [1, min(4, len(actions))]")
        for a in self.actions:
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a!r}")
        if self.require_pose and not any(a in POSE_ACTIONS for a in self.actions):
            raise ValueError("require_pose needs a head movement among the actions")
        if self.min_votes < 1 or self.fail_votes < 1 or self.baseline_frames < 1:
            raise ValueError("min_votes, fail_votes and baseline_frames must be positive")


class DepthChecker(Protocol):
    """The 3-D check the engine runs during head movements (real: :class:`edge.liveness.depth.DepthCheck`).

    ``set_reference`` keeps the neutral face (copying what it needs: the mesh is borrowed);
    ``measure`` compares a turned frame of the same face with it and returns an object with
    ``is_3d`` (bool) and ``residual`` (float)."""

    def set_reference(self, lm: FaceLandmarks) -> None: ...

    def measure(self, lm: FaceLandmarks): ...

    def wipe(self) -> None: ...


@dataclass(frozen=True)
class ChallengeEvent:
    """One step of a challenge, for the verdict's event log: what was asked or seen, when.
    Carries no measurement of the face (no angle, no score)."""

    t_ms: int
    kind: str  # "baseline", "prompt", "done", "early", "neutral", "failed"
    action: str = ""

    def to_dict(self) -> dict:
        d = {"t_ms": self.t_ms, "event": self.kind}
        if self.action:
            d["action"] = self.action
        return d


class Signals:
    """Per-frame action signals of one face, in a preallocated vector (no allocation per frame)."""

    def __init__(self) -> None:
        self.v = np.zeros(N_SIGNALS, np.float64)

    def update(self, lm: FaceLandmarks) -> np.ndarray:
        b = lm.blendshapes
        v = self.v
        v[YAW] = lm.yaw_deg
        v[PITCH] = lm.pitch_deg
        v[ROLL] = lm.roll_deg
        left, right = float(b[_EYE_L]), float(b[_EYE_R])
        v[BLINK] = 0.5 * (left + right)
        v[BLINK_MIN] = min(left, right)  # both eyes must close: a wink is not a blink
        v[JAW] = float(b[_JAW])
        v[SMILE] = 0.5 * (float(b[_SMILE_L]) + float(b[_SMILE_R]))
        # Between the eyes (mesh point 168): moves least when the head turns, and follows the
        # face every frame, where the detector's box is held between detector runs.
        v[CX] = float(lm.points_px[168, 0])
        v[CY] = float(lm.points_px[168, 1])
        v[SIZE] = max(float(lm.face_size_px), 1e-6)
        return v


class _Phase(enum.Enum):
    WAIT_FACE = 0
    BASELINE = 1
    ACTION = 2
    NEUTRAL = 3
    VOTES = 4


class Challenge:
    """One session's challenge. Create one per pipeline; :meth:`start` each session."""

    MAX_BASELINE = 64
    MAX_EVENTS = 64

    def __init__(self, config: ChallengeConfig | None = None, depth: DepthChecker | None = None):
        """``depth``: the 3-D check run during head movements; None skips it (tests of the rest)."""
        self.config = config or ChallengeConfig()
        self.depth = depth
        self._signals = Signals()
        # Per-person data, preallocated and wiped in place at session end.
        self._baseline_rows = np.zeros((self.MAX_BASELINE, N_SIGNALS), np.float64)
        self._base = np.zeros(N_SIGNALS, np.float64)
        self._delta = np.zeros(N_SIGNALS, np.float64)
        self._last = np.zeros(N_SIGNALS, np.float64)
        self._started = False
        self._reset(())

    # -- lifecycle --------------------------------------------------------------------------
    def _reset(self, order: tuple[str, ...]) -> None:
        self._order = order
        self._phase = _Phase.WAIT_FACE
        self._step = 0
        self._verdict: Verdict | None = None
        self._events: list[ChallengeEvent] = []
        self._prompt = Prompt.LOOK_AT_CAMERA
        self._n_base = 0
        self._base_t0 = 0.0
        self._phase_t0 = 0.0
        self._onset_t: float | None = None
        self._early = False
        self._acting = False
        self._have_last = False
        self._last_seen_t: float | None = None
        self._last_box: FaceBox | None = None
        self._first_face_t: float | None = None
        self._frames = 0
        self._face_frames = 0
        self._votes = 0
        self._live_votes = 0
        self._vote_sum = 0.0
        self._attack_run = 0
        self._seen_3d = False
        self._refusals: dict[Reason, int] = {}
        self._base.fill(0.0)
        self._baseline_rows.fill(0.0)
        self._last.fill(0.0)

    def start(
        self,
        t_ms: float,
        order: Sequence[str],
        *,
        session_id: int = 0,
        budget_ms: float | None = None,
        origin_ms: float | None = None,
    ) -> None:
        """Begin a challenge at ``t_ms`` asking ``order`` (from :func:`draw`, :func:`random_order`
        or an explicit test order). ``budget_ms`` (the controller's deadline less a margin, from
        ``t_ms``) caps it. ``origin_ms``: the session's own start when the challenge begins later
        (step-up mode), so reported times count from the session start."""
        order = tuple(order)
        if not order:
            raise ValueError("a challenge needs at least one action")
        for a in order:
            if a not in ACTIONS:
                raise ValueError(f"unknown action {a!r}")
        self._reset(order)
        self._started = True
        self._t0 = float(t_ms)
        self._origin = float(t_ms if origin_ms is None else origin_ms)
        self._session_id = int(session_id)
        self._budget_ms = None if budget_ms is None else max(float(budget_ms), 0.0)

    @property
    def order(self) -> tuple[str, ...]:
        return self._order

    @property
    def prompt(self) -> Prompt:
        """What the person should be doing now."""
        return self._prompt

    @property
    def events(self) -> tuple[ChallengeEvent, ...]:
        return tuple(self._events)

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    @property
    def current_action(self) -> str | None:
        if self._phase in (_Phase.ACTION, _Phase.NEUTRAL) and self._step < len(self._order):
            return self._order[self._step]
        return None

    # -- events ----------------------------------------------------------------------------
    def on_frame(
        self,
        t_ms: float,
        *,
        faces: int,
        landmarks: FaceLandmarks | None,
        score: float | None = None,
        reason: Reason = Reason.NONE,
        box: FaceBox | None = None,
    ) -> Verdict | None:
        """One frame: ``faces`` countable faces, the main face's mesh (None when there was no
        single face or the mesh found none), the passive score if the frame voted, the quality
        gate's refusal reason when it did not, and the detector's box of the main face (it
        carries face continuity through frames where the mesh found no face)."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        self._frames += 1
        t = float(t_ms)
        if faces > 1 and self._phase is not _Phase.WAIT_FACE:
            return self._finish(t, VerdictKind.FAIL, Reason.FACE_CHANGED, "failed")
        if faces > 1:
            self._count_refusal(Reason.MULTIPLE_FACES)
        if faces == 1 and landmarks is not None:
            self._face_frames += 1
            if self._first_face_t is None:
                self._first_face_t = t
            v = self._signals.update(landmarks)
            if self._have_last and self._jumped(v):
                return self._finish(t, VerdictKind.FAIL, Reason.FACE_CHANGED, "failed")
            self._last[:] = v
            self._have_last = True
            self._last_seen_t = t
            self._last_box = box if box is not None else landmarks.box
            if score is not None:
                verdict = self._vote(t, score)
                if verdict is not None:
                    return verdict
            elif reason is not Reason.NONE:
                self._count_refusal(reason)
            verdict = self._advance(t, v, landmarks)
            if verdict is not None:
                return verdict
        elif self._phase is not _Phase.WAIT_FACE and self._last_seen_t is not None:
            gap = t - self._last_seen_t
            if faces == 1 and box is not None and self._last_box is not None:
                # Mesh lost, face still detected: follow the detector's box meanwhile.
                if gap > self.config.max_mesh_gap_ms or self._box_jumped(box):
                    return self._finish(t, VerdictKind.FAIL, Reason.FACE_CHANGED, "failed")
                self._last_box = box
            elif gap > self.config.max_gap_ms:
                return self._finish(t, VerdictKind.FAIL, Reason.FACE_CHANGED, "failed")
        return self.on_tick(t)

    def on_tick(self, t_ms: float) -> Verdict | None:
        """Time passes (a slow camera): apply the deadlines."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        t = float(t_ms)
        cfg = self.config
        elapsed = t - self._t0
        if self._budget_ms is not None and elapsed >= self._budget_ms:
            return self._timeout(t)
        if self._phase is _Phase.WAIT_FACE:
            if self._first_face_t is None and elapsed >= cfg.no_face_ms:
                return self._finish(t, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
            if elapsed >= cfg.baseline_timeout_ms:
                return self._timeout(t)
        elif self._phase is _Phase.BASELINE:
            if elapsed >= cfg.baseline_timeout_ms:
                return self._timeout(t)
        elif self._phase is _Phase.ACTION:
            if t - self._phase_t0 > cfg.response_ms:
                action = self._order[self._step]
                # Turned far enough but never 3-D: that is the finding, not the clock.
                reason = Reason.NOT_3D if (self._acting and action in POSE_ACTIONS) else Reason.CHALLENGE_TIMEOUT
                return self._finish(t, VerdictKind.FAIL, reason, "failed", action)
        elif self._phase is _Phase.NEUTRAL:
            if t - self._phase_t0 > cfg.neutral_ms:
                return self._finish(t, VerdictKind.FAIL, Reason.CHALLENGE_TIMEOUT, "failed", "neutral")
        elif self._phase is _Phase.VOTES:
            if t - self._phase_t0 > cfg.response_ms:
                return self._finish(t, VerdictKind.TIMEOUT, Reason.NOT_ENOUGH_VOTES)
        return None

    def on_end(self, t_ms: float) -> Verdict:
        """The source ended (a file): an unfinished challenge is not a PASS."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        t = float(t_ms)
        if self._first_face_t is None:
            return self._finish(t, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
        if self._phase in (_Phase.WAIT_FACE, _Phase.BASELINE):
            return self._timeout(t)
        if self._phase is _Phase.VOTES:
            return self._judge_votes(t, final=True) or self._finish(t, VerdictKind.TIMEOUT, Reason.NOT_ENOUGH_VOTES)
        action = self._order[self._step] if self._phase is _Phase.ACTION else "neutral"
        return self._finish(t, VerdictKind.FAIL, Reason.CHALLENGE_TIMEOUT, "failed", action)

    def on_fault(self, t_ms: float, reason: Reason = Reason.INTERNAL_ERROR) -> Verdict:
        if not self._started:
            self.start(t_ms, ("blink",))
        if self._verdict is not None and self._verdict.kind is VerdictKind.FAULT:
            return self._verdict
        self._verdict = None
        return self._finish(float(t_ms), VerdictKind.FAULT, reason)

    # -- the state machine -----------------------------------------------------------------
    def _advance(self, t: float, v: np.ndarray, lm: FaceLandmarks) -> Verdict | None:
        cfg = self.config
        if self._phase is _Phase.WAIT_FACE:
            self._phase = _Phase.BASELINE
            self._base_t0 = t
            self._n_base = 0
            self._prompt = Prompt.HOLD_STILL
        if self._phase is _Phase.BASELINE:
            return self._baseline(t, v, lm)
        np.subtract(v, self._base, out=self._delta)
        d = self._delta
        if self._phase is _Phase.ACTION:
            return self._action(t, d, lm)
        if self._phase is _Phase.NEUTRAL:
            if self._is_neutral(d):
                self._event(t, "neutral")
                self._next_action(t)
                if self._phase is _Phase.VOTES:
                    return self._judge_votes(t, final=False)
            return None
        if self._phase is _Phase.VOTES:
            return self._judge_votes(t, final=False)
        return None

    def _baseline(self, t: float, v: np.ndarray, lm: FaceLandmarks) -> Verdict | None:
        cfg = self.config
        if abs(v[YAW]) > cfg.baseline_max_deg or abs(v[PITCH]) > cfg.baseline_max_deg:
            # Not facing the camera: start the baseline again once the person does.
            self._n_base = 0
            self._base_t0 = t
            self._prompt = Prompt.FACE_CAMERA
            return None
        if self._n_base >= self.MAX_BASELINE:
            self._baseline_rows[:-1] = self._baseline_rows[1:]
            self._n_base -= 1
        self._baseline_rows[self._n_base] = v
        self._n_base += 1
        rows = self._baseline_rows[: self._n_base]
        if self._n_base >= 2 and (np.ptp(rows[:, YAW]) > cfg.baseline_steady_deg or np.ptp(rows[:, PITCH]) > cfg.baseline_steady_deg):
            # Moving while the baseline is taken: keep only this frame and start again.
            self._baseline_rows[0] = v
            self._n_base = 1
            self._base_t0 = t
            self._prompt = Prompt.HOLD_STILL
            return None
        if self._n_base < cfg.baseline_frames or t - self._base_t0 < cfg.baseline_ms:
            return None
        np.median(rows, axis=0, out=self._base)
        if self.depth is not None:
            self.depth.set_reference(lm)
        self._event(t, "baseline")
        self._next_action(t)
        return None

    def _next_action(self, t: float) -> None:
        if self._phase is _Phase.NEUTRAL:
            self._step += 1
        if self._step >= len(self._order):
            self._phase = _Phase.VOTES
            self._phase_t0 = t
            self._prompt = Prompt.HOLD_STILL
            return
        self._phase = _Phase.ACTION
        self._phase_t0 = t
        self._onset_t = None
        self._early = False
        self._acting = False
        self._seen_3d = False
        action = self._order[self._step]
        self._prompt = ACTION_PROMPTS[action]
        self._event(t, "prompt", action)

    def _strength(self, action: str, d: np.ndarray) -> float:
        """How far ``action`` is along, as a multiple of its threshold (1.0 = done)."""
        cfg = self.config
        if action == "turn_left":
            return d[YAW] / cfg.turn_deg
        if action == "turn_right":
            return -d[YAW] / cfg.turn_deg
        if action == "look_up":
            return d[PITCH] / cfg.look_up_deg
        if action == "open_mouth":
            return d[JAW] / cfg.mouth_delta
        if action == "smile":
            return d[SMILE] / cfg.smile_delta
        if action == "blink":
            # Eye closure only means something on a near-frontal face: in a turn the far eye
            # narrows in the image and the blendshape rises without a blink.
            if abs(d[YAW]) > cfg.frontal_deg or abs(d[PITCH]) > cfg.frontal_deg:
                return 0.0
            if d[BLINK_MIN] < cfg.blink_both * cfg.blink_delta:
                return min(d[BLINK] / cfg.blink_delta, 0.49)  # one eye only: never a blink
            return d[BLINK] / cfg.blink_delta
        raise ValueError(action)

    def _action(self, t: float, d: np.ndarray, lm: FaceLandmarks) -> Verdict | None:
        cfg = self.config
        action = self._order[self._step]
        s = self._strength(action, d)
        since_prompt = t - self._phase_t0
        # Wrong action: a clear head movement or mouth opening that was not asked (a turn often
        # lifts the chin, so looking up is no wrong answer to a turn).
        if since_prompt >= cfg.reaction_ms:
            for other in _WRONG[action]:
                if self._strength(other, d) >= cfg.wrong_factor:
                    return self._finish(t, VerdictKind.FAIL, Reason.CHALLENGE_FAILED, "failed", other)
        if s >= 0.5:
            if self._onset_t is None:
                self._onset_t = t
                self._early = since_prompt < cfg.reaction_ms
        elif not self._acting:
            # Back below half-way: the next excursion may count (if it starts late enough).
            if self._early:
                self._event(t, "early", action)
            self._onset_t = None
            self._early = False
        if self._early:
            return None
        if action == "blink":
            if s >= 1.0:
                self._acting = True  # eyes closed; the blink is done when they open again
            elif self._acting and s < cfg.blink_open:
                return self._done(t, action)
            return None
        if s >= 1.0:
            self._acting = True
            if action in POSE_ACTIONS and self.depth is not None and not self._seen_3d:
                self._seen_3d = bool(self.depth.measure(lm).is_3d)
            if action not in POSE_ACTIONS or self.depth is None or self._seen_3d:
                return self._done(t, action)
            return None
        if self._acting and s < 0.5:
            # The head came back without ever looking 3-D.
            return self._finish(t, VerdictKind.FAIL, Reason.NOT_3D, "failed", action)
        return None

    def _done(self, t: float, action: str) -> Verdict | None:
        self._event(t, "done", action)
        self._phase = _Phase.NEUTRAL
        self._phase_t0 = t
        self._prompt = Prompt.BACK_TO_NEUTRAL
        return None

    def _is_neutral(self, d: np.ndarray) -> bool:
        cfg = self.config
        return (
            abs(d[YAW]) < cfg.neutral_deg
            and abs(d[PITCH]) < cfg.neutral_deg
            and d[JAW] < cfg.neutral_delta
            and d[SMILE] < cfg.neutral_delta
            and d[BLINK] < cfg.neutral_delta
        )

    def _jumped(self, v: np.ndarray) -> bool:
        cfg = self.config
        size = max(self._last[SIZE], 1e-6)
        jump = math.hypot(v[CX] - self._last[CX], v[CY] - self._last[CY]) / size
        ratio = v[SIZE] / size
        return jump > cfg.max_jump or not (1.0 / cfg.max_size_ratio <= ratio <= cfg.max_size_ratio)

    def _box_jumped(self, box: FaceBox) -> bool:
        cfg = self.config
        last = self._last_box
        size = max(last.w, 1e-6)
        jump = math.hypot(box.cx - last.cx, box.cy - last.cy) / size
        ratio = box.w / size
        # In box widths (about twice the eye-corner distance of the mesh check): looser, since the
        # detector's box is held between detector runs and then moves in one step.
        return jump > cfg.max_jump or not (1.0 / cfg.max_size_ratio <= ratio <= cfg.max_size_ratio)

    def _vote(self, t: float, score: float) -> Verdict | None:
        if not math.isfinite(score):
            return self.on_fault(t, Reason.MODEL_ERROR)
        cfg = self.config
        self._votes += 1
        self._vote_sum += float(score)
        if score >= cfg.threshold:
            self._live_votes += 1
            self._attack_run = 0
        else:
            self._attack_run += 1
            if self._attack_run >= cfg.fail_votes:
                return self._finish(t, VerdictKind.FAIL, Reason.SPOOF_DETECTED)
        return None

    def _judge_votes(self, t: float, *, final: bool) -> Verdict | None:
        cfg = self.config
        attack = self._votes - self._live_votes
        if self._votes and 2 * attack >= self._votes and (final or self._votes >= cfg.min_votes):
            return self._finish(t, VerdictKind.FAIL, Reason.SPOOF_DETECTED)
        if self._votes >= cfg.min_votes:
            if 2 * self._live_votes > self._votes and self._vote_sum / self._votes >= cfg.threshold:
                return self._finish(t, VerdictKind.PASS, Reason.LIVE_CONFIRMED)
            return self._finish(t, VerdictKind.FAIL, Reason.SPOOF_DETECTED)
        return None

    def _timeout(self, t: float) -> Verdict:
        if self._first_face_t is None:
            return self._finish(t, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
        if self._phase in (_Phase.ACTION, _Phase.NEUTRAL):
            action = self._order[self._step] if self._phase is _Phase.ACTION else "neutral"
            return self._finish(t, VerdictKind.FAIL, Reason.CHALLENGE_TIMEOUT, "failed", action)
        reason = max(self._refusals, key=self._refusals.get) if self._refusals and self._votes == 0 else Reason.NOT_ENOUGH_VOTES
        return self._finish(t, VerdictKind.TIMEOUT, reason)

    def _count_refusal(self, reason: Reason) -> None:
        self._refusals[reason] = self._refusals.get(reason, 0) + 1

    def _finish(self, t: float, kind: VerdictKind, reason: Reason, event: str = "", action: str = "") -> Verdict:
        if event:
            self._event(t, event, action)
        self._prompt = Prompt.NONE
        self._verdict = Verdict(
            kind=kind,
            reason=reason,
            frames_used=self._votes,
            frames_seen=self._frames,
            elapsed_ms=max(0, self._rel(t)),
            session_id=self._session_id,
            challenge=self._order,
            events=tuple(self._events),
        )
        return self._verdict

    def _event(self, t: float, kind: str, action: str = "") -> None:
        # Bounded: a recording that keeps moving too early must not grow the log without end.
        if len(self._events) < self.MAX_EVENTS:
            self._events.append(ChallengeEvent(self._rel(t), kind, action))

    def _rel(self, t: float) -> int:
        return int(round(t - self._origin))

    def _require_started(self) -> None:
        if not self._started:
            raise RuntimeError("Challenge.start() must be called before events")

    def wipe(self) -> None:
        """Zero the per-person baseline, signals and kept mesh (privacy: nothing survives the session)."""
        self._baseline_rows.fill(0.0)
        self._base.fill(0.0)
        self._delta.fill(0.0)
        self._last.fill(0.0)
        self._signals.v.fill(0.0)
        if self.depth is not None:
            self.depth.wipe()
        self._vote_sum = 0.0
