"""The quality gate a frame passes before it may vote.

A frame votes only when it shows exactly one usable face: large enough for the
liveness crop to carry real texture, inside the frame, roughly frontal, lit and
sharp. Each failed check has a :class:`~edge.types.Reason` and a
:class:`~edge.types.Prompt` the terminal can show. All checks are evaluated
(``QualityResult.failures`` lists every one that failed, for statistics); the
reported reason is the first in this order, the order in which a person can fix
them: face count, size, position, pose, exposure, blur (a dark face also has
little Laplacian energy, so "more light" is the useful prompt, not "hold still").

Thresholds come from the models and physics rather than from any dev set:

* size: MiniFASNetV2 sees a 2.7x face crop at 80x80, i.e. the face at about
  80/2.7 ~ 30 px. A face smaller than ``min_face_px`` in the frame is upsampled
  by the crop, so its print/screen texture is gone. ``min_face_fraction`` /
  ``max_face_fraction`` bound the face width relative to the frame width:
  at close range the crop cannot hold the 2.7x/4x context the models were
  trained with (the edge of a photo or screen), and the face leaves the frame.
* position: the box centre must lie ``centre_margin`` (fraction of the frame
  size) inside every edge, and ``min_inside_fraction`` of the box area must be
  inside the frame (the crop of a cut-off face is padded/shifted, unlike training).
* pose from BlazeFace's six keypoints (right eye, left eye, nose tip, mouth,
  right ear tragion, left ear tragion). Along the eye axis the nose tip's offset
  from the eyes' midpoint, over the inter-eye distance, is
  ``(p / IPD) * tan(yaw)`` with ``p`` the nose tip's depth in front of the eyes
  and IPD the inter-pupil distance; anthropometry gives ``p / IPD ~ 0.4``
  (``NOSE_DEPTH_PER_EYE_DISTANCE``). With degenerate eyes the ears are used the
  same way (tragion depth behind the nose tip / bitragion width ~ 0.7). Across
  the eye axis, the nose's position between the eye line and the mouth is
  ``r ~ r0 - q * tan(pitch)`` with ``q ~ 0.23`` (nose protrusion, net of the
  lips', over the eye-mouth distance) and ``r0 ~ 0.55`` (neutral; anthropometry
  puts the nose tip at 0.55-0.6 of the way from the pupils to the mouth, and
  BlazeFace's mouth point, the lip centre, sits lower when the mouth opens).
  This is the weakest of the estimates: a few degrees of bias are expected,
  and the slope ``q`` is uncertain by up to a factor of two, so the default
  pitch limit (40 deg) only catches gross tilts.
  Positive pitch = chin up; positive yaw = nose towards the person's left eye.
  Without keypoints the pose check is skipped (measures are NaN). When the
  landmark stage has run on the frame (active mode), ``assess(...,
  landmarks=...)`` uses its head pose instead (a Procrustes fit of the
  478-point mesh to MediaPipe's canonical face, same sign conventions), which
  is far better than the keypoint ratios, for pitch above all; the measures
  say which was used (``pose_source``).
* blur: variance of the Laplacian of the face resized to 64x64 grey, so a
  face's sharpness does not depend on its size in pixels. 64 px is about twice
  the face size the 2.7x model sees, so blur that survives at 64 px reaches
  the model. The threshold is in grey levels squared.
* exposure: mean grey level of the face and the fraction of face pixels at the
  sensor's ends (<= ``DARK_LEVEL`` or >= ``BRIGHT_LEVEL``): a clipped pixel
  carries no texture, whatever the model. Specular highlights on forehead,
  nose and cheeks are normal under indoor light, so the default only refuses
  a face that is mostly clipped (``max_clipped_fraction`` 0.5).

No screen/moire check: the dev set holds print attacks only, so its benefit
cannot be measured here; ``Reason.SCREEN_PATTERN`` stays unused.

Per frame the gate allocates no image-sized array: the face is resized straight
from a view of the frame into buffers made once in :class:`QualityGate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

import cv2
import numpy as np

from edge.types import FaceBox, Prompt, Reason

if TYPE_CHECKING:  # the landmark stage is optional; the gate never imports it at run time
    from edge.landmarks.base import FaceLandmarks

FACE_SIZE = 64  # side of the grey face buffer the blur and exposure checks run on
DARK_LEVEL = 5  # grey levels at or below: crushed to black
BRIGHT_LEVEL = 250  # at or above: saturated
NOSE_DEPTH_PER_EYE_DISTANCE = 0.4
NOSE_DEPTH_PER_EAR_DISTANCE = 0.7
PITCH_NEUTRAL_RATIO = 0.55
PITCH_SLOPE = 0.23

PROMPTS = {
    Reason.NONE: Prompt.NONE,
    Reason.NO_FACE_FOUND: Prompt.LOOK_AT_CAMERA,
    Reason.MULTIPLE_FACES: Prompt.ONE_PERSON_ONLY,
    Reason.FACE_TOO_SMALL: Prompt.MOVE_CLOSER,
    Reason.FACE_TOO_LARGE: Prompt.MOVE_BACK,
    Reason.FACE_NOT_CENTRED: Prompt.CENTRE_FACE,
    Reason.FACE_TURNED: Prompt.FACE_CAMERA,
    Reason.BLURRY: Prompt.HOLD_STILL,
    Reason.TOO_DARK: Prompt.MORE_LIGHT,
    Reason.TOO_BRIGHT: Prompt.LESS_LIGHT,
}


@dataclass(frozen=True)
class QualityConfig:
    """Quality gate thresholds. Names match the ``[quality]`` config section."""

    second_face_min_score: float = 0.75  # another detection counts as a face only above this score
    second_face_min_ratio: float = 0.5  # ... and at least this fraction of the main face's width
    min_face_fraction: float = 0.12  # face width / frame width
    max_face_fraction: float = 0.9
    min_face_px: float = 32.0  # face width in pixels (see module doc: ~80/2.7)
    centre_margin: float = 0.15  # box centre at least this fraction of the frame inside every edge
    min_inside_fraction: float = 0.85  # of the box area inside the frame
    max_yaw_deg: float = 35.0
    max_pitch_deg: float = 40.0  # the pitch estimate's slope is uncertain by up to 2x: only gross tilts
    max_roll_deg: float = 35.0
    min_sharpness: float = 15.0  # variance of the Laplacian on the 64x64 grey face
    min_brightness: float = 40.0  # mean grey level of the face
    max_brightness: float = 220.0
    max_clipped_fraction: float = 0.5  # of face pixels crushed (-> too dark) or saturated (-> too bright)

    @classmethod
    def from_config(cls, section) -> "QualityConfig":
        """From the validated ``[quality]`` config section: every field it has, defaults for the rest."""
        from dataclasses import fields

        return cls(**{f.name: getattr(section, f.name) for f in fields(cls) if hasattr(section, f.name)})

    def __post_init__(self) -> None:
        # Programming errors only; user input is validated with key names in edge.config.
        for name in ("second_face_min_score", "second_face_min_ratio", "min_face_fraction",
                     "centre_margin", "min_inside_fraction", "max_clipped_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"QualityConfig.{name} must be within [0, 1]")
        if not 0.0 < self.max_face_fraction or self.min_face_fraction >= self.max_face_fraction:
            raise ValueError("QualityConfig needs 0 <= min_face_fraction < max_face_fraction")
        if not 0.0 <= self.centre_margin < 0.5:
            raise ValueError("QualityConfig.centre_margin must be within [0, 0.5)")
        if self.min_brightness >= self.max_brightness:
            raise ValueError("QualityConfig needs min_brightness < max_brightness")
        for name in ("max_yaw_deg", "max_pitch_deg", "max_roll_deg"):
            if not 0.0 <= getattr(self, name) <= 90.0:
                raise ValueError(f"QualityConfig.{name} must be within [0, 90]")
        if self.min_sharpness < 0 or self.min_face_px < 0:
            raise ValueError("QualityConfig.min_sharpness and min_face_px must be >= 0")


@dataclass(frozen=True)
class QualityMeasures:
    """What the gate measured (NaN where not measurable). Not personal data, but do not log per person."""

    faces: int = 0  # faces that count (see second_face_*)
    face_fraction: float = math.nan  # face width / frame width
    face_px: float = math.nan
    centre_x: float = math.nan  # box centre / frame size, 0..1
    centre_y: float = math.nan
    inside_fraction: float = math.nan
    yaw_deg: float = math.nan
    pitch_deg: float = math.nan
    roll_deg: float = math.nan
    sharpness: float = math.nan
    brightness: float = math.nan
    dark_fraction: float = math.nan
    bright_fraction: float = math.nan
    pose_source: str = "keypoints"  # or "mesh" when the landmark stage's pose was used


@dataclass(frozen=True)
class QualityResult:
    ok: bool
    reason: Reason
    prompt: Prompt
    measures: QualityMeasures
    failures: tuple[Reason, ...] = ()
    face: FaceBox | None = field(default=None, repr=False)  # the face that was assessed


def count_faces(faces: Sequence[FaceBox], cfg: QualityConfig) -> tuple[FaceBox | None, int]:
    """The main (largest) face and how many faces count.

    Besides the main face, a detection counts when its score is at least
    ``second_face_min_score`` and its width at least ``second_face_min_ratio``
    of the main face's: a weak or tiny extra detection is detector noise or a
    distant passer-by; anything else is a second person (or a photo held up)
    and the frame does not vote.
    """
    if not faces:
        return None, 0
    main = max(faces, key=lambda f: f.area)
    n = 1
    for f in faces:
        if f is main:
            continue
        if f.score >= cfg.second_face_min_score and f.w >= cfg.second_face_min_ratio * main.w:
            n += 1
    return main, n


def estimate_pose(keypoints: Sequence[tuple[float, float]]) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from BlazeFace's six keypoints; NaN when not estimable."""
    if len(keypoints) < 4:
        return math.nan, math.nan, math.nan
    kp = [(float(x), float(y)) for x, y in keypoints[:6]]
    (rex, rey), (lex, ley), (nx, ny), (mx, my) = kp[:4]
    ex, ey = lex - rex, ley - rey
    d_eye = math.hypot(ex, ey)
    yaw = pitch = roll = math.nan
    if d_eye >= 1.0:
        ux, uy = ex / d_eye, ey / d_eye
        midx, midy = (rex + lex) / 2.0, (rey + ley) / 2.0
        off = ((nx - midx) * ux + (ny - midy) * uy) / d_eye
        yaw = math.degrees(math.atan(off / NOSE_DEPTH_PER_EYE_DISTANCE))
        # roll: the eye line's angle, folded into [-90, 90] so a mirrored frame reads the same
        roll = math.degrees(math.atan2(ey, ex))
        if roll > 90.0:
            roll -= 180.0
        elif roll < -90.0:
            roll += 180.0
        # "down" across the eye axis, oriented towards the mouth (robust to mirroring)
        vx, vy = -uy, ux
        mouth_down = (mx - midx) * vx + (my - midy) * vy
        if mouth_down < 0:
            vx, vy, mouth_down = -vx, -vy, -mouth_down
        if mouth_down >= 1.0:
            r = ((nx - midx) * vx + (ny - midy) * vy) / mouth_down
            pitch = math.degrees(math.atan((PITCH_NEUTRAL_RATIO - r) / PITCH_SLOPE))
    elif len(kp) >= 6:
        (rx, ry), (lx, ly) = kp[4], kp[5]
        ex, ey = lx - rx, ly - ry
        d_ear = math.hypot(ex, ey)
        if d_ear >= 1.0:
            off = ((nx - (rx + lx) / 2.0) * ex + (ny - (ry + ly) / 2.0) * ey) / (d_ear * d_ear)
            yaw = math.degrees(math.atan(off / NOSE_DEPTH_PER_EAR_DISTANCE))
    return yaw, pitch, roll


class QualityGate:
    """Assess frames against a :class:`QualityConfig`, reusing fixed-size buffers.

    Not thread-safe (one gate per pipeline thread). ``wipe()`` zeroes the face
    buffers; ``close()`` wipes and is idempotent.
    """

    def __init__(self, cfg: QualityConfig | None = None):
        self.cfg = cfg or QualityConfig()
        self._bgr = np.zeros((FACE_SIZE, FACE_SIZE, 3), dtype=np.uint8)
        self._grey = np.zeros((FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        self._lap = np.zeros((FACE_SIZE, FACE_SIZE), dtype=np.float32)
        self._hist = np.zeros((256, 1), dtype=np.float32)

    def wipe(self) -> None:
        for buf in (self._bgr, self._grey, self._lap, self._hist):
            buf.fill(0)

    def close(self) -> None:
        self.wipe()

    def __enter__(self) -> "QualityGate":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _face_stats(self, image: np.ndarray, face: FaceBox) -> tuple[float, float, float, float]:
        """(sharpness, brightness, dark fraction, bright fraction) of the face; NaN if too little is visible."""
        h, w = image.shape[:2]
        x0, y0 = max(int(math.floor(face.x)), 0), max(int(math.floor(face.y)), 0)
        x1, y1 = min(int(math.ceil(face.x + face.w)), w), min(int(math.ceil(face.y + face.h)), h)
        if x1 - x0 < 4 or y1 - y0 < 4:
            return math.nan, math.nan, math.nan, math.nan
        # INTER_AREA averages when shrinking (no aliasing), interpolates when enlarging.
        cv2.resize(image[y0:y1, x0:x1], (FACE_SIZE, FACE_SIZE), dst=self._bgr, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._bgr, cv2.COLOR_BGR2GRAY, dst=self._grey)
        cv2.Laplacian(self._grey, cv2.CV_32F, dst=self._lap, ksize=1)
        _, std = cv2.meanStdDev(self._lap)
        cv2.calcHist([self._grey], [0], None, [256], [0, 256], hist=self._hist)
        n = float(FACE_SIZE * FACE_SIZE)
        hist = self._hist[:, 0]
        mean = float(np.dot(hist, np.arange(256, dtype=np.float32))) / n
        dark = float(hist[: DARK_LEVEL + 1].sum()) / n
        bright = float(hist[BRIGHT_LEVEL:].sum()) / n
        return float(std[0, 0]) ** 2, mean, dark, bright

    def assess(
        self, image: np.ndarray, faces: Sequence[FaceBox], landmarks: "FaceLandmarks | None" = None
    ) -> QualityResult:
        """Check one BGR frame and its detected faces. ``landmarks`` (optional): the mesh of the
        main face in this frame; its pose replaces the keypoint estimate when it belongs to the
        assessed face (box overlap >= 0.5)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"quality gate expects an HxWx3 uint8 BGR image, got {getattr(image, 'shape', type(image))} "
                f"{getattr(image, 'dtype', '')}"
            )
        cfg = self.cfg
        main, n = count_faces(faces, cfg)
        if main is None:
            return _result(QualityMeasures(faces=0), [Reason.NO_FACE_FOUND], None)
        if n > 1:
            return _result(QualityMeasures(faces=n), [Reason.MULTIPLE_FACES], main)

        h, w = image.shape[:2]
        failures: list[Reason] = []
        frac = main.w / w
        if frac < cfg.min_face_fraction or main.w < cfg.min_face_px:
            failures.append(Reason.FACE_TOO_SMALL)
        elif frac > cfg.max_face_fraction:
            failures.append(Reason.FACE_TOO_LARGE)

        cx, cy = main.cx / w, main.cy / h
        ix = max(0.0, min(main.x + main.w, w) - max(main.x, 0.0))
        iy = max(0.0, min(main.y + main.h, h) - max(main.y, 0.0))
        inside = (ix * iy) / main.area if main.area > 0 else 0.0
        m = cfg.centre_margin
        if not (m <= cx <= 1.0 - m and m <= cy <= 1.0 - m) or inside < cfg.min_inside_fraction:
            failures.append(Reason.FACE_NOT_CENTRED)

        if landmarks is not None and landmarks.box.iou(main) >= 0.5:
            yaw, pitch, roll = landmarks.yaw_deg, landmarks.pitch_deg, landmarks.roll_deg
            pose_source = "mesh"
        else:
            yaw, pitch, roll = estimate_pose(main.keypoints)
            pose_source = "keypoints"
        # NaN compares false: an unmeasurable angle does not fail the check
        if abs(yaw) > cfg.max_yaw_deg or abs(pitch) > cfg.max_pitch_deg or abs(roll) > cfg.max_roll_deg:
            failures.append(Reason.FACE_TURNED)

        sharp, bright_mean, dark_frac, bright_frac = self._face_stats(image, main)
        if bright_mean < cfg.min_brightness or dark_frac > cfg.max_clipped_fraction:
            failures.append(Reason.TOO_DARK)
        elif bright_mean > cfg.max_brightness or bright_frac > cfg.max_clipped_fraction:
            failures.append(Reason.TOO_BRIGHT)
        if sharp < cfg.min_sharpness:
            failures.append(Reason.BLURRY)

        measures = QualityMeasures(
            faces=1,
            face_fraction=frac,
            face_px=float(main.w),
            centre_x=cx,
            centre_y=cy,
            inside_fraction=inside,
            yaw_deg=yaw,
            pitch_deg=pitch,
            roll_deg=roll,
            sharpness=sharp,
            brightness=bright_mean,
            dark_fraction=dark_frac,
            bright_fraction=bright_frac,
            pose_source=pose_source,
        )
        return _result(measures, failures, main)


def _result(measures: QualityMeasures, failures: list[Reason], face: FaceBox | None) -> QualityResult:
    if not failures:
        return QualityResult(True, Reason.NONE, Prompt.NONE, measures, (), face)
    reason = failures[0]
    return QualityResult(False, reason, PROMPTS[reason], measures, tuple(failures), face)


def assess(
    image: np.ndarray,
    faces: Sequence[FaceBox],
    cfg: QualityConfig | None = None,
    landmarks: "FaceLandmarks | None" = None,
) -> QualityResult:
    """One-off check (allocates its buffers; use a :class:`QualityGate` per frame stream)."""
    return QualityGate(cfg).assess(image, faces, landmarks=landmarks)
