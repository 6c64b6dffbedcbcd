"""Build the runtime's parts from a validated :class:`~edge.config.Config`.

Order matters for a gate: the whole config is validated first (edge.config),
then the models are verified against their manifests and loaded, then the
camera spec is parsed (no device touched), then the controller link opens.
Only a session opens the camera.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from contextlib import ExitStack
from pathlib import Path

from edge.config import Config
from edge.decision import DecisionConfig
from edge.errors import ConfigError, ModelError

log = logging.getLogger(__name__)


def _models_dir(cfg: Config):
    if cfg.models.dir:
        path = Path(cfg.models.dir).expanduser()
        try:
            is_dir = path.is_dir()
        except OSError as err:  # ENAMETOOLONG and the like
            raise ConfigError("models.dir", cfg.models.dir, f"a folder ({err.strerror})") from err
        if not is_dir:
            what = "a file" if path.exists() else "missing"
            raise ConfigError("models.dir", cfg.models.dir,
                              f"the folder holding the model manifests (*.toml) and build/; this path is {what}")
        os.environ["EDGE_MODELS_DIR"] = str(path.resolve())


def decision_config(cfg: Config) -> DecisionConfig:
    # The [decision] section declares exactly DecisionConfig's fields.
    return DecisionConfig(**{f.name: getattr(cfg.decision, f.name) for f in dataclasses.fields(DecisionConfig)})


def challenge_config(cfg: Config):
    """The challenge engine's thresholds: the [challenge] keys that name ChallengeConfig fields
    (all but depth_threshold, which is the 3-D check's), with the passive votes judged by the
    [decision] section's threshold and vote counts and its deadlines."""
    from edge.challenge import ChallengeConfig

    c, d = cfg.challenge, cfg.decision
    fields = {f.name for f in dataclasses.fields(ChallengeConfig)}
    kw = {name: value for name, value in dataclasses.asdict(c).items() if name in fields}
    kw.update(actions=tuple(c.actions), no_face_ms=d.no_face_ms, baseline_timeout_ms=d.timeout_ms,
              threshold=d.threshold, min_votes=d.pass_votes, fail_votes=d.fail_votes)
    return ChallengeConfig(**kw)


def model_path(cfg: Config, name: str) -> Path:
    """The verified file to load for model ``name``.

    On the CPU that is the manifest's artifact for ``models.variant``. On a Coral it is the
    int8 artifact compiled by Coral's ``edgetpu_compiler`` (``<stem>_edgetpu.tflite`` beside
    it): a plain int8 file would load and run on the CPU, a silent fallback a gate must not have.
    """
    from edge.errors import ModelMissingError
    from edge.models import registry

    if cfg.models.accelerator != "edgetpu":
        return registry.artifact_path(name, cfg.models.variant)
    source = registry.artifact_path(name, "int8")  # the compiler's input, checked against its manifest
    compiled = source.with_name(source.stem + "_edgetpu.tflite")
    if not compiled.is_file():
        raise ModelMissingError(
            f"model {name} is not compiled for the Edge TPU: {compiled} is missing. "
            f"Compile it with Coral's compiler: edgetpu_compiler -o {source.parent} {source}"
        )
    if b"edgetpu-custom-op" not in compiled.read_bytes():
        raise ModelError(f"{compiled} holds no Edge TPU op: recompile it with edgetpu_compiler -o {source.parent} {source}")
    log.warning("%s: compiled on this device by edgetpu_compiler; its int8 source is verified, its own hash is not pinned", compiled)
    return compiled


def liveness_specs(cfg: Config):
    from edge.liveness.minifasnet import LivenessModelSpec
    from edge.models import registry

    specs = []
    for name in cfg.models.liveness:
        m = registry.load_manifest(name)
        if m.kind != "liveness":
            raise ConfigError("models.liveness", name, f"a liveness model (the manifest of {name!r} says {m.kind!r})")
        specs.append(
            LivenessModelSpec(
                name=name,
                path=model_path(cfg, name),
                crop_scale=float(m.input.crop_scale),
                input_width=m.input.width,
                input_height=m.input.height,
                colour=m.input.colour,
                pixel_scale=m.input.scale,
                pixel_offset=m.input.offset,
                live_index=int(m.output.live_index),
            )
        )
    return specs


def build_gate(cfg: Config):
    from edge.pipeline import SimpleGate
    from edge.quality import QualityConfig, QualityGate

    q = QualityConfig.from_config(cfg.quality)
    return QualityGate(q) if cfg.quality.enabled else SimpleGate(q)


def build_landmarks(cfg: Config):
    """The face-mesh stage (mesh, pose, blendshapes) for the active challenge."""
    from edge.landmarks.mesh import MeshLandmarker

    if cfg.models.accelerator == "edgetpu":
        # The mesh has no Edge TPU build: it runs on the CPU beside the TPU models (said, not silent).
        log.warning("the face mesh runs on the CPU: it has no Edge TPU build")
    return MeshLandmarker.from_registry("float32", threads=cfg.models.threads)


def build_pipeline(cfg: Config, *, on_progress=None, mode: str | None = None):
    """Load and verify the models and return a ready :class:`~edge.pipeline.Pipeline`
    (``mode`` overrides ``liveness.mode``: ``edge eval`` scores the passive models alone)."""
    from edge.detect.blazeface import BlazeFaceDetector, BlazeFaceOptions
    from edge.liveness.minifasnet import MiniFASNetEnsemble
    from edge.models import registry
    from edge.pipeline import Pipeline

    _models_dir(cfg)
    edgetpu = cfg.models.accelerator == "edgetpu"
    det_manifest = registry.load_manifest(cfg.models.detector)
    if det_manifest.kind != "detector":
        raise ConfigError("models.detector", cfg.models.detector, f"a detector model (manifest says {det_manifest.kind!r})")
    detector = BlazeFaceDetector(
        model_path(cfg, cfg.models.detector),
        BlazeFaceOptions(
            min_score=cfg.detector.min_score,
            iou_threshold=cfg.detector.iou_threshold,
            max_faces=cfg.detector.max_faces,
            threads=cfg.models.threads,
            edgetpu=edgetpu,
        ),
    )
    try:
        liveness = MiniFASNetEnsemble(
            liveness_specs(cfg),
            threads=cfg.models.threads,
            edgetpu=edgetpu,
            round_robin=cfg.models.liveness_schedule == "round_robin",
        )
    except BaseException:
        detector.close()
        raise
    mode = mode or cfg.liveness.mode
    landmarks = depth = match = None
    try:
        if mode != "passive":
            from edge.liveness.depth import DepthCheck

            landmarks = build_landmarks(cfg)
            depth = DepthCheck(cfg.challenge.depth_threshold)
        landmarks, match = build_match(cfg, landmarks)
    except BaseException:
        detector.close()
        liveness.close()
        if landmarks is not None:
            landmarks.close()
        raise
    return Pipeline(
        detector,
        liveness,
        decision_config(cfg),
        build_gate(cfg),
        every_n_frames=cfg.detector.every_n_frames,
        read_timeout_s=cfg.camera.read_timeout_s,
        on_progress=on_progress,
        mode=mode,
        landmarks=landmarks,
        challenge=challenge_config(cfg) if mode != "passive" else None,
        depth=depth,
        step_up_band=(cfg.liveness.step_up_low, cfg.liveness.step_up_high),
        match=match,
    )


def build_match(cfg: Config, landmarks=None):
    """(face mesh, MatchSession) when ``[match] enabled``, else (``landmarks``, None). The mesh of
    the active challenge (``landmarks``) serves the match too; without one a mesh without
    blendshapes is loaded. The descriptor model is an optional feature: a missing build says
    how to make it (edge models build --with face-match)."""
    if not cfg.match.enabled:
        return landmarks, None
    from edge.landmarks.mesh import MeshLandmarker
    from edge.match.session import MatchConfig, MatchSession, MeshMatcher

    mc = MatchConfig(threshold=cfg.match.threshold, frames=cfg.match.frames, rule=cfg.match.rule,
                     max_runs=cfg.match.max_runs)
    own = landmarks is None
    if own:
        landmarks = MeshLandmarker.from_registry("float32", threads=cfg.models.threads, blendshapes=False)
    try:
        matcher = MeshMatcher.from_registry(cfg.match.variant, threads=cfg.models.threads)
    except BaseException:
        if own:
            landmarks.close()
        raise
    return landmarks, MatchSession(matcher, mc)


class RuntimeHandle:
    """A Runtime with everything it opened, closed in reverse order on exit."""

    def __init__(self, runtime, stack: ExitStack):
        self.runtime = runtime
        self._stack = stack

    @property
    def current(self):
        return self.runtime.current

    def run(self) -> int:
        return self.runtime.run()

    def close(self) -> None:
        self._stack.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def build_runtime(cfg: Config, *, service: bool = False, shutdown: threading.Event | None = None) -> RuntimeHandle:
    """Everything ``edge run`` needs, in fail-fast order; ``service`` adds the privacy
    guard, in-process hardening and sd_notify (READY, watchdog, STOPPING)."""
    from edge.bridge.factory import open_bridge
    from edge.camera import open_camera
    from edge.pipeline import Runtime
    from edge.service.notify import Watchdog, notify

    shutdown = shutdown or threading.Event()
    stack = ExitStack()
    try:
        guard_factory = None
        if service:
            from edge.service import guard, harden

            report = harden.harden_process(mlock=cfg.service.mlock)
            for warning in getattr(report, "warnings", ()):
                log.warning("hardening: %s", warning)
            if cfg.service.guard:
                guard.install()
                guard_factory = guard.session_guard
        watchdog = Watchdog.from_env() if (service and cfg.service.watchdog) else None
        if watchdog is not None and watchdog.enabled:
            watchdog.start()
            stack.callback(watchdog.stop)
        kick = watchdog.kick if watchdog is not None and watchdog.enabled else None
        def camera_factory():
            return open_camera(cfg.camera.source, max_repeats=cfg.camera.freeze_frames, stall_s=cfg.camera.freeze_s)

        camera_factory()  # parse the spec now: a typo fails at start-up, not at the first session
        pipeline = stack.enter_context(build_pipeline(cfg, on_progress=kick))
        trigger, sink = open_bridge(bridge_config(cfg), keepalive=kick)
        stack.callback(trigger.close)
        stack.callback(sink.close)
        wait_s = watchdog.max_block_s(0.5) if watchdog is not None else 0.5
        runtime = Runtime(
            pipeline,
            camera_factory,
            trigger,
            sink,
            keep_warm=cfg.camera.keep_warm,
            shutdown=shutdown,
            on_idle=kick,
            session_guard=guard_factory,
            wait_s=wait_s,
            retry_attempts=cfg.camera.retry_attempts,
        )
        if service:
            notify("READY=1", "STATUS=waiting for a trigger")
            stack.callback(notify, "STOPPING=1")
        return RuntimeHandle(runtime, stack)
    except BaseException:
        stack.close()
        raise


def bridge_config(cfg: Config):
    from edge.bridge.factory import BridgeConfig

    return BridgeConfig.from_config(cfg)
