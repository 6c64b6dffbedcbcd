"""Interpreter loading: LiteRT first, tflite_runtime as a fallback, Edge TPU on request.

Everything the hot loop needs from a model (tensor indices, shapes, dtypes,
quantization) is resolved once here into a :class:`TensorInfo`, so per-frame
code never calls ``get_input_details()``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError

log = logging.getLogger(__name__)

EDGETPU_LIB = "libedgetpu.so.1"


def _interpreter_module():
    try:
        from ai_edge_litert import interpreter as mod  # type: ignore[import-not-found]

        return mod
    except ImportError:
        pass
    try:
        from tflite_runtime import interpreter as mod  # type: ignore[import-not-found]

        return mod
    except ImportError as err:
        raise ModelError(
            "no TFLite interpreter is installed: pip install ai-edge-litert "
            "(or tflite-runtime, which needs numpy<2 and Python<=3.11)"
        ) from err


def interpreter_backend() -> str:
    """Name of the interpreter package in use (for HELLO, doctor and bench)."""
    return _interpreter_module().__name__.split(".")[0]


@dataclass(frozen=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    scale: float  # 0.0 for float tensors
    zero_point: int

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0


def _info(d: dict) -> TensorInfo:
    scale, zp = d.get("quantization", (0.0, 0))
    return TensorInfo(
        index=int(d["index"]),
        name=str(d["name"]),
        shape=tuple(int(s) for s in d["shape"]),
        dtype=np.dtype(d["dtype"]),
        scale=float(scale),
        zero_point=int(zp),
    )


def load_interpreter(path: str | Path, *, threads: int = 1, edgetpu: bool = False):
    """Create and allocate an interpreter for ``path``.

    Returns ``(interpreter, inputs, outputs)`` with ``inputs``/``outputs`` as
    tuples of :class:`TensorInfo`. ``edgetpu=True`` loads the Edge TPU delegate
    and fails loudly (never silently falls back to CPU: a gate fails closed).
    """
    mod = _interpreter_module()
    path = Path(path)
    delegates = None
    if edgetpu:
        try:
            delegates = [mod.load_delegate(EDGETPU_LIB)]
        except (OSError, ValueError) as err:
            # A missing libedgetpu.so.1 raises OSError, a present library with no device ValueError.
            raise ModelError(
                f"cannot load the Edge TPU delegate ({EDGETPU_LIB}) for {path}: {err}. "
                "Install libedgetpu1-std from Coral's apt repository, plug the accelerator in, "
                "or set [models] accelerator = \"cpu\""
            ) from err
    try:
        interp = mod.Interpreter(
            model_path=str(path), num_threads=int(threads), experimental_delegates=delegates
        )
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as err:
        raise ModelError(f"cannot load model {path}: {err}. Rebuild it with: edge models build") from err
    inputs = tuple(_info(d) for d in interp.get_input_details())
    outputs = tuple(_info(d) for d in interp.get_output_details())
    return interp, inputs, outputs
