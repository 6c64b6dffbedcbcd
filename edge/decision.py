"""The session decision: a pure state machine from per-frame evidence to one verdict.

It knows nothing about cameras, models or wires. The runner feeds it events
with timestamps (milliseconds on a monotonic clock, or the source's own
timeline for offline files) and it answers with ``None`` until the session is
decided, then with the :class:`~edge.types.Verdict`, and keeps answering with
that same verdict afterwards.

Rules (all fail closed):

* A frame *votes* when it had exactly one usable face that passed the quality
  gate and got a liveness score; the vote is live when ``score >= threshold``.
* Early, when the evidence agrees: FAIL once the last ``fail_votes`` votes are
  all attack votes; PASS once the last ``pass_votes`` votes are all live *and*
  the mean of all votes so far is at least ``threshold``. FAIL is checked first.
* Otherwise the votes are split, i.e. the frames sit near the threshold, and
  more frames decide: once ``window`` votes are in, PASS if their mean score is
  at least ``threshold``, else FAIL. The mean is the better estimate there:
  frame-to-frame noise averages out, where a vote count throws the margin away
  (measured on simulated sessions: README, Accuracy).
* ``no_face_ms`` after the start with no face ever seen: NO_FACE. ``timeout_ms``
  after the start without a decision: NO_FACE if no face was ever seen,
  otherwise TIMEOUT, whose reason is the commonest quality refusal when no
  frame voted (``FACE_TOO_SMALL``, ``TOO_DARK``...) and ``NOT_ENOUGH_VOTES``
  when frames voted but never conclusively.
* A finite source that ends early (a still image, a short clip) is decided on
  what it gave: no face -> NO_FACE; faces but no votes -> TIMEOUT; otherwise PASS
  only if at least ``min_votes_at_end`` votes, a live majority and a mean at
  or above the threshold, else FAIL.
* Any fault -> FAULT with its reason. Nothing but these rules produces PASS.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.types import Reason, Verdict, VerdictKind


@dataclass(frozen=True)
class DecisionConfig:
    threshold: float = 0.5
    window: int = 5
    pass_votes: int = 3
    fail_votes: int = 3
    timeout_ms: int = 3000
    no_face_ms: int = 2000
    min_votes_at_end: int = 1

    def __post_init__(self) -> None:
        # Programming errors only: user input is validated (with key names) in edge.config.
        if not 0.0 <= self.threshold <= 1.0:
            raise ValueError("threshold must be within [0, 1]")
        if not 1 <= self.pass_votes <= self.window or not 1 <= self.fail_votes <= self.window:
            raise ValueError("pass_votes and fail_votes must be within [1, window]")
        if self.timeout_ms <= 0 or self.no_face_ms <= 0 or self.min_votes_at_end < 1:
            raise ValueError("timeouts and min_votes_at_end must be positive")


class Decision:
    """One session's decision. Create one per session (or call :meth:`start` again)."""

    def __init__(self, config: DecisionConfig | None = None):
        self.config = config or DecisionConfig()
        # Score history lives in a fixed buffer so it can be wiped in place at session end.
        self._scores = np.zeros(self.config.window, dtype=np.float64)
        # Why frames did not vote, counted per reason code, so a TIMEOUT can say
        # what to fix ("too dark") instead of only that votes were missing.
        self._refusals = np.zeros(64, dtype=np.int64)
        self._start_ms: float | None = None
        self._reset()

    def _reset(self) -> None:
        self._scores.fill(0.0)
        self._refusals.fill(0)
        self._n_votes = 0
        self._frames = 0
        self._face_frames = 0
        self._verdict: Verdict | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self, t_ms: float, session_id: int = 0, budget_ms: float | None = None) -> None:
        """Begin a session at ``t_ms``. ``budget_ms`` (the controller's own deadline, less a
        delivery margin) shortens ``timeout_ms`` and ``no_face_ms`` for this session only."""
        self._reset()
        self._start_ms = float(t_ms)
        self._session_id = int(session_id)
        self._timeout_ms = float(self.config.timeout_ms)
        self._no_face_ms = float(self.config.no_face_ms)
        if budget_ms is not None:
            self._timeout_ms = min(self._timeout_ms, max(float(budget_ms), 0.0))
            self._no_face_ms = min(self._no_face_ms, self._timeout_ms)

    @property
    def verdict(self) -> Verdict | None:
        return self._verdict

    # -- events ---------------------------------------------------------------------------
    def on_frame(self, t_ms: float, *, faces: int, score: float | None = None, reason: Reason = Reason.NONE):
        """One frame: ``faces`` usable faces seen, ``score`` its live score if it voted."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        self._frames += 1
        if faces > 0:
            self._face_frames += 1
        if score is None and faces > 0 and 0 < int(reason) < len(self._refusals):
            self._refusals[int(reason)] += 1
        if score is not None:
            if not np.isfinite(score):
                return self.on_fault(t_ms, Reason.MODEL_ERROR)
            self._scores[self._n_votes % self.config.window] = float(score)
            self._n_votes += 1
            verdict = self._judge_window(t_ms)
            if verdict is not None:
                return verdict
        return self.on_tick(t_ms)

    def on_tick(self, t_ms: float):
        """Time passes without a frame (camera slow): apply the deadlines."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        elapsed = t_ms - self._start_ms
        if self._face_frames == 0 and elapsed >= self._no_face_ms:
            return self._finish(t_ms, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
        if elapsed >= self._timeout_ms:
            if self._face_frames == 0:
                return self._finish(t_ms, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
            return self._finish(t_ms, VerdictKind.TIMEOUT, self._timeout_reason())
        return None

    def on_end(self, t_ms: float):
        """The source ended (finite input): decide on what was seen."""
        self._require_started()
        if self._verdict is not None:
            return self._verdict
        if self._face_frames == 0:
            return self._finish(t_ms, VerdictKind.NO_FACE, Reason.NO_FACE_FOUND)
        if self._n_votes == 0:
            return self._finish(t_ms, VerdictKind.TIMEOUT, self._timeout_reason())
        votes = self._window_scores()
        live = int(np.count_nonzero(votes >= self.config.threshold))
        if (
            len(votes) >= self.config.min_votes_at_end
            and 2 * live > len(votes)
            and float(votes.mean()) >= self.config.threshold
        ):
            return self._finish(t_ms, VerdictKind.PASS, Reason.LIVE_CONFIRMED)
        return self._finish(t_ms, VerdictKind.FAIL, Reason.SPOOF_DETECTED)

    def on_fault(self, t_ms: float, reason: Reason = Reason.INTERNAL_ERROR):
        """Anything broke: FAULT, whatever was seen before."""
        if self._start_ms is None:
            self.start(t_ms)
        if self._verdict is not None and self._verdict.kind is VerdictKind.FAULT:
            return self._verdict
        # A fault after a verdict is still a fault of the session (e.g. delivery failed);
        # it never turns into anything but FAULT.
        self._verdict = None
        return self._finish(t_ms, VerdictKind.FAULT, reason)

    # -- internals ------------------------------------------------------------------------
    def _window_scores(self) -> np.ndarray:
        n = min(self._n_votes, self.config.window)
        return self._scores[:n]  # order does not matter for the mean

    def _last_all(self, k: int, live: bool) -> bool:
        """Whether the last ``k`` votes were all live (or all attack)."""
        if self._n_votes < k:
            return False
        w, t = self.config.window, self.config.threshold
        for j in range(self._n_votes - k, self._n_votes):
            if (self._scores[j % w] >= t) != live:
                return False
        return True

    def _timeout_reason(self) -> Reason:
        """The commonest reason frames with a face did not vote, or NOT_ENOUGH_VOTES
        when they did vote but never conclusively."""
        if self._n_votes == 0 and self._refusals.any():
            return Reason(int(np.argmax(self._refusals)))
        return Reason.NOT_ENOUGH_VOTES

    def _judge_window(self, t_ms: float):
        cfg = self.config
        if self._last_all(cfg.fail_votes, live=False):
            return self._finish(t_ms, VerdictKind.FAIL, Reason.SPOOF_DETECTED)
        mean_ok = float(self._window_scores().mean()) >= cfg.threshold
        if self._last_all(cfg.pass_votes, live=True) and mean_ok:
            return self._finish(t_ms, VerdictKind.PASS, Reason.LIVE_CONFIRMED)
        if self._n_votes >= cfg.window:
            if mean_ok:
                return self._finish(t_ms, VerdictKind.PASS, Reason.LIVE_CONFIRMED)
            return self._finish(t_ms, VerdictKind.FAIL, Reason.SPOOF_DETECTED)
        return None

    def _finish(self, t_ms: float, kind: VerdictKind, reason: Reason) -> Verdict:
        self._verdict = Verdict(
            kind=kind,
            reason=reason,
            frames_used=min(self._n_votes, self.config.window) if kind in (VerdictKind.PASS, VerdictKind.FAIL) else self._n_votes,
            frames_seen=self._frames,
            elapsed_ms=max(0, int(round(t_ms - self._start_ms))),
            session_id=self._session_id,
        )
        return self._verdict

    def _require_started(self) -> None:
        if self._start_ms is None:
            raise RuntimeError("Decision.start() must be called before events")

    def wipe(self) -> None:
        """Zero the per-person score history (privacy: nothing survives the session)."""
        self._scores.fill(0.0)
        self._refusals.fill(0)
