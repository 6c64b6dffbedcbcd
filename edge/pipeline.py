"""The session runner: frames in, one verdict out.

:class:`Pipeline` holds the loaded stages (detector, quality gate, liveness)
and runs one session on a camera: read the newest frame, detect, gate, score,
feed the decision, until the decision answers. Whatever happens, the session
ends with every buffer that held pixels or scores zeroed, the camera closed
(unless kept warm for continuous gate mode) and exactly one verdict.

:class:`Runtime` is the main loop of ``edge run``: wait on the trigger with the
camera closed, run a session, deliver the verdict to the sink, repeat.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.bridge.base import SessionRequest, Trigger, VerdictSink
from edge.camera.base import Camera
from edge.challenge import Challenge, ChallengeConfig, DepthChecker, draw, random_order
from edge.decision import Decision, DecisionConfig
from edge.detect.base import FaceDetector
from edge.errors import CameraError, CameraLost, EndOfStream, ModelError
from edge.landmarks.base import FaceLandmarks, LandmarkEstimator
from edge.liveness.base import LivenessModel
from edge.quality import QualityConfig, QualityMeasures, QualityResult, count_faces
from edge.types import FaceBox, Prompt, Reason, Verdict, VerdictKind

log = logging.getLogger(__name__)

#: Time kept back from a controller's session deadline for sending the RESULT.
DELIVERY_MARGIN_MS = 300

#: Liveness modes: passive models only; the active challenge (the passive models still
#: voting); or passive first, stepping up to the challenge unless the passive evidence is clear.
MODES = ("passive", "active", "step_up")


class SimpleGate:
    """Minimal quality gate: exactly one confident face, judged by the full gate's own rule
    (:func:`edge.quality.count_faces`); no size, pose, blur or exposure checks."""

    def __init__(self, config: QualityConfig | None = None):
        self.config = config or QualityConfig()

    def assess(self, image: np.ndarray, faces: tuple[FaceBox, ...], landmarks=None) -> QualityResult:
        main, n = count_faces(faces, self.config)
        measures = QualityMeasures(faces=n)
        if main is None:
            return QualityResult(False, Reason.NO_FACE_FOUND, Prompt.LOOK_AT_CAMERA, measures)
        if n > 1:
            return QualityResult(False, Reason.MULTIPLE_FACES, Prompt.ONE_PERSON_ONLY, measures, face=main)
        return QualityResult(True, Reason.NONE, Prompt.HOLD_STILL, measures, face=main)

    def wipe(self) -> None:
        pass


@dataclass(frozen=True)
class SessionOutcome:
    """What a session produced. ``score`` (mean live score of the voting frames) is
    per-person data: it is returned to offline tools (``edge check``, ``edge eval``)
    and never logged or sent on the wire."""

    verdict: Verdict
    score: float | None = None
    frame_scores: tuple[float, ...] = ()


class Pipeline:
    """Loaded stages plus the session loop. Thread-compatible, not thread-safe: one session at a time."""

    def __init__(
        self,
        detector: FaceDetector,
        liveness: LivenessModel,
        decision: DecisionConfig | None = None,
        gate=None,
        *,
        every_n_frames: int = 1,
        read_timeout_s: float = 1.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
        on_progress: Callable[[], None] | None = None,
        mode: str = "passive",
        landmarks: LandmarkEstimator | None = None,
        challenge: ChallengeConfig | None = None,
        depth: DepthChecker | None = None,
        step_up_band: tuple[float, float] = (0.2, 0.9),
        match=None,
    ):
        """``mode`` (one of :data:`MODES`): with ``active`` or ``step_up`` a ``landmarks``
        stage is required; ``challenge`` holds the challenge's thresholds and
        ``depth`` its 3-D check. ``step_up_band`` (low, high): in step-up mode a
        passive verdict whose mean score lies below ``low`` (FAIL) or at or above ``high``
        (PASS) stands; anything between goes on to the challenge."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        if mode != "passive" and landmarks is None:
            raise ValueError(f"liveness mode {mode!r} needs a landmark stage")
        self.detector = detector
        self.liveness = liveness
        self.gate = gate or SimpleGate()
        # The gate's own rule for what counts as a second face decides whom the mesh follows.
        self._gate_config = getattr(self.gate, "config", None) or getattr(self.gate, "cfg", None) or QualityConfig()
        self.decision = Decision(decision or DecisionConfig())
        self.mode = mode
        self.landmarks = landmarks
        self.challenge = Challenge(challenge or ChallengeConfig(), depth) if mode != "passive" else None
        self.step_up_band = step_up_band
        # `edge run --challenge` (demos, offline files): the same order every session.
        self.fixed_order: tuple[str, ...] = ()
        self.every_n_frames = max(1, int(every_n_frames))
        self.read_timeout_s = read_timeout_s
        self._clock_ns = clock_ns
        self.on_progress = on_progress  # called once per frame (watchdog kick)
        self.shutdown: threading.Event | None = None  # set by Runtime: a cancel then means SHUTDOWN
        self._last_faces: tuple[FaceBox, ...] = ()
        self._session_counter = 0
        # Scores of the current session, kept only for offline tools; wiped at session end.
        self._frame_scores = np.zeros(256, dtype=np.float64)
        self._n_scores = 0
        # 1:1 (edge.match): the face mesh and a MatchSession; used only when a request carries a template.
        self.match = match

    # ------------------------------------------------------------------------------------
    def run_session(
        self,
        camera: Camera,
        request: SessionRequest | None = None,
        sink: VerdictSink | None = None,
        *,
        keep_open: bool = False,
        keep_scores: bool = False,
        deliver: bool = True,
        score_to_end: bool = False,
    ) -> SessionOutcome:
        """Run one session on ``camera`` (opened here if it is not open) and return its outcome.

        ``score_to_end`` (offline tools, finite sources, with ``keep_scores``): after the
        verdict, go on scoring the rest of the clip into ``frame_scores`` so fusion rules
        can be compared on every frame; the verdict and the session score stay those
        reached at the verdict.

        Exactly one verdict is produced and, if ``sink`` is given, delivered to it,
        after every buffer has been wiped. Never raises for a fault of the camera,
        a model or this code: those end the session with FAULT.
        """
        if request is None:
            self._session_counter += 1
            request = SessionRequest(session_id=self._session_counter)
        decision = self.decision
        t_start_ns = self._clock_ns()
        budget = None
        if request.deadline_ms:
            # Decide early enough that the RESULT reaches the controller before its deadline.
            budget = max(request.deadline_ms - DELIVERY_MARGIN_MS, 0)
        decision.start(0.0, session_id=request.session_id, budget_ms=budget)
        challenge = self.challenge
        active = self.mode == "active"
        if active:
            challenge.start(0.0, self._order(request), session_id=request.session_id, budget_ms=budget)
        judge = challenge if active else decision  # both: on_frame / on_end / on_fault
        self._n_scores = 0
        self._last_faces = ()
        last_prompt = Prompt.NONE
        verdict: Verdict | None = None
        decided: Verdict | None = None  # with score_to_end: the verdict, while the clip is scored to its end
        timeline_origin: int | None = None
        t_ms = 0.0
        score_sum = 0.0
        n_votes = 0
        log.info("session %d started (origin %s)", request.session_id, request.origin)
        try:
            verdict = self._start_match(request, t_start_ns, judge)  # a refused template ends it before the camera opens
            try:
                if verdict is None and not getattr(camera, "is_open", False):
                    camera.open()
            except CameraError as err:
                log.error("session %d: camera could not be opened: %s", request.session_id, err)
                verdict = judge.on_fault(self._elapsed_ms(t_start_ns), Reason.CAMERA_OPEN_FAILED)
            finite = bool(getattr(camera, "finite", False))
            if verdict is None and sink is not None:
                last_prompt = self._prompt(sink, request, last_prompt, Prompt.LOOK_AT_CAMERA)
            while verdict is None:
                if request.cancel.is_set():
                    reason = Reason.SHUTDOWN if (self.shutdown is not None and self.shutdown.is_set()) else Reason.ABORTED
                    verdict = judge.on_fault(self._elapsed_ms(t_start_ns), reason)
                    break
                try:
                    frame = camera.read(self.read_timeout_s)
                except EndOfStream:
                    verdict = decided or judge.on_end(t_ms if finite else self._elapsed_ms(t_start_ns))
                    break
                except CameraLost as err:
                    log.error("session %d: camera lost: %s", request.session_id, err)
                    verdict = judge.on_fault(self._elapsed_ms(t_start_ns), Reason.CAMERA_LOST)
                    break
                # Finite sources (files) run on their own timeline so an offline check gives the
                # same verdict however fast this machine is; live cameras on the monotonic clock.
                if finite:
                    if timeline_origin is None:
                        timeline_origin = frame.timestamp_ns
                    t_ms = (frame.timestamp_ns - timeline_origin) / 1e6
                else:
                    t_ms = self._elapsed_ms(t_start_ns)
                faces = self._faces(frame.image, frame.index)
                mesh = None
                if active:
                    main, n_faces = count_faces(faces, self._gate_config)
                    if main is not None and n_faces == 1:
                        mesh = self.landmarks.estimate(frame.image, main)
                # With a mesh, the gate's pose check uses the mesh's pose (keypoints otherwise).
                gate = self.gate.assess(frame.image, faces, landmarks=mesh) if mesh is not None else self.gate.assess(frame.image, faces)
                score = None
                if gate.ok:
                    score = self.liveness.score(frame.image, gate.face).live
                    if keep_scores and self._n_scores < len(self._frame_scores):
                        self._frame_scores[self._n_scores] = score
                        self._n_scores += 1
                    if decided is None:
                        score_sum += score
                        n_votes += 1
                if gate.ok and self.match is not None and self.match.active and decided is None:
                    # In active modes the mesh of this face has run already: no second pass.
                    self._match_frame(frame.image, gate.face, mesh)
                if active:
                    verdict = challenge.on_frame(t_ms, faces=n_faces, landmarks=mesh, score=score, reason=gate.reason,
                                                 box=main if n_faces == 1 else None)
                    prompt = challenge.prompt
                    if challenge.current_action is None and not gate.ok and gate.reason is not Reason.NO_FACE_FOUND:
                        prompt = gate.prompt  # before and after the actions the gate says what to fix
                else:
                    verdict = decision.on_frame(t_ms, faces=len(faces), score=score, reason=gate.reason)
                    prompt = gate.prompt
                    if verdict is not None and self.mode == "step_up" and not self._clear(verdict, score_sum, n_votes):
                        # Passive evidence not clear either way: the challenge decides.
                        log.info("session %d: passive evidence unclear, stepping up to the challenge", request.session_id)
                        left = None if budget is None else max(budget - t_ms, 0.0)
                        challenge.start(t_ms, self._order(request), session_id=request.session_id, budget_ms=left, origin_ms=0.0)
                        judge, active, verdict = challenge, True, None
                        prompt = challenge.prompt
                if (verdict is not None and score_to_end and keep_scores and finite
                        and self._n_scores < len(self._frame_scores)):
                    decided, verdict = verdict, None
                if verdict is None and decided is None and sink is not None:
                    last_prompt = self._prompt(sink, request, last_prompt, prompt)
                if self.on_progress is not None:
                    self.on_progress()
        except ModelError as err:
            log.error("session %d: model error: %s", request.session_id, err)
            verdict = judge.on_fault(self._elapsed_ms(t_start_ns), Reason.MODEL_ERROR)
        except Exception as err:  # fail secure: whatever broke, the door stays locked
            log.error("session %d: internal error (%s)", request.session_id, type(err).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
            verdict = judge.on_fault(self._elapsed_ms(t_start_ns), Reason.INTERNAL_ERROR)
        finally:
            mesh = None  # borrowed from the landmark stage, wiped below
            frame = None  # drop the borrowed frame before its buffer is wiped
            frame_scores = tuple(float(s) for s in self._frame_scores[: self._n_scores]) if keep_scores else ()
            if verdict is not None and self.match is not None and self.match.active:
                verdict = self._combine_match(verdict, request)
            self._end_session(camera, keep_open)
        mean = (score_sum / n_votes) if (keep_scores and n_votes) else None
        log.info(
            "session %d: %s (%s) frames_used=%d frames_seen=%d elapsed_ms=%d",
            request.session_id,
            verdict.kind.value,
            verdict.reason.name,
            verdict.frames_used,
            verdict.frames_seen,
            verdict.elapsed_ms,
        )
        if sink is not None and deliver:
            try:
                sink.result(request, verdict)
            except Exception as err:
                log.error("session %d: verdict delivery failed (%s)", request.session_id, type(err).__name__)
        return SessionOutcome(verdict=verdict, score=mean, frame_scores=frame_scores)

    # ------------------------------------------------------------------------------------
    def _order(self, request: SessionRequest) -> tuple[str, ...]:
        """The actions to ask: an explicit order (offline files and demos; refused in service
        mode and on the wire by the callers), else derived from the controller's nonce so the
        controller knows it, else from the OS's CSPRNG."""
        cfg = self.challenge.config
        if request.challenge:
            return tuple(request.challenge)
        if self.fixed_order:
            return self.fixed_order
        if request.challenge_seed:
            return draw(request.challenge_seed, cfg.k, cfg.actions, cfg.require_pose)
        return random_order(cfg.k, cfg.actions, require_pose=cfg.require_pose)

    def _clear(self, verdict: Verdict, score_sum: float, n_votes: int) -> bool:
        """Step-up: whether a passive verdict stands (clear PASS, clear FAIL, or not a liveness
        verdict at all), or the challenge must decide."""
        if verdict.kind not in (VerdictKind.PASS, VerdictKind.FAIL) or n_votes == 0:
            return True
        low, high = self.step_up_band
        mean = score_sum / n_votes
        return mean >= high if verdict.kind is VerdictKind.PASS else mean < low

    def _faces(self, image: np.ndarray, index: int) -> tuple[FaceBox, ...]:
        # Between detector runs the last boxes stand in: at 30 fps a face moves a few
        # pixels per frame, well inside the liveness crop's 2.7x margin.
        if self.every_n_frames == 1 or not self._last_faces or index % self.every_n_frames == 0:
            self._last_faces = self.detector.detect(image)
        return self._last_faces

    def _start_match(self, request: SessionRequest, t_start_ns: int, judge) -> Verdict | None:
        """Arm the 1:1 check when the request carries a template; a FAULT verdict when it cannot be honoured
        (a liveness-only PASS for a card + face door would let anyone with the card in)."""
        from edge.match.template import TemplateError

        if not request.template:
            return None
        if self.match is None or self.landmarks is None:
            log.error("session %d: a template arrived but face matching is not enabled ([match] enabled = true)",
                      request.session_id)
            return judge.on_fault(self._elapsed_ms(t_start_ns), Reason.MODEL_ERROR)
        try:
            self.match.start(request.template)
        except TemplateError as err:
            log.error("session %d: template refused: %s", request.session_id, err)
            return judge.on_fault(self._elapsed_ms(t_start_ns), Reason.TEMPLATE_INVALID)
        return None

    def _match_frame(self, image: np.ndarray, face: FaceBox, mesh: FaceLandmarks | None = None) -> None:
        if not self.match.wants(float("inf")):  # enough descriptors computed: skip the mesh too
            return
        lm = mesh if mesh is not None and mesh.box is face else self.landmarks.estimate(image, face)
        if lm is not None:
            self.match.add(image, lm)

    def _combine_match(self, verdict: Verdict, request: SessionRequest) -> Verdict:
        from edge.match.session import combine

        try:
            return combine(verdict, self.match.decide())
        except Exception as err:  # fail secure
            log.error("session %d: match decision failed (%s)", request.session_id, type(err).__name__)
            return Verdict(VerdictKind.FAULT, Reason.INTERNAL_ERROR, verdict.frames_used, verdict.frames_seen,
                           verdict.elapsed_ms, verdict.session_id)

    @staticmethod
    def _prompt(sink: VerdictSink, request: SessionRequest, last: Prompt, new: Prompt) -> Prompt:
        if new is not last and new is not Prompt.NONE:
            try:
                sink.prompt(request, new)
            except Exception as err:  # a prompt is advice; losing one must not end the session
                log.warning("session %d: prompt delivery failed (%s)", request.session_id, type(err).__name__)
            return new
        return last

    def _elapsed_ms(self, t_start_ns: int) -> float:
        return (self._clock_ns() - t_start_ns) / 1e6

    def _end_session(self, camera: Camera, keep_open: bool) -> None:
        """Privacy: zero every buffer that held pixels or per-person scores."""
        self._last_faces = ()
        matcher = self.match.matcher if self.match is not None else None
        for stage in (self.detector, self.liveness, self.gate, self.landmarks, self.challenge, matcher, self.match):
            wipe = getattr(stage, "wipe", None)
            if wipe is not None:
                try:
                    wipe()
                except Exception as err:
                    log.error("wipe of %s failed (%s)", type(stage).__name__, type(err).__name__)
        self.decision.wipe()
        self._frame_scores.fill(0.0)
        if keep_open:
            wipe = getattr(camera, "wipe", None)
            if wipe is not None:
                wipe()
        else:
            try:
                camera.close()  # also zeroes the camera's frame buffers
            except Exception as err:
                log.error("camera close failed (%s)", type(err).__name__)

    def close(self) -> None:
        matcher = self.match.matcher if self.match is not None else None
        for stage in (self.detector, self.liveness, self.landmarks, matcher):
            if stage is not None:
                stage.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Runtime:
    """The main loop: wait on the trigger (camera closed), run a session, deliver, repeat."""

    def __init__(
        self,
        pipeline: Pipeline,
        camera_factory: Callable[[], Camera],
        trigger: Trigger,
        sink: VerdictSink,
        *,
        keep_warm: bool = False,
        shutdown: threading.Event | None = None,
        on_idle: Callable[[], None] | None = None,
        session_guard: Callable[[], object] | None = None,
        wait_s: float = 0.5,
        retry_attempts: int = 5,
    ):
        self.pipeline = pipeline
        self.camera_factory = camera_factory
        self.trigger = trigger
        self.sink = sink
        self.keep_warm = keep_warm
        self.shutdown = shutdown or threading.Event()
        pipeline.shutdown = self.shutdown
        self.on_idle = on_idle
        self.session_guard = session_guard
        self.wait_s = wait_s
        self.retry_attempts = retry_attempts
        self.current: SessionRequest | None = None
        self.sessions = 0
        self.faults = 0  # sessions that ended in FAULT for a reason other than shutdown or abort
        self._camera: Camera | None = None

    def run(self) -> int:
        try:
            while not self.shutdown.is_set():
                if self.on_idle is not None:
                    self.on_idle()
                request = self.trigger.wait(self.wait_s)
                if request is None:
                    if getattr(self.trigger, "exhausted", False):
                        break
                    continue
                self.run_one(request)
        except BaseException as err:
            # The loop itself broke: tell the controller now rather than after its heartbeat timeout.
            log.error("main loop failed (%s); telling the controller FAULT", type(err).__name__)
            self._fault(Reason.INTERNAL_ERROR)
            raise
        else:
            if self.shutdown.is_set():
                self._fault(Reason.SHUTDOWN)
        finally:
            if self._camera is not None:
                self._camera.close()
                self._camera = None
        return 0

    def _fault(self, reason: Reason) -> None:
        fault = getattr(self.sink, "fault", None)  # sinks with a controller behind them have one
        if fault is None:
            return
        try:
            fault(reason)
        except Exception as err:
            log.error("FAULT could not be delivered (%s)", type(err).__name__)

    def run_one(self, request: SessionRequest) -> SessionOutcome:
        self.current = request
        if self.shutdown.is_set():
            request.cancel.set()
        try:
            camera = self._camera or self.camera_factory()
            if self.keep_warm:
                self._camera = camera
            guard = self.session_guard() if self.session_guard is not None else contextlib.nullcontext()
            with guard:
                outcome = self.pipeline.run_session(camera, request, self.sink, keep_open=self.keep_warm, deliver=False)
        except Exception as err:
            # The camera spec itself failed (validated at start-up, so this is rare): still one FAULT.
            log.error("session %d could not start (%s)", request.session_id, type(err).__name__)
            outcome = SessionOutcome(Verdict(VerdictKind.FAULT, Reason.INTERNAL_ERROR, 0, 0, 0, request.session_id))
        # The sink writes to a serial port or stdout: outside the privacy guard, after the wipe.
        try:
            self.sink.result(request, outcome.verdict)
        except Exception as err:
            log.error("session %d: verdict delivery failed (%s)", request.session_id, type(err).__name__)
        self.sessions += 1
        if outcome.verdict.kind is VerdictKind.FAULT and outcome.verdict.reason not in (Reason.SHUTDOWN, Reason.ABORTED):
            self.faults += 1
        self.current = None
        camera_fault = outcome.verdict.reason in (Reason.CAMERA_LOST, Reason.CAMERA_OPEN_FAILED)
        # No next session (shutting down, or the trigger has given its last one): nothing to recover for.
        if camera_fault and not self.shutdown.is_set() and not getattr(self.trigger, "exhausted", False):
            self._recover_camera()
        return outcome

    def _refuse(self, request: SessionRequest, reason: Reason) -> None:
        """Answer a session that cannot run (camera in recovery) with FAULT at once."""
        log.warning("session %d refused: camera unavailable (recovering)", request.session_id)
        verdict = Verdict(VerdictKind.FAULT, reason, 0, 0, 0, request.session_id)
        try:
            self.sink.result(request, verdict)
        except Exception as err:
            log.error("session %d: verdict delivery failed (%s)", request.session_id, type(err).__name__)
        self.sessions += 1

    def _recover_camera(self) -> None:
        """After a camera fault, reopen it with backoff before the next session, then close it
        again: the camera stays closed between sessions, but the next trigger finds it working."""
        from edge.camera.retry import Backoff, reconnect

        if self._camera is not None:
            self._camera.close()
            self._camera = None

        def sleep(delay_s: float) -> None:
            # Wait in slices so the watchdog keeps being fed and SIGTERM is honoured at once,
            # and, for a controller link, wait ON THE TRIGGER: a session asked for now cannot be
            # served, so it is answered at once with FAULT(CAMERA_LOST), not failed at its deadline.
            end = time.monotonic() + delay_s
            while not self.shutdown.is_set():
                left = end - time.monotonic()
                if left <= 0:
                    return
                if self.on_idle is not None:
                    self.on_idle()
                if getattr(self.trigger, "answers_while_recovering", False):
                    request = self.trigger.wait(min(left, self.wait_s))
                    if request is not None:
                        self._refuse(request, Reason.CAMERA_LOST)
                else:  # a local trigger (always, GPIO) has nobody waiting on a deadline
                    self.shutdown.wait(min(left, self.wait_s))
            raise CameraError("shutting down")

        try:
            camera = reconnect(self.camera_factory, Backoff(attempts=self.retry_attempts), sleep=sleep)
        except CameraError as err:
            log.error("camera still unavailable: %s; the next session will report FAULT", err)
            return
        if self.keep_warm:
            self._camera = camera
        else:
            camera.close()
        log.info("camera recovered")


class _Scorer:
    """``edge eval``'s scorer: one session per item (an image is a one-frame session)."""

    def __init__(self, pipeline: Pipeline, *, score_to_end: bool = False):
        self.pipeline = pipeline
        self.score_to_end = score_to_end  # every frame of a clip scored (fusion comparisons)

    def __call__(self, path):
        from edge.camera import open_camera
        from edge.eval.report import ItemResult

        # A bare path is an image, a video, or a folder of frames (one session): the spec
        # grammar's own rule, the same kinds edge.eval.dataset accepts.
        out = self.pipeline.run_session(open_camera(str(path)), keep_scores=True, score_to_end=self.score_to_end)
        return ItemResult(
            score=out.score,
            verdict=out.verdict.kind.value,
            frames=out.verdict.frames_seen,
            frame_scores=out.frame_scores,
        )

    def close(self) -> None:
        self.pipeline.close()


def make_scorer(config, *, score_to_end: bool = False) -> _Scorer:
    """A scorer for :mod:`edge.eval` on the configured models, quality gate and decision
    (``score_to_end``: score every frame of a clip, not only those up to the verdict)."""
    from edge.assemble import build_pipeline

    # The passive models' own figures: the challenge is evaluated by `edge eval --active`.
    return _Scorer(build_pipeline(config, mode="passive"), score_to_end=score_to_end)
