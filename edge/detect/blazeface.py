"""MediaPipe BlazeFace (short range) on a TFLite interpreter, decoded in numpy.

The model takes a 128x128 RGB image scaled to [-1, 1] and returns, for 896 SSD
anchors, 16 regressors (box centre, size, six keypoints) and one logit. The
source frame is letterboxed (aspect ratio kept, black bars) as MediaPipe's own
graph does, so boxes stay square to the face whatever the camera's aspect.

Everything that depends only on the model (tensor indices, quantization,
anchors) or on the frame size (letterbox geometry, resize buffers) is resolved
once; per frame the detector resizes into a preallocated buffer, maps pixels
through a 256-entry lookup table straight into the interpreter's input tensor,
and decodes only the anchors whose score passes the threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge.errors import ModelError
from edge.service.wipe import wipe, wipe_interpreter
from edge.tflite import TensorInfo, load_interpreter
from edge.types import FaceBox

log = logging.getLogger(__name__)

NUM_ANCHORS = 896
NUM_COORDS = 16
NUM_KEYPOINTS = 6


def ssd_anchors(input_size: int = 128, strides=(8, 16, 16, 16), offset: float = 0.5) -> np.ndarray:
    """Anchor centres (x, y) normalised to [0, 1], as MediaPipe's SsdAnchorsCalculator makes them
    for the short-range face detector (fixed anchor size, two anchors per layer and cell)."""
    anchors = []
    layer = 0
    while layer < len(strides):
        # Consecutive layers with the same stride share one feature map.
        same = 0
        while layer + same < len(strides) and strides[layer + same] == strides[layer]:
            same += 1
        per_cell = 2 * same  # aspect ratio 1.0 plus the interpolated scale, per layer
        fm = int(np.ceil(input_size / strides[layer]))
        for y in range(fm):
            for x in range(fm):
                for _ in range(per_cell):
                    anchors.append(((x + offset) / fm, (y + offset) / fm))
        layer += same
    out = np.asarray(anchors, dtype=np.float32)
    if out.shape[0] != NUM_ANCHORS:
        raise AssertionError(f"anchor count {out.shape[0]} != {NUM_ANCHORS}")
    return out


@dataclass(frozen=True)
class BlazeFaceOptions:
    min_score: float = 0.5
    iou_threshold: float = 0.3
    max_faces: int = 4
    threads: int = 1
    edgetpu: bool = False


def _pixel_lut(info: TensorInfo, scale: float, offset: float) -> np.ndarray:
    """Lookup table mapping a uint8 pixel to the value the input tensor wants
    (float, or int8/uint8 quantized with the tensor's own scale and zero point)."""
    values = np.arange(256, dtype=np.float64) * scale + offset
    if info.quantized:
        q = np.round(values / info.scale + info.zero_point)
        lim = np.iinfo(info.dtype)
        return np.clip(q, lim.min, lim.max).astype(info.dtype)
    return values.astype(info.dtype)


class BlazeFaceDetector:
    """Face detector on MediaPipe's short-range BlazeFace (float or int8 TFLite)."""

    # Input normalisation of the upstream model: value = pixel / 127.5 - 1 (RGB).
    PIXEL_SCALE = 1.0 / 127.5
    PIXEL_OFFSET = -1.0

    def __init__(self, model_path: str | Path, options: BlazeFaceOptions | None = None, **kwargs):
        self.options = options or BlazeFaceOptions(**kwargs)
        self.model_path = Path(model_path)
        self._interp, inputs, outputs = load_interpreter(
            self.model_path, threads=self.options.threads, edgetpu=self.options.edgetpu
        )
        if len(inputs) != 1 or inputs[0].shape[1:] != (128, 128, 3):
            raise ModelError(
                f"{self.model_path} is not a short-range BlazeFace model: input {inputs[0].shape if inputs else None}, "
                "expected (1, 128, 128, 3). Check [models] detector in the config."
            )
        self._in = inputs[0]
        self._reg, self._cls = self._resolve_outputs(outputs)
        self.input_size = 128
        self._anchors = ssd_anchors(self.input_size)
        self._lut = _pixel_lut(self._in, self.PIXEL_SCALE, self.PIXEL_OFFSET)
        # Dequantised output buffers, reused every frame.
        self._scores = np.empty(NUM_ANCHORS, dtype=np.float32)
        self._mask = np.empty(NUM_ANCHORS, dtype=bool)
        t = self.options.min_score
        self._logit_cut = float(np.log(t / (1.0 - t))) if 0.0 < t < 1.0 else (-np.inf if t <= 0 else np.inf)
        self._raw_f = np.empty((NUM_ANCHORS, NUM_COORDS), dtype=np.float32) if self._reg.quantized else None
        self._geometry: tuple | None = None  # (src shape, resize size, pads) cached per frame size
        self._resized: np.ndarray | None = None
        self._rgb: np.ndarray | None = None
        self._mapped: np.ndarray | None = None
        self._closed = False

    @staticmethod
    def _resolve_outputs(outputs: tuple[TensorInfo, ...]) -> tuple[TensorInfo, TensorInfo]:
        reg = cls = None
        for o in outputs:
            if o.shape[-2:] == (NUM_ANCHORS, NUM_COORDS) or o.shape[-1] == NUM_COORDS:
                reg = o
            elif o.shape[-1] == 1 or o.shape[-2:] == (NUM_ANCHORS, 1):
                cls = o
        if reg is None or cls is None:
            raise ModelError(
                f"BlazeFace outputs not recognised: {[o.shape for o in outputs]}; "
                "expected (1, 896, 16) regressors and (1, 896, 1) scores"
            )
        return reg, cls

    # -- geometry -------------------------------------------------------------------------
    def _prepare(self, h: int, w: int) -> tuple:
        if self._geometry is not None and self._geometry[0] == (h, w):
            return self._geometry
        size = self.input_size
        ratio = min(size / w, size / h)
        nw, nh = max(1, int(round(w * ratio))), max(1, int(round(h * ratio)))
        left, top = (size - nw) // 2, (size - nh) // 2
        self._resized = np.empty((nh, nw, 3), dtype=np.uint8)
        self._rgb = np.empty((nh, nw, 3), dtype=np.uint8)
        self._mapped = np.empty((nh, nw, 3), dtype=self._lut.dtype)
        # Letterbox removal: normalised model coordinates -> source pixels.
        sx, sy = w / (nw / size), h / (nh / size)
        ox, oy = left / size, top / size
        self._geometry = ((h, w), (nw, nh), (left, top), (sx, sy, ox, oy))
        return self._geometry

    # -- inference ------------------------------------------------------------------------
    def _fill_input(self, image: np.ndarray) -> None:
        (_, (nw, nh), (left, top), _) = self._prepare(image.shape[0], image.shape[1])
        cv2.resize(image, (nw, nh), dst=self._resized, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._resized, cv2.COLOR_BGR2RGB, dst=self._rgb)
        # Normalise (or quantize) through the 256-entry table in one pass; cv2.LUT writes into
        # the preallocated buffer (np.take would allocate an index array per frame).
        cv2.LUT(self._rgb, self._lut, dst=self._mapped)
        view = self._interp.tensor(self._in.index)()
        try:
            view.fill(self._lut[0])  # black bars, as MediaPipe pads
            # The one copy into the tensor: the letterboxed region is a strided view of it.
            np.copyto(view[0, top : top + nh, left : left + nw, :], self._mapped)
        finally:
            # invoke() refuses to run while a view of an input tensor is alive.
            del view

    def _outputs(self, reg_view: np.ndarray, cls_view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Float regressors and logits from the output tensors' views (no copy for float models;
        int8 models dequantize into preallocated buffers)."""
        reg = reg_view.reshape(NUM_ANCHORS, NUM_COORDS)
        cls = cls_view.reshape(NUM_ANCHORS)
        if self._cls.quantized:
            np.subtract(cls, self._cls.zero_point, out=self._scores, dtype=np.float32)
            self._scores *= self._cls.scale
            cls = self._scores
        if self._reg.quantized:
            np.subtract(reg, self._reg.zero_point, out=self._raw_f, dtype=np.float32)
            self._raw_f *= self._reg.scale
            reg = self._raw_f
        return reg, cls

    def detect(self, image: np.ndarray) -> tuple[FaceBox, ...]:
        self._check_image(image)
        self._fill_input(image)
        self._interp.invoke()
        # Views of the output tensors, not get_tensor() copies; they must be dropped
        # before the next invoke(), so everything is decoded inside this block.
        reg_view, cls_view = self._interp.tensor(self._reg.index)(), self._interp.tensor(self._cls.index)()
        try:
            reg, logits = self._outputs(reg_view, cls_view)
            # Compare in logit space: sigmoid(x) >= t  <=>  x >= log(t / (1 - t)); no exp over all anchors.
            np.greater_equal(logits, self._logit_cut, out=self._mask)
            if not self._mask.any():
                return ()
            idx = np.flatnonzero(self._mask)  # a handful of candidates: small, short-lived
            return self._decode(reg[idx], logits[idx], self._anchors[idx])
        finally:
            del reg_view, cls_view

    def _decode(self, reg: np.ndarray, logits: np.ndarray, anchors: np.ndarray) -> tuple[FaceBox, ...]:
        size = float(self.input_size)
        scores = 1.0 / (1.0 + np.exp(-np.clip(logits, -100.0, 100.0)))
        cx = reg[:, 0] / size + anchors[:, 0]
        cy = reg[:, 1] / size + anchors[:, 1]
        w = reg[:, 2] / size
        h = reg[:, 3] / size
        kx = reg[:, 4::2] / size + anchors[:, :1]
        ky = reg[:, 5::2] / size + anchors[:, 1:2]
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        kps = np.stack([kx, ky], axis=2)  # (n, 6, 2)
        faces = weighted_nms(boxes, kps, scores, self.options.iou_threshold, self.options.max_faces)
        (_, _, _, (sx, sy, ox, oy)) = self._geometry
        out = []
        for (x1, y1, x2, y2), kp, score in faces:
            out.append(
                FaceBox(
                    x=float((x1 - ox) * sx),
                    y=float((y1 - oy) * sy),
                    w=float((x2 - x1) * sx),
                    h=float((y2 - y1) * sy),
                    score=float(score),
                    keypoints=tuple((float((px - ox) * sx), float((py - oy) * sy)) for px, py in kp),
                )
            )
        return tuple(out)

    @staticmethod
    def _check_image(image: np.ndarray) -> None:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(
                f"expected an HxWx3 uint8 BGR image, got {getattr(image, 'shape', type(image))} "
                f"{getattr(image, 'dtype', '')}"
            )

    def wipe(self) -> None:
        """Zero every buffer that held pixels or face geometry (interpreter inputs and outputs included)."""
        wipe(self._resized, self._rgb, self._mapped, self._scores, self._raw_f, self._mask)
        if not self._closed:
            wipe_interpreter(self._interp)

    def close(self) -> None:
        if self._closed:
            return
        self.wipe()
        self._closed = True
        self._interp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def weighted_nms(boxes: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, iou_threshold: float, max_out: int):
    """MediaPipe's WEIGHTED non-maximum suppression.

    Candidates overlapping the best remaining one by more than ``iou_threshold``
    are merged into it, coordinates averaged with their scores as weights; the
    merged face keeps the best score. Boxes are (x1, y1, x2, y2).
    """
    order = np.argsort(-scores, kind="stable")
    boxes, keypoints, scores = boxes[order], keypoints[order], scores[order]
    remaining = np.ones(len(scores), dtype=bool)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    out = []
    for i in range(len(scores)):
        if not remaining[i]:
            continue
        xx1 = np.maximum(boxes[i, 0], boxes[:, 0])
        yy1 = np.maximum(boxes[i, 1], boxes[:, 1])
        xx2 = np.minimum(boxes[i, 2], boxes[:, 2])
        yy2 = np.minimum(boxes[i, 3], boxes[:, 3])
        inter = np.clip(xx2 - xx1, 0, None) * np.clip(yy2 - yy1, 0, None)
        union = areas[i] + areas - inter
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
        group = remaining & (iou > iou_threshold)
        group[i] = True
        wts = scores[group]
        total = wts.sum()
        box = (boxes[group] * wts[:, None]).sum(axis=0) / total
        kp = (keypoints[group] * wts[:, None, None]).sum(axis=0) / total
        out.append((box, kp, scores[i]))
        remaining &= ~group
        if len(out) >= max_out:
            break
    return out
