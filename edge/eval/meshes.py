"""Per-frame face meshes of a clip or image, computed once and held in memory.

The active-liveness evaluations replay the challenge engine and the 3-D check
many times on the same recordings; running the detector and the mesh model is
the expensive part, so each recording is measured once into a
:class:`MeshSeries` (plain arrays) and replayed from there. Nothing is written
to disk: meshes are biometric data, and the evaluation holds them only for the
length of the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

import cv2
import numpy as np

from edge.landmarks.base import N_BLENDSHAPES, N_POINTS, FaceLandmarks
from edge.quality import count_faces
from edge.types import FaceBox, Reason

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class MeshSeries:
    """The face mesh of every frame of one recording (``present[i]`` False: no face or no mesh).

    ``points`` (F, 478, 3) float32 image pixels; ``pose`` (F, 3) yaw, pitch, roll in degrees;
    ``blendshapes`` (F, 52); ``face_size`` (F,) px; ``boxes`` (F, 4) x, y, w, h; ``faces`` (F,)
    the number of faces that count (a second face fails an active session).
    """

    name: str
    fps: float
    present: np.ndarray = field(repr=False)
    points: np.ndarray = field(repr=False)
    pose: np.ndarray = field(repr=False)
    blendshapes: np.ndarray = field(repr=False)
    face_size: np.ndarray = field(repr=False)
    presence: np.ndarray = field(repr=False)
    boxes: np.ndarray = field(repr=False)
    faces: np.ndarray = field(repr=False)
    score: np.ndarray = field(repr=False)  # passive live score, NaN when the frame did not vote
    reason: np.ndarray = field(repr=False)  # the gate's Reason code when it did not

    def __len__(self) -> int:
        return int(self.present.shape[0])

    @property
    def yaw(self) -> np.ndarray:
        return self.pose[:, 0]

    @property
    def pitch(self) -> np.ndarray:
        return self.pose[:, 1]

    @property
    def roll(self) -> np.ndarray:
        return self.pose[:, 2]

    def box(self, i: int) -> FaceBox | None:
        """The detector's box of the main face in frame ``i`` (None where none was recorded)."""
        x, y, w, h = (float(v) for v in self.boxes[i])
        return FaceBox(x, y, w, h, 1.0) if w > 0 and h > 0 else None

    def landmarks(self, i: int) -> FaceLandmarks | None:
        """Frame ``i`` as the landmark stage would have returned it (arrays are views)."""
        if not self.present[i]:
            return None
        x, y, w, h = (float(v) for v in self.boxes[i])
        return FaceLandmarks(
            points_px=self.points[i], blendshapes=self.blendshapes[i], presence=float(self.presence[i]),
            yaw_deg=float(self.pose[i, 0]), pitch_deg=float(self.pose[i, 1]), roll_deg=float(self.pose[i, 2]),
            face_size_px=float(self.face_size[i]), box=FaceBox(x, y, w, h, 1.0),
        )

    @classmethod
    def empty(cls, name: str, n: int, fps: float) -> "MeshSeries":
        return cls(name=name, fps=fps, present=np.zeros(n, bool), points=np.zeros((n, N_POINTS, 3), np.float32),
                   pose=np.zeros((n, 3), np.float32), blendshapes=np.zeros((n, N_BLENDSHAPES), np.float32),
                   face_size=np.zeros(n, np.float32), presence=np.zeros(n, np.float32),
                   boxes=np.zeros((n, 4), np.float32), faces=np.zeros(n, np.int16),
                   score=np.full(n, np.nan, np.float32), reason=np.zeros(n, np.int16))

    def wipe(self) -> None:
        for a in (self.present, self.points, self.pose, self.blendshapes, self.face_size, self.presence,
                  self.boxes, self.faces, self.score, self.reason):
            a.fill(0)


class Measured(NamedTuple):
    """One frame as the active pipeline sees it."""

    landmarks: FaceLandmarks | None  # the main face's mesh (borrowed), None without one counted face
    faces: int  # faces that count (edge.quality.count_faces)
    score: float | None  # the passive live score when the quality gate let the frame vote
    reason: Reason  # the gate's refusal when it did not
    box: FaceBox | None = None  # the detector's box of the main face (also when the mesh found none)


class Measurer:
    """The active pipeline's per-frame stages on single images: detector, face count, mesh of the
    main face, and (when ``gate`` and ``liveness`` are given) the quality gate and passive score.
    The detector runs on every frame (the runtime may skip frames: ``detector.every_n_frames``)."""

    def __init__(self, detector, landmarker, gate=None, liveness=None, gate_config=None):
        self.detector = detector
        self.landmarker = landmarker
        self.gate = gate
        self.liveness = liveness
        self.gate_config = gate_config

    @classmethod
    def from_pipeline(cls, pipeline) -> "Measurer":
        return cls(pipeline.detector, pipeline.landmarks, pipeline.gate, pipeline.liveness,
                   getattr(pipeline, "_gate_config", None))

    def __call__(self, image: np.ndarray, near: tuple[float, float] | None = None) -> Measured:
        """With ``near``, the face whose centre is nearest that point is the main face."""
        faces = self.detector.detect(image)
        if not faces:
            return Measured(None, 0, None, Reason.NO_FACE_FOUND)
        if near is None and self.gate_config is not None:
            main, n = count_faces(faces, self.gate_config)
        elif near is None:
            main, n = max(faces, key=lambda f: f.area), len(faces)
        else:
            main = min(faces, key=lambda f: (f.cx - near[0]) ** 2 + (f.cy - near[1]) ** 2)
            n = 1
        lm = self.landmarker.estimate(image, main) if (main is not None and n == 1) else None
        score, reason = None, Reason.NONE
        if self.gate is not None and self.liveness is not None:
            g = self.gate.assess(image, faces, landmarks=lm) if lm is not None else self.gate.assess(image, faces)
            if g.ok:
                score = float(self.liveness.score(image, g.face).live)
            else:
                reason = g.reason
        return Measured(lm, n, score, reason, main)

    def close(self) -> None:
        for stage in (self.landmarker, self.liveness, self.detector):
            close = getattr(stage, "close", None)
            if callable(close):
                close()


def read_frames(path: str | Path) -> Iterator[np.ndarray]:
    """Decoded BGR frames of a video, GIF or single image."""
    p = Path(path)
    if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise OSError(f"cannot read image {p}")
        yield img
        return
    cap = cv2.VideoCapture(str(p))
    if not cap.isOpened():
        raise OSError(f"cannot open video {p}")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


def measure_series(name: str, frames: Iterable[np.ndarray], n: int, fps: float,
                   measure: Callable[[np.ndarray], "Measured"]) -> MeshSeries:
    """Measure up to ``n`` frames into a new :class:`MeshSeries` (fewer decoded frames: the rest stay absent)."""
    s = MeshSeries.empty(name, n, fps)
    count = 0
    for i, frame in enumerate(frames):
        if i >= n:
            break
        count += 1
        m = measure(frame)
        lm, nfaces, score, reason = m[:4]
        s.faces[i] = nfaces
        s.score[i] = np.nan if score is None else score
        s.reason[i] = int(reason)
        box = m.box if isinstance(m, Measured) else None
        if box is not None:
            s.boxes[i] = (box.x, box.y, box.w, box.h)
        if lm is None:
            continue
        s.present[i] = True
        s.points[i] = lm.points_px
        s.pose[i] = (lm.yaw_deg, lm.pitch_deg, lm.roll_deg)
        s.blendshapes[i] = lm.blendshapes
        s.face_size[i] = lm.face_size_px
        s.presence[i] = lm.presence
        s.boxes[i] = (lm.box.x, lm.box.y, lm.box.w, lm.box.h)
    if count < n:
        log.warning("%s: decoded %d of %d frames", name, count, n)
    return s


def default_measurer(config=None) -> Measurer:
    """The configured active pipeline's stages (detector, mesh, quality gate, passive models)."""
    from edge import config as cfgmod
    from edge.assemble import build_pipeline

    cfg = config if config is not None else cfgmod.load(None)
    return Measurer.from_pipeline(build_pipeline(cfg, mode="active"))
