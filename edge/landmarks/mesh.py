"""MediaPipe Face Landmarker v2 on LiteRT: 478-point mesh, head pose and 52 blendshapes.

Per face, as MediaPipe's Face Landmarker does it:

1. Region of interest from the detector (MediaPipe's face detector graph:
   ``DetectionsToRectsCalculator`` + ``RectTransformationCalculator``): the box
   centre, rotated so the line from the person's right eye to their left eye
   (BlazeFace keypoints 0 and 1) is horizontal, the box scaled by 1.5, square
   on its longer side.
2. That rotated square is warped to the 256x256 RGB input (values pixel/255);
   the model returns 478 points (x, y in input pixels, z relative depth in the
   same scale), a face-presence logit and a tongue-out score.
3. The points go back to image pixels through the same affine map (z scaled
   like x), so every downstream measure is in the frame's pixels.
4. Head pose: weighted Procrustes against MediaPipe's canonical face
   (:mod:`edge.landmarks.geometry`).
5. Blendshapes: 146 of the points, x and y in image pixels (MediaPipe's
   ``LandmarksToTensorCalculator`` multiplies the normalised landmarks by the
   image size), into ``face_blendshapes.tflite``; 52 scores.

Every buffer is allocated at construction; per face the work writes into them
(``cv2.warpAffine`` into a fixed destination, LUT, tensor copies, the small
Procrustes SVD). The returned :class:`~edge.landmarks.base.FaceLandmarks`
borrows the buffers: valid until the next ``estimate()`` or ``wipe()``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.landmarks.base import N_BLENDSHAPES, N_POINTS, FaceLandmarks
from edge.landmarks.geometry import CanonicalFace, PoseSolver, parse_geometry_metadata
from edge.service.wipe import wipe, wipe_interpreter
from edge.tflite import TensorInfo, load_interpreter
from edge.types import FaceBox

log = logging.getLogger(__name__)

INPUT_SIZE = 256
ROI_SCALE = 1.5

#: The 146 mesh points the blendshape model reads, in its input order. Source:
#: ``kLandmarksSubsetIdxs`` in MediaPipe's
#: ``mediapipe/tasks/cc/vision/face_landmarker/face_blendshapes_graph.cc``.
BLENDSHAPE_LANDMARKS: tuple[int, ...] = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39,
    40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133,
    136, 144, 145, 146, 148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160,
    161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246,
    249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295,
    296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334,
    336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382,
    384, 385, 386, 387, 388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454,
    466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)
assert len(BLENDSHAPE_LANDMARKS) == 146

#: Outer eye corners (person's right, left): the face-size scale and the ROI rule's eye line.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass(frozen=True)
class MeshOptions:
    min_presence: float = 0.5  # MediaPipe's min_face_presence_confidence default
    roi_scale: float = ROI_SCALE
    threads: int = 1
    blendshapes: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_presence <= 1.0:
            raise ValueError(f"min_presence must be in [0, 1], got {self.min_presence}")
        if not self.roi_scale > 0:
            raise ValueError(f"roi_scale must be > 0, got {self.roi_scale}")
        if int(self.threads) < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")


def _lut(info: TensorInfo) -> np.ndarray:
    """uint8 pixel -> input value (pixel / 255), quantized when the input tensor is."""
    values = np.arange(256, dtype=np.float64) / 255.0
    if info.quantized:
        q = np.round(values / info.scale + info.zero_point)
        lim = np.iinfo(info.dtype)
        return np.clip(q, lim.min, lim.max).astype(info.dtype)
    return values.astype(info.dtype)


def _sigmoid(x: float) -> float:
    x = max(-80.0, min(80.0, x))
    return 1.0 / (1.0 + math.exp(-x))


class MeshLandmarker:
    """:class:`~edge.landmarks.base.LandmarkEstimator` on MediaPipe's Face Landmarker v2.

    ``MeshLandmarker.from_registry(variant="float32", threads=1)`` loads the built, sha256-checked
    artifacts (``edge models build``); the constructor takes explicit paths (tests, tools).
    Not thread-safe: one per pipeline thread.
    """

    def __init__(
        self,
        mesh_path: str | Path,
        geometry: CanonicalFace | str | Path,
        blendshapes_path: str | Path | None = None,
        options: MeshOptions | None = None,
        **kwargs,
    ):
        self.options = options or MeshOptions(**kwargs)
        self.mesh_path = Path(mesh_path)
        if not isinstance(geometry, CanonicalFace):
            geometry = parse_geometry_metadata(Path(geometry).read_bytes())
        self.canonical = geometry
        self._closed = True  # until both interpreters load
        self._mesh, inputs, outputs = load_interpreter(self.mesh_path, threads=self.options.threads)
        if len(inputs) != 1 or inputs[0].shape != (1, INPUT_SIZE, INPUT_SIZE, 3):
            raise ModelError(
                f"{self.mesh_path} is not the Face Landmarker v2 mesh: input "
                f"{[i.shape for i in inputs]}, expected (1, {INPUT_SIZE}, {INPUT_SIZE}, 3)"
            )
        self._in = inputs[0]
        self._pts_out, self._presence_out = self._resolve_outputs(outputs)
        self._bs = None
        if self.options.blendshapes:
            if blendshapes_path is None:
                raise ModelError("blendshapes are on but no blendshape model was given (blendshapes_path)")
            self.blendshapes_path = Path(blendshapes_path)
            self._bs, bs_in, bs_out = load_interpreter(self.blendshapes_path, threads=self.options.threads)
            if len(bs_in) != 1 or bs_in[0].shape != (1, len(BLENDSHAPE_LANDMARKS), 2) or len(bs_out) != 1 \
                    or int(np.prod(bs_out[0].shape)) != N_BLENDSHAPES:
                raise ModelError(
                    f"{self.blendshapes_path} is not MediaPipe's blendshape model: input "
                    f"{[i.shape for i in bs_in]}, outputs {[o.shape for o in bs_out]}; expected (1, 146, 2) -> (52,)"
                )
            self._bs_in, self._bs_out = bs_in[0], bs_out[0]
            if self._bs_in.quantized or self._bs_out.quantized:
                raise ModelError(f"{self.blendshapes_path}: a quantized blendshape model is not supported")
        self._lut = _lut(self._in)
        self._bs_idx = np.asarray(BLENDSHAPE_LANDMARKS, dtype=np.intp)
        # Per-face buffers, reused.
        self._crop = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        self._rgb = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8)
        self._mapped = np.zeros((INPUT_SIZE, INPUT_SIZE, 3), dtype=self._lut.dtype)
        self._raw = np.zeros((N_POINTS, 3), dtype=np.float32)
        self._points = np.zeros((N_POINTS, 3), dtype=np.float32)
        self._blend = np.zeros(N_BLENDSHAPES, dtype=np.float32)
        self._bs_pts = np.zeros((len(BLENDSHAPE_LANDMARKS), 2), dtype=np.float32)
        self._warp = np.zeros((2, 3), dtype=np.float64)  # crop pixel -> image pixel (cv2 centres)
        self._rot_t = np.zeros((2, 2), dtype=np.float32)  # point map, transposed linear part
        self._pose = PoseSolver(self.canonical)
        self._closed = False

    @classmethod
    def from_registry(cls, variant: str = "float32", *, threads: int = 1, **kwargs) -> "MeshLandmarker":
        """The mesh, blendshape and canonical-face artifacts named by the manifests, sha256-checked."""
        from edge.models.registry import artifact_path

        opts = MeshOptions(threads=threads, **kwargs)
        return cls(
            artifact_path("face_mesh_v2", variant),
            artifact_path("face_geometry", "float32"),
            artifact_path("face_blendshapes", "float32") if opts.blendshapes else None,
            opts,
        )

    @staticmethod
    def _resolve_outputs(outputs: tuple[TensorInfo, ...]) -> tuple[TensorInfo, TensorInfo]:
        pts = presence = None
        for o in outputs:
            size = int(np.prod(o.shape))
            if size == N_POINTS * 3:
                pts = o
            elif size == 1 and len(o.shape) == 4 and presence is None:
                presence = o  # (1, 1, 1, 1) logit; the (1, 1) output is the tongue-out score
        if pts is None or presence is None:
            raise ModelError(
                f"Face Landmarker outputs not recognised: {[o.shape for o in outputs]}; expected (1, 1, 1, 1434) "
                "points and a (1, 1, 1, 1) presence logit"
            )
        return pts, presence

    # -- geometry -------------------------------------------------------------------------------------

    def _roi(self, face: FaceBox) -> tuple[float, float, float, float, float] | None:
        """(cx, cy, side, cos, sin) of the rotated square ROI in image pixels, or None if degenerate."""
        side = self.options.roi_scale * max(face.w, face.h)
        if not (side >= 4.0 and math.isfinite(side) and math.isfinite(face.cx) and math.isfinite(face.cy)):
            return None
        angle = 0.0
        if len(face.keypoints) >= 2:
            (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
            if math.hypot(lx - rx, ly - ry) >= 1.0:
                angle = math.atan2(ly - ry, lx - rx)
        return face.cx, face.cy, side, math.cos(angle), math.sin(angle)

    def _fill_input(self, image: np.ndarray, roi) -> None:
        cx, cy, side, c, s = roi
        k = side / INPUT_SIZE
        half = INPUT_SIZE / 2.0
        # Continuous coordinates: crop point (u, v) -> image c + k * R (u - 128, v - 128). cv2 puts pixel
        # centres at integers, so the warp maps index u to u + 0.5 and back.
        w = self._warp
        w[0, 0], w[0, 1] = k * c, -k * s
        w[1, 0], w[1, 1] = k * s, k * c
        w[0, 2] = cx - 0.5 + k * (c * (0.5 - half) - s * (0.5 - half))
        w[1, 2] = cy - 0.5 + k * (s * (0.5 - half) + c * (0.5 - half))
        cv2.warpAffine(
            image, w, (INPUT_SIZE, INPUT_SIZE), dst=self._crop,
            # BORDER_REPLICATE: MediaPipe's ImageToTensorCalculator default (the face graph sets none).
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE,
        )
        cv2.cvtColor(self._crop, cv2.COLOR_BGR2RGB, dst=self._rgb)
        cv2.LUT(self._rgb, self._lut, dst=self._mapped)
        view = self._mesh.tensor(self._in.index)()
        try:
            np.copyto(view[0], self._mapped)
        finally:
            del view  # invoke() refuses to run while a view of a tensor is alive

    def _read_points(self, roi) -> float:
        """Copy the mesh output into image pixels; returns the presence score."""
        cx, cy, side, c, s = roi
        k = side / INPUT_SIZE
        pv, lv = self._mesh.tensor(self._pts_out.index)(), self._mesh.tensor(self._presence_out.index)()
        try:
            raw = pv.reshape(N_POINTS, 3)
            if self._pts_out.quantized:
                np.subtract(raw, self._pts_out.zero_point, out=self._raw, dtype=np.float32)
                self._raw *= self._pts_out.scale
            else:
                np.copyto(self._raw, raw)
            logit = float(lv.reshape(-1)[0])
            if self._presence_out.quantized:
                logit = (logit - self._presence_out.zero_point) * self._presence_out.scale
        finally:
            del pv, lv
        self._raw[:, :2] -= INPUT_SIZE / 2.0
        rt = self._rot_t
        rt[0, 0], rt[0, 1] = k * c, k * s
        rt[1, 0], rt[1, 1] = -k * s, k * c
        np.matmul(self._raw[:, :2], rt, out=self._points[:, :2])
        self._points[:, 0] += cx
        self._points[:, 1] += cy
        np.multiply(self._raw[:, 2], k, out=self._points[:, 2])
        return _sigmoid(logit)

    def _run_blendshapes(self) -> None:
        np.take(self._points[:, :2], self._bs_idx, axis=0, out=self._bs_pts)
        view = self._bs.tensor(self._bs_in.index)()
        try:
            np.copyto(view[0], self._bs_pts)
        finally:
            del view
        self._bs.invoke()
        out = self._bs.tensor(self._bs_out.index)()
        try:
            np.clip(out.reshape(-1), 0.0, 1.0, out=self._blend)
        finally:
            del out

    # -- the protocol ---------------------------------------------------------------------------------

    def estimate(self, image: np.ndarray, face: FaceBox) -> FaceLandmarks | None:
        if self._closed:
            raise ModelError("MeshLandmarker is closed")
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an HxWx3 uint8 BGR image, got {getattr(image, 'shape', type(image))} "
                f"{getattr(image, 'dtype', '')}"
            )
        roi = self._roi(face)
        if roi is None:
            return None
        self._fill_input(image, roi)
        self._mesh.invoke()
        presence = self._read_points(roi)
        if presence < self.options.min_presence or not np.isfinite(self._points).all():
            return None
        if self._bs is not None:
            self._run_blendshapes()
        yaw, pitch, roll = self._pose.solve(self._points)
        p = self._points
        eye = math.hypot(
            float(p[LEFT_EYE_OUTER, 0] - p[RIGHT_EYE_OUTER, 0]), float(p[LEFT_EYE_OUTER, 1] - p[RIGHT_EYE_OUTER, 1])
        )
        return FaceLandmarks(
            points_px=self._points,
            blendshapes=self._blend,
            presence=presence,
            yaw_deg=yaw,
            pitch_deg=pitch,
            roll_deg=roll,
            face_size_px=eye,
            box=face,
        )

    def wipe(self) -> None:
        """Zero every buffer that held pixels, points, poses or blendshapes (interpreter tensors too)."""
        wipe(self._crop, self._rgb, self._mapped, self._raw, self._points, self._blend, self._bs_pts,
             self._warp, self._rot_t)
        self._pose.wipe()
        if not self._closed:
            wipe_interpreter(self._mesh)
            if self._bs is not None:
                wipe_interpreter(self._bs)

    def close(self) -> None:
        if self._closed:
            return
        self.wipe()
        self._closed = True
        self._mesh = None
        self._bs = None

    def __enter__(self) -> "MeshLandmarker":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
