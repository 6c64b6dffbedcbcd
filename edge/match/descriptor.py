"""The face descriptor: a 150x150 RGB chip in, 128 floats out (dlib's face ResNet on LiteRT)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from edge.errors import ModelError
from edge.service.wipe import wipe, wipe_interpreter
from edge.tflite import load_interpreter

log = logging.getLogger(__name__)

DIM = 128


@runtime_checkable
class FaceDescriptor(Protocol):
    def describe(self, chip_rgb: np.ndarray) -> np.ndarray:
        """The (128,) float32 descriptor of a 150x150x3 uint8 RGB chip (borrowed: valid until the next call)."""

    def wipe(self) -> None: ...

    def close(self) -> None: ...


class TFLiteDescriptor:
    """dlib's face ResNet as converted by :mod:`edge.models.dlib_convert` (float32 or int8).

    Buffers are allocated at load; ``describe`` copies the chip into the input tensor, runs, and
    dequantizes into a fixed output array.
    """

    def __init__(self, path: str | Path, *, threads: int = 1, edgetpu: bool = False):
        self.path = Path(path)
        self._interp = None
        interp, inputs, outputs = load_interpreter(self.path, threads=threads, edgetpu=edgetpu)
        if len(inputs) != 1 or inputs[0].shape != (1, 150, 150, 3) or len(outputs) != 1 \
                or int(np.prod(outputs[0].shape)) != DIM:
            raise ModelError(f"{self.path} is not the face descriptor model: input {[i.shape for i in inputs]}, "
                             f"outputs {[o.shape for o in outputs]}; expected (1, 150, 150, 3) -> (1, 128)")
        self._interp, self._in, self._out = interp, inputs[0], outputs[0]
        if self._in.dtype not in (np.dtype(np.float32), np.dtype(np.uint8)):
            raise ModelError(f"{self.path}: input type {self._in.dtype} (expected float32 or uint8)")
        self.quantized = self._out.quantized
        self._input = np.zeros((1, 150, 150, 3), self._in.dtype)
        self.descriptor = np.zeros(DIM, np.float32)

    @classmethod
    def from_registry(cls, variant: str = "float32", *, threads: int = 1) -> "TFLiteDescriptor":
        from edge.models.registry import artifact_path

        return cls(artifact_path("dlib_resnet", variant), threads=threads)

    def describe(self, chip_rgb: np.ndarray) -> np.ndarray:
        if self._interp is None:
            raise ModelError("face descriptor is closed")
        if chip_rgb.shape != (150, 150, 3) or chip_rgb.dtype != np.uint8:
            raise ValueError(f"chip must be 150x150x3 uint8 RGB, got {chip_rgb.dtype} {chip_rgb.shape}")
        self._input[0] = chip_rgb
        self._interp.set_tensor(self._in.index, self._input)
        self._interp.invoke()
        raw = self._interp.get_tensor(self._out.index).reshape(-1)
        if self.quantized:
            self.descriptor[:] = raw  # widen first: int8 arithmetic would wrap
            self.descriptor -= np.float32(self._out.zero_point)
            self.descriptor *= np.float32(self._out.scale)
        else:
            self.descriptor[:] = raw
        wipe(raw)  # get_tensor returns a copy: zero it rather than leave it to the allocator
        return self.descriptor

    def wipe(self) -> None:
        wipe(self._input, self.descriptor)
        if self._interp is not None:
            wipe_interpreter(self._interp)

    def close(self) -> None:
        if self._interp is None:
            return
        self.wipe()
        self._interp = None

    def __enter__(self) -> "TFLiteDescriptor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
