"""Silent-Face MiniFASNet liveness models on a TFLite interpreter.

Each model sees its own crop of the face (V2 at scale 2.7, V1SE at 4.0, per
its manifest), resized to 80x80, in BGR with raw 0..255 values. Upstream sums
the softmax of both models and takes the argmax; we report the mean of the two
live probabilities (the same ordering) and let the decision apply a threshold.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from edge.errors import ModelError
from edge.liveness.crop import crop_face
from edge.service.wipe import wipe, wipe_interpreter
from edge.tflite import load_interpreter
from edge.types import FaceBox, LivenessScore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LivenessModelSpec:
    """What the runtime must know about one liveness model (from its manifest)."""

    name: str
    path: Path
    crop_scale: float
    input_width: int = 80
    input_height: int = 80
    colour: str = "BGR"  # channel order the model was trained on
    pixel_scale: float = 1.0  # value = pixel * pixel_scale + pixel_offset
    pixel_offset: float = 0.0
    live_index: int = 1
    weight: float = 1.0  # weight in the ensemble


class _Model:
    """One interpreter with its input buffers; resolved once at load."""

    def __init__(self, spec: LivenessModelSpec, threads: int, edgetpu: bool):
        self.spec = spec
        self.interp, inputs, outputs = load_interpreter(spec.path, threads=threads, edgetpu=edgetpu)
        if len(inputs) != 1 or len(outputs) != 1:
            raise ModelError(f"{spec.path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
        self.inp, self.out = inputs[0], outputs[0]
        want = (1, spec.input_height, spec.input_width, 3)
        if self.inp.shape != want:
            raise ModelError(
                f"{spec.path}: input shape {self.inp.shape} does not match its manifest {want}; "
                "rebuild with: edge models build"
            )
        n_classes = int(np.prod(self.out.shape))
        if not 0 <= spec.live_index < n_classes:
            raise ModelError(f"{spec.path}: live index {spec.live_index} outside {n_classes} outputs")
        values = np.arange(256, dtype=np.float64) * spec.pixel_scale + spec.pixel_offset
        if self.inp.quantized:
            lim = np.iinfo(self.inp.dtype)
            q = np.round(values / self.inp.scale + self.inp.zero_point)
            self.lut = np.clip(q, lim.min, lim.max).astype(self.inp.dtype)
        else:
            self.lut = values.astype(self.inp.dtype)
        self.crop = np.empty((spec.input_height, spec.input_width, 3), dtype=np.uint8)
        self.mapped = np.empty(self.crop.shape, dtype=self.lut.dtype)
        self.swap = spec.colour.upper() == "RGB"
        self.probs = np.empty(n_classes, dtype=np.float32)

    def run(self, image: np.ndarray, face: FaceBox) -> float:
        crop_face(image, face, self.spec.crop_scale, self.crop)
        if self.swap:
            cv2.cvtColor(self.crop, cv2.COLOR_BGR2RGB, dst=self.crop)
        # Normalise (or quantize) through the table into a preallocated buffer, then the one
        # copy into the input tensor (np.take would allocate an index array per frame).
        cv2.LUT(self.crop, self.lut, dst=self.mapped)
        view = self.interp.tensor(self.inp.index)()
        try:
            np.copyto(view[0], self.mapped)
        finally:
            del view  # invoke() refuses to run while an input view is alive
        self.interp.invoke()
        raw = self.interp.tensor(self.out.index)()  # a view; dropped before the next invoke()
        try:
            if self.out.quantized:
                np.subtract(raw.reshape(-1), self.out.zero_point, out=self.probs, dtype=np.float32)
                self.probs *= self.out.scale
            else:
                np.copyto(self.probs, raw.reshape(-1))
        finally:
            del raw
        p = float(self.probs[self.spec.live_index])
        if not np.isfinite(p):
            raise ModelError(f"{self.spec.name} produced a non-finite score")
        return min(max(p, 0.0), 1.0)

    def wipe(self) -> None:
        """Zero the face crop, the scores and the interpreter's input and output tensors."""
        wipe(self.crop, self.mapped, self.probs)
        if self.interp is not None:
            wipe_interpreter(self.interp)

    def close(self) -> None:
        if self.interp is not None:
            self.wipe()
            self.interp = None


class MiniFASNetEnsemble:
    """Liveness on one or more MiniFASNet models; ``score()`` fuses them by weighted mean.

    ``round_robin=True`` runs one model per call, in turn, and fuses its fresh score
    with the other models' scores from the calls just before, as long as those were
    on the same face (box IoU >= ``ROUND_ROBIN_MIN_IOU``) and at most one round old;
    otherwise (first call of a session, a new face, a gap) every model runs. Each
    vote is then still an ensemble vote, at the cost of one model per frame: the
    scores it borrows are one or two frames (33-66 ms at 30 fps) old.
    """

    ROUND_ROBIN_MIN_IOU = 0.5

    def __init__(
        self,
        specs: Sequence[LivenessModelSpec],
        *,
        threads: int = 1,
        edgetpu: bool = False,
        round_robin: bool = False,
    ):
        if not specs:
            raise ModelError("no liveness model configured: set [models] liveness")
        self._models = [_Model(s, threads, edgetpu) for s in specs]
        total = sum(s.weight for s in specs)
        self._weights = [s.weight / total for s in specs]
        self.round_robin = bool(round_robin) and len(self._models) > 1
        # Per-person state of the round: scores, the call that made each, the face it was on.
        self._last = np.zeros(len(self._models), dtype=np.float64)
        self._made_at = np.zeros(len(self._models), dtype=np.int64)
        self._face: FaceBox | None = None
        self._calls = 0
        self._turn = 0
        self._closed = False

    def score(self, image: np.ndarray, face: FaceBox) -> LivenessScore:
        n = len(self._models)
        self._calls += 1
        if self.round_robin and self._round_is_fresh(face):
            i = self._turn
            self._last[i] = self._models[i].run(image, face)
            self._made_at[i] = self._calls
            self._turn = (i + 1) % n
        else:
            for i, m in enumerate(self._models):
                self._last[i] = m.run(image, face)
            self._made_at.fill(self._calls)
            self._turn = 0
        self._face = face
        per = tuple(float(p) for p in self._last)
        live = sum(w * p for w, p in zip(self._weights, per))
        return LivenessScore(live=float(live), per_model=per)

    def _round_is_fresh(self, face: FaceBox) -> bool:
        """Whether the other models' last scores may stand in for this call."""
        if self._face is None or int(self._made_at.min()) < self._calls - len(self._models):
            return False
        return face.iou(self._face) >= self.ROUND_ROBIN_MIN_IOU

    def wipe(self) -> None:
        for m in self._models:
            m.wipe()
        wipe(self._last, self._made_at)
        self._face = None
        self._calls = 0
        self._turn = 0

    def close(self) -> None:
        if self._closed:
            return
        for m in self._models:
            m.close()
        self._closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
