"""The 3-D check: does a head turn move the face like a solid, or like a plane?

A print, a phone or a tablet held in front of the camera is (close to) a plane.
However it is moved, tilted or turned, the images of one plane in two frames are
related by a single homography, so the mesh points of the turned frame are
predicted from those of the neutral frame up to the mesh's own jitter. A real
head is not a plane: when it turns by 15-30 degrees the nose tip, which stands
3-4 cm in front of the cheeks, shifts sideways against them (parallax) and no
homography explains both.

:class:`DepthCheck` keeps the stable points of a neutral frame and, for a later
frame of the same face, fits one homography (least squares over all points, no
outlier rejection: a robust fit would discard exactly the nose points that carry
the parallax) and reports the RMS reprojection residual divided by the face
size (the outer eye-corner distance). The points are :data:`STABLE_POINTS`:
nose, cheeks below the eyes, temples and the upper forehead; lips, jaw, eyelids,
brows, irises and the face outline are left out because they move with
expressions or slide along the silhouette when the head turns.

Only image x, y are used. The mesh's z is the model's guess from one image and a
photo of a face gets the same guess as the face itself.

What the check does not cover: it proves that the face changed in a non-planar
way between two frames. A screen replaying a video of a person turning their
head shows real parallax (the challenge's random actions are the defence), and so
does swapping a frontal photo for a photo of a turned head (the engine's face
continuity check is the defence). A strongly bent print is not a plane either;
see docs/ACTIVE-EVAL.md for what the evaluation measured.

The default threshold comes from ``edge eval --depth3d`` on ../shared (real
turns of the action-dev clips against fas-dev images warped as a turned, slightly
bent photo); docs/ACTIVE-EVAL.md has the figures.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from edge.landmarks.base import FaceLandmarks

log = logging.getLogger(__name__)

#: Indices into MediaPipe's face mesh (the same in the 468- and the 478-point
#: models) of points that move rigidly with the skull: nose, cheeks below the
#: eyes, temples and upper forehead. Chosen on MediaPipe's canonical face model:
#: every point except the lip, eye, brow and face-oval contours, an ellipse
#: around each eye (lids and the rings that follow them), the brow band, anything
#: below the subnasale (mouth and jaw move when the mouth opens) and anything
#: beyond 5.6 cm from the midline (self-occluded in a turn). 151 points whose
#: depths span 4.9 cm (std 1.3 cm) against an eye-corner distance of 8.9 cm.
STABLE_POINTS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 8, 9, 19, 20, 31, 36, 44, 45, 47, 48, 49, 50, 51, 59, 60, 64, 68, 69, 75, 79, 94, 97,
    98, 99, 100, 101, 102, 104, 108, 114, 115, 117, 118, 119, 120, 121, 122, 124, 125, 126, 128, 129, 131,
    134, 141, 142, 151, 166, 168, 174, 188, 189, 193, 195, 196, 197, 198, 203, 205, 209, 217, 218, 219, 220,
    226, 228, 229, 235, 236, 237, 238, 239, 240, 241, 242, 245, 248, 250, 261, 266, 274, 275, 277, 278, 279,
    280, 281, 289, 290, 294, 298, 299, 305, 309, 326, 327, 328, 329, 330, 331, 333, 337, 343, 344, 346, 347,
    348, 349, 350, 351, 353, 354, 355, 357, 358, 360, 363, 370, 371, 392, 399, 412, 413, 417, 419, 420, 423,
    425, 429, 437, 438, 439, 440, 446, 448, 449, 455, 456, 457, 458, 459, 460, 461, 462, 465,
)

NOSE_TIP = 1
RIGHT_EYE_OUTER = 33  # the person's right
LEFT_EYE_OUTER = 263

#: Residual (RMS over the stable points, in eye-corner distances) at or above which
#: a turn counts as three-dimensional. Chosen from ``edge eval --depth3d``: see docs/ACTIVE-EVAL.md.
DEFAULT_THRESHOLD = 0.018

#: Below this yaw change (degrees, from the mesh's pose) a measurement says little:
#: a real head's parallax grows with the turn and mesh jitter does not.
DEFAULT_MIN_TURN_DEG = 12.0


@dataclass(frozen=True)
class DepthResult:
    """One 3-D measurement: the turned frame against the neutral reference.

    ``residual`` is the RMS homography residual in eye-corner distances;
    ``parallax`` the change of the nose tip's offset from the eye-corner midpoint
    along the eye line, in eye-corner distances (a turn-angle proxy from the
    points alone; about 0 for a turned plane); ``yaw_delta_deg`` and
    ``pitch_delta_deg`` the pose change the mesh reports. ``turned`` says whether
    the yaw or pitch change reached ``min_turn_deg``; ``is_3d`` whether the
    residual reached the threshold (the caller decides what a small turn means).
    """

    residual: float
    parallax: float
    yaw_delta_deg: float
    pitch_delta_deg: float
    points: int
    threshold: float
    turned: bool
    is_3d: bool


def _scale(xy: np.ndarray) -> float:
    d = xy[LEFT_EYE_OUTER] - xy[RIGHT_EYE_OUTER]
    return float(math.hypot(float(d[0]), float(d[1])))


def nose_offset(xy: np.ndarray) -> float:
    """The nose tip's offset from the eye-corner midpoint along the eye line, in eye-corner distances."""
    r, l, n = xy[RIGHT_EYE_OUTER], xy[LEFT_EYE_OUTER], xy[NOSE_TIP]
    ex, ey = float(l[0] - r[0]), float(l[1] - r[1])
    s2 = ex * ex + ey * ey
    if s2 <= 0.0:
        return 0.0
    mx, my = (float(l[0]) + float(r[0])) / 2.0, (float(l[1]) + float(r[1])) / 2.0
    return ((float(n[0]) - mx) * ex + (float(n[1]) - my) * ey) / s2


def planar_residual(ref_xy: np.ndarray, cur_xy: np.ndarray, scale: float | None = None) -> float:
    """RMS residual of the least-squares homography from ``ref_xy`` to ``cur_xy`` ((N, 2)
    arrays, N >= 5) divided by ``scale`` (default: 1). Allocating; for tests and studies.
    ``inf`` when no homography can be fitted (degenerate points)."""
    src = np.ascontiguousarray(ref_xy, dtype=np.float64)
    dst = np.ascontiguousarray(cur_xy, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or src.shape[0] < 5:
        raise ValueError(f"expected two (N, 2) point arrays with N >= 5, got {src.shape} and {dst.shape}")
    h, _ = cv2.findHomography(src, dst, 0)
    if h is None or not np.all(np.isfinite(h)):
        return math.inf
    p = np.hstack([src, np.ones((len(src), 1))]) @ h.T
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p[:, :2] / p[:, 2:3]
    r = math.sqrt(float(np.mean(np.sum((p - dst) ** 2, axis=1))))
    if not math.isfinite(r):
        return math.inf
    return r / (scale if scale else 1.0)


class DepthCheck:
    """The 3-D check for the challenge engine, on preallocated buffers.

    ``set_reference(lm)`` stores the stable points of a neutral frame;
    ``measure(lm)`` compares a later frame of the same face with it. Points are
    copied, so the caller's borrowed :class:`FaceLandmarks` arrays may change
    after each call. ``wipe()`` zeroes the stored points (end of session).
    Per call only OpenCV's 3x3 homography and a few Python floats are allocated.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD, *, min_turn_deg: float = DEFAULT_MIN_TURN_DEG,
                 indices: tuple[int, ...] = STABLE_POINTS):
        if not (threshold > 0.0 and math.isfinite(threshold)):
            raise ValueError(f"3-D check threshold must be a positive number, got {threshold!r}")
        if not (min_turn_deg >= 0.0 and math.isfinite(min_turn_deg)):
            raise ValueError(f"min_turn_deg must be >= 0, got {min_turn_deg!r}")
        if len(indices) < 8:
            raise ValueError(f"the 3-D check needs at least 8 points, got {len(indices)}")
        self.threshold = float(threshold)
        self.min_turn_deg = float(min_turn_deg)
        self._idx = np.asarray(indices, dtype=np.intp)
        n = len(self._idx)
        self._ref = np.zeros((n, 2), np.float64)
        self._ref_h = np.ones((n, 3), np.float64)  # homogeneous reference points
        self._cur = np.zeros((n, 2), np.float64)
        self._g32 = np.zeros((n, 3), np.float32)
        self._proj = np.zeros((n, 3), np.float64)
        self._diff = np.zeros((n, 2), np.float64)
        self._ref_pose = [0.0, 0.0]
        self._ref_offset = 0.0
        self._ref_scale = 0.0
        self._has_ref = False

    @property
    def has_reference(self) -> bool:
        return self._has_ref

    def _gather(self, lm: FaceLandmarks, out: np.ndarray) -> None:
        pts = lm.points_px
        if pts.ndim != 2 or pts.shape[0] <= int(self._idx[-1]) or pts.shape[1] < 2:
            raise ValueError(f"mesh points of shape {pts.shape} do not hold point {int(self._idx[-1])}")
        if pts.dtype == np.float32 and pts.shape[1] == 3 and pts.flags.c_contiguous:
            np.take(pts, self._idx, axis=0, out=self._g32)  # the contract's layout: no temporary
            out[:] = self._g32[:, :2]
        else:
            out[:] = pts[self._idx, :2]

    def set_reference(self, lm: FaceLandmarks) -> None:
        """Keep ``lm`` (a frontal, neutral frame) as the reference."""
        self._gather(lm, self._ref)
        self._ref_h[:, :2] = self._ref
        self._ref_pose[0], self._ref_pose[1] = float(lm.yaw_deg), float(lm.pitch_deg)
        self._ref_offset = nose_offset(lm.points_px)
        self._ref_scale = _scale(lm.points_px)
        self._has_ref = True

    def measure(self, lm: FaceLandmarks) -> DepthResult:
        """Compare ``lm`` with the reference. Fails secure: a degenerate fit is not 3-D."""
        if not self._has_ref:
            raise RuntimeError("DepthCheck.measure() before set_reference()")
        self._gather(lm, self._cur)
        scale = 0.5 * (self._ref_scale + _scale(lm.points_px))
        dyaw = float(lm.yaw_deg) - self._ref_pose[0]
        dpitch = float(lm.pitch_deg) - self._ref_pose[1]
        parallax = nose_offset(lm.points_px) - self._ref_offset
        residual = math.inf
        if scale > 0.0:
            h, _ = cv2.findHomography(self._ref, self._cur, 0)
            if h is not None and np.all(np.isfinite(h)):
                np.matmul(self._ref_h, h.T, out=self._proj)
                w = self._proj[:, 2:3]
                if np.all(np.abs(w) > 1e-9):
                    np.divide(self._proj[:, :2], w, out=self._diff)
                    np.subtract(self._diff, self._cur, out=self._diff)
                    np.square(self._diff, out=self._diff)
                    residual = math.sqrt(float(self._diff.sum()) / len(self._idx)) / scale
        if not math.isfinite(residual):
            log.debug("3-D check: no homography could be fitted; counted as not 3-D")
            residual_out, is_3d = math.inf, False
        else:
            residual_out, is_3d = residual, residual >= self.threshold
        turned = max(abs(dyaw), abs(dpitch)) >= self.min_turn_deg
        return DepthResult(residual=residual_out, parallax=parallax, yaw_delta_deg=dyaw, pitch_delta_deg=dpitch,
                           points=len(self._idx), threshold=self.threshold, turned=turned, is_3d=is_3d)

    def wipe(self) -> None:
        for buf in (self._ref, self._cur, self._proj, self._diff, self._g32):
            buf.fill(0.0)
        self._ref_h[:, :2] = 0.0
        self._ref_pose[0] = self._ref_pose[1] = 0.0
        self._ref_offset = self._ref_scale = 0.0
        self._has_ref = False

    def close(self) -> None:
        self.wipe()

    def __enter__(self) -> "DepthCheck":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
