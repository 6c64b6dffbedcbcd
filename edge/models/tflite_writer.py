"""A small, deterministic TFLite flatbuffer builder on top of LiteRT's generated schema bindings.

The graph code in :mod:`edge.models.minifasnet` adds tensors and operators here; :meth:`TFLiteBuilder.finish`
packs the object API tree into bytes. Nothing depends on dict ordering, time or randomness, so the same
calls give byte-identical files (the committed model manifests pin their sha256).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import flatbuffers
import numpy as np

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError as err:  # pragma: no cover - ai-edge-litert is a hard dependency of edge
    raise ImportError("edge.models.tflite_writer needs ai-edge-litert: pip install ai-edge-litert") from err

log = logging.getLogger(__name__)

__all__ = ["Quant", "TFLiteBuilder", "schema", "Op"]

Op = schema.BuiltinOperator

# TFLite's own converter aligns constant buffers to 16 bytes; int32/float kernels and Edge TPU tooling expect it.
_BUFFER_ALIGNMENT = 16
# deprecated_builtin_code is an int8 field; codes beyond it are stored as this placeholder.
_PLACEHOLDER_FOR_GREATER_OP_CODES = 127

_TENSOR_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.uint8): schema.TensorType.UINT8,
    np.dtype(np.int16): schema.TensorType.INT16,
}


@dataclass(frozen=True)
class Quant:
    """Affine quantization of one tensor: real = scale * (q - zero_point), per tensor or along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @classmethod
    def per_tensor(cls, scale: float, zero_point: int) -> "Quant":
        return cls((float(scale),), (int(zero_point),))

    @classmethod
    def per_axis(cls, scales: Sequence[float], zero_points: Sequence[int] | None, axis: int) -> "Quant":
        scales = tuple(float(s) for s in scales)
        zps = tuple(int(z) for z in zero_points) if zero_points is not None else (0,) * len(scales)
        return cls(scales, zps, axis)

    def _to_schema(self) -> schema.QuantizationParametersT:
        q = schema.QuantizationParametersT()
        q.scale = [float(np.float32(s)) for s in self.scale]
        q.zeroPoint = list(self.zero_point)
        q.quantizedDimension = int(self.axis)
        return q


class _AlignedBufferT(schema.BufferT):
    """BufferT whose data vector starts on a 16-byte boundary (the generated Pack aligns to the item size)."""

    def __init__(self, raw: bytes | None):
        super().__init__()
        self.raw = raw

    def Pack(self, builder):  # noqa: N802 - flatbuffers object-API name
        data = None
        if self.raw:
            n = len(self.raw)
            builder.StartVector(1, n, _BUFFER_ALIGNMENT)
            builder.head = builder.head - n
            builder.Bytes[builder.head : builder.head + n] = self.raw
            data = builder.EndVector()
        schema.BufferStart(builder)
        if data is not None:
            schema.BufferAddData(builder, data)
        return schema.BufferEnd(builder)


def _options_type(options) -> int:
    name = type(options).__name__
    if not name.endswith("T") or not hasattr(schema.BuiltinOptions, name[:-1]):
        raise TypeError(f"{name} is not a TFLite builtin options class")
    return getattr(schema.BuiltinOptions, name[:-1])


class TFLiteBuilder:
    """Collects one subgraph's tensors and operators, then packs a ``TFL3`` flatbuffer.

    Tensor and operator order is the order of the calls; operators must be added in execution order.
    """

    def __init__(self, description: str = "edge"):
        self._description = description
        self._buffers: list[_AlignedBufferT] = [_AlignedBufferT(None)]  # buffer 0: the empty sentinel
        self._tensors: list[schema.TensorT] = []
        self._names: set[str] = set()
        self._opcodes: list[tuple[int, int]] = []
        self._operators: list[schema.OperatorT] = []
        self._inputs: list[int] = []
        self._outputs: list[int] = []
        self._signature: tuple[list[tuple[str, int]], list[tuple[str, int]]] | None = None

    @property
    def tensor_count(self) -> int:
        return len(self._tensors)

    def tensor(self, index: int) -> schema.TensorT:
        return self._tensors[index]

    def add_tensor(self, name: str, shape: Sequence[int], dtype, *, quant: Quant | None = None,
                   data: np.ndarray | None = None) -> int:
        """Add a tensor; with ``data`` it is a constant (the array is stored little-endian, C order)."""
        if name in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        dtype = np.dtype(dtype)
        if dtype not in _TENSOR_TYPES:
            raise TypeError(f"tensor {name}: unsupported dtype {dtype}")
        t = schema.TensorT()
        t.name = name
        t.shape = [int(s) for s in shape]
        t.type = _TENSOR_TYPES[dtype]
        t.buffer = 0
        if data is not None:
            arr = np.ascontiguousarray(data, dtype=dtype.newbyteorder("<"))
            if tuple(arr.shape) != tuple(t.shape):
                raise ValueError(f"tensor {name}: data shape {arr.shape} != declared shape {tuple(t.shape)}")
            self._buffers.append(_AlignedBufferT(arr.tobytes(order="C")))
            t.buffer = len(self._buffers) - 1
        if quant is not None:
            t.quantization = quant._to_schema()
        self._names.add(name)
        self._tensors.append(t)
        return len(self._tensors) - 1

    def add_const(self, name: str, array: np.ndarray, *, quant: Quant | None = None) -> int:
        array = np.asarray(array)
        return self.add_tensor(name, array.shape, array.dtype, quant=quant, data=array)

    def _opcode_index(self, op: int, version: int) -> int:
        key = (int(op), int(version))
        if key not in self._opcodes:
            self._opcodes.append(key)
        return self._opcodes.index(key)

    def add_operator(self, op: int, inputs: Sequence[int], outputs: Sequence[int], options=None, *,
                     version: int = 1) -> None:
        """Append a builtin operator; ``-1`` in ``inputs`` marks an omitted optional input."""
        for i in list(inputs) + list(outputs):
            if i != -1 and not 0 <= i < len(self._tensors):
                raise IndexError(f"operator {op}: tensor index {i} does not exist")
        o = schema.OperatorT()
        o.opcodeIndex = self._opcode_index(op, version)
        o.inputs = [int(i) for i in inputs]
        o.outputs = [int(i) for i in outputs]
        if options is not None:
            o.builtinOptionsType = _options_type(options)
            o.builtinOptions = options
        self._operators.append(o)

    def set_io(self, inputs: Sequence[int], outputs: Sequence[int], *, signature_inputs: Sequence[str] | None = None,
               signature_outputs: Sequence[str] | None = None) -> None:
        """Declare the subgraph's inputs/outputs and the ``serving_default`` signature that names them."""
        self._inputs = [int(i) for i in inputs]
        self._outputs = [int(i) for i in outputs]
        in_names = list(signature_inputs) if signature_inputs else [self._tensors[i].name for i in self._inputs]
        out_names = list(signature_outputs) if signature_outputs else [self._tensors[i].name for i in self._outputs]
        if len(in_names) != len(self._inputs) or len(out_names) != len(self._outputs):
            raise ValueError("one signature name per input and per output is needed")
        self._signature = (list(zip(in_names, self._inputs)), list(zip(out_names, self._outputs)))

    def finish(self) -> bytes:
        if not self._inputs or not self._outputs or self._signature is None:
            raise ValueError("set_io() must be called before finish()")
        model = schema.ModelT()
        model.version = 3
        model.description = self._description
        codes = []
        for op, version in self._opcodes:
            c = schema.OperatorCodeT()
            c.builtinCode = op
            c.deprecatedBuiltinCode = min(op, _PLACEHOLDER_FOR_GREATER_OP_CODES)
            c.version = version
            codes.append(c)
        model.operatorCodes = codes
        sg = schema.SubGraphT()
        sg.name = "main"
        sg.tensors = self._tensors
        sg.inputs = self._inputs
        sg.outputs = self._outputs
        sg.operators = self._operators
        model.subgraphs = [sg]
        model.buffers = self._buffers
        sig = schema.SignatureDefT()
        sig.signatureKey = "serving_default"
        sig.subgraphIndex = 0
        sig.inputs = [self._tensor_map(n, i) for n, i in self._signature[0]]
        sig.outputs = [self._tensor_map(n, i) for n, i in self._signature[1]]
        model.signatureDefs = [sig]
        size_hint = sum(len(b.raw or b"") for b in self._buffers) + 64 * 1024
        builder = flatbuffers.Builder(size_hint)
        builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
        out = bytes(builder.Output())
        log.debug("packed TFLite model: %d tensors, %d operators, %d bytes", len(self._tensors),
                  len(self._operators), len(out))
        return out

    @staticmethod
    def _tensor_map(name: str, index: int) -> schema.TensorMapT:
        m = schema.TensorMapT()
        m.name = name
        m.tensorIndex = index
        return m
