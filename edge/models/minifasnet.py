"""Convert Silent-Face MiniFASNetV2 / MiniFASNetV1SE state_dicts into TFLite (float32 and full int8).

No torch, TensorFlow or ONNX: the graph is rebuilt from the state_dict as described in
``models/silent-face/ARCHITECTURE.md``, BatchNorm is folded into the preceding conv, and the flatbuffer
is written with :mod:`edge.models.tflite_writer`. The int8 variant is quantized here as well, with a
small numpy forward pass over caller-supplied calibration crops. The int8 graph uses only ops that
XNNPACK (LiteRT's CPU delegate) runs in int8 and that Coral lists for the Edge TPU: PReLU becomes
MUL (per-channel slope, fused ReLU) + ADD, and conv -> PReLU -> depthwise chains are channel-equalised.

Model contract (both variants): input ``1xHxWx3`` BGR with raw 0..255 values (no /255, as upstream),
output ``1x3`` softmax, index 1 = live. Float32 takes a float32 input; int8 takes the uint8 crop
unchanged (scale 1, zero point 0) and returns int8 probabilities (scale 1/256, zero point -128).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from edge.errors import CheckpointError
from edge.models.checkpoint import load_checkpoint
from edge.models.tflite_writer import Op, Quant, TFLiteBuilder, schema

log = logging.getLogger(__name__)

__all__ = ["load_checkpoint", "convert_minifasnet", "quantize_minifasnet", "model_variant", "LIVE_INDEX"]

LIVE_INDEX = 1
BN_EPS = 1e-5  # PyTorch's BatchNorm default, which upstream keeps
_RESIDUAL_STAGES = ("conv_3", "conv_4", "conv_5")
_DOWN_BLOCKS = ("conv_23", "conv_34", "conv_45")
_CALIB_CHUNK = 16  # crops per numpy batch: bounds memory (~20 MB per activation) without hurting speed


# --------------------------------------------------------------------------------------------------- graph IR


@dataclass
class _Node:
    kind: str  # conv | dwconv | prelu | pad | add | mul | mean | logistic | reshape | softmax
    name: str  # name of the output tensor
    inputs: tuple[str, ...]
    shape: tuple[int, ...]  # NHWC output shape (batch 1)
    attrs: dict = field(default_factory=dict)


@dataclass
class _Graph:
    input_shape: tuple[int, int, int, int]
    nodes: list[_Node]
    output: str


class _GraphBuilder:
    def __init__(self, sd: Mapping[str, np.ndarray], input_size: tuple[int, int]):
        self.sd = sd
        h, w = input_size
        self.shapes: dict[str, tuple[int, ...]] = {"input": (1, h, w, 3)}
        self.nodes: list[_Node] = []

    def get(self, key: str) -> np.ndarray:
        try:
            return np.asarray(self.sd[key])
        except KeyError:
            raise CheckpointError(
                f"state_dict has no {key!r}: not a MiniFASNetV2/V1SE checkpoint (or a different upstream revision)"
            ) from None

    def add(self, kind: str, name: str, inputs: tuple[str, ...], shape: tuple[int, ...], **attrs) -> str:
        self.nodes.append(_Node(kind, name, inputs, tuple(int(s) for s in shape), attrs))
        self.shapes[name] = tuple(int(s) for s in shape)
        return name

    def bn(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        # float64 elementwise maths is correctly rounded everywhere, so folding is bit-reproducible.
        gamma = self.get(f"{prefix}.weight").astype(np.float64)
        beta = self.get(f"{prefix}.bias").astype(np.float64)
        mean = self.get(f"{prefix}.running_mean").astype(np.float64)
        var = self.get(f"{prefix}.running_var").astype(np.float64)
        scale = gamma / np.sqrt(var + BN_EPS)
        return scale, beta - mean * scale

    def conv(self, prefix: str, x: str, *, stride: int, pad: int, bn: str | None = None, prelu: str | None = None,
             relu: bool = False, bias_free: bool = True) -> str:
        """Conv2d(no bias) [-> BatchNorm folded] [-> PReLU | fused ReLU]; depthwise when groups == channels."""
        w = self.get(f"{prefix}.weight").astype(np.float64)
        if w.ndim == 2:  # nn.Linear on a 1x1 map: a 1x1 conv
            w = w[:, :, None, None]
        n, h, wd, c = self.shapes[x]
        out_c, in_per_group, kh, kw = w.shape
        depthwise = in_per_group == 1 and c > 1
        if depthwise and out_c != c:
            raise CheckpointError(f"{prefix}.weight {w.shape}: depthwise conv with {c} input channels "
                                  "and a channel multiplier is not part of MiniFASNet")
        if not depthwise and in_per_group != c:
            raise CheckpointError(f"{prefix}.weight expects {in_per_group} input channels, the graph has {c} "
                                  f"at this point (input size or checkpoint variant mismatch)")
        if bias_free and f"{prefix}.bias" in self.sd:
            raise CheckpointError(f"unexpected {prefix}.bias: MiniFASNet convs have no bias")
        if bn is not None:
            scale, shift = self.bn(bn)
            w = w * scale[:, None, None, None]
            b = shift
        else:
            b = np.zeros(out_c)
        ho, pads_h, same_h = _torch_padding(h, kh, stride, pad)
        wo, pads_w, same_w = _torch_padding(wd, kw, stride, pad)
        if ho < 1 or wo < 1:
            raise ValueError(f"input too small for {prefix}: {h}x{wd} feature map, {kh}x{kw} kernel")
        src = x
        if pad and not (same_h and same_w):
            # TFLite SAME puts the odd pad at the end, PyTorch pads both sides: pad explicitly, then VALID.
            src = self.add("pad", f"{prefix}.pad", (x,), (n, h + sum(pads_h), wd + sum(pads_w), c),
                           pads=((0, 0), pads_h, pads_w, (0, 0)))
            padding = "VALID"
        else:
            padding = "SAME" if pad else "VALID"
        out_shape = (n, ho, wo, out_c)
        if depthwise:
            weights = w.transpose(1, 2, 3, 0)  # (C,1,kh,kw) -> 1 x kh x kw x C
            y = self.add("dwconv", prefix, (src,), out_shape, w=weights.astype(np.float32),
                         b=b.astype(np.float32), stride=stride, padding=padding, relu=relu)
        else:
            weights = w.transpose(0, 2, 3, 1)  # OIHW -> OHWI
            y = self.add("conv", prefix, (src,), out_shape, w=weights.astype(np.float32),
                         b=b.astype(np.float32), stride=stride, padding=padding, relu=relu)
        if prelu is not None:
            alpha = self.get(f"{prelu}.weight").astype(np.float32).reshape(-1)
            if alpha.size != out_c:
                raise CheckpointError(f"{prelu}.weight has {alpha.size} slopes for {out_c} channels")
            y = self.add("prelu", prelu, (y,), out_shape, alpha=alpha)
        return y

    def cb(self, prefix: str, x: str, *, stride: int = 1, pad: int = 0) -> str:
        return self.conv(f"{prefix}.conv", x, stride=stride, pad=pad, bn=f"{prefix}.bn", prelu=f"{prefix}.prelu")

    def lb(self, prefix: str, x: str, *, stride: int = 1, pad: int = 0) -> str:
        return self.conv(f"{prefix}.conv", x, stride=stride, pad=pad, bn=f"{prefix}.bn")

    def dw_block(self, prefix: str, x: str, *, stride: int, residual: bool) -> str:
        y = self.cb(f"{prefix}.conv", x)
        y = self.cb(f"{prefix}.conv_dw", y, stride=stride, pad=1)
        y = self.lb(f"{prefix}.project", y)
        if not residual:
            return y
        if self.shapes[y] != self.shapes[x]:
            raise CheckpointError(f"{prefix}: residual block maps {self.shapes[x]} to {self.shapes[y]}")
        if f"{prefix}.se_module.fc1.weight" in self.sd:
            se = f"{prefix}.se_module"
            c = self.shapes[y][-1]
            pooled = self.add("mean", f"{se}.pool", (y,), (1, 1, 1, c))
            g = self.conv(f"{se}.fc1", pooled, stride=1, pad=0, bn=f"{se}.bn1", relu=True)
            g = self.conv(f"{se}.fc2", g, stride=1, pad=0, bn=f"{se}.bn2")
            g = self.add("logistic", f"{se}.gate", (g,), self.shapes[g])
            y = self.add("mul", f"{se}.out", (y, g), self.shapes[y])
        return self.add("add", f"{prefix}.out", (x, y), self.shapes[x])

    def stage(self, prefix: str, x: str) -> str:
        i = 0
        while f"{prefix}.model.{i}.conv.conv.weight" in self.sd:
            x = self.dw_block(f"{prefix}.model.{i}", x, stride=1, residual=True)
            i += 1
        if i == 0:
            raise CheckpointError(f"state_dict has no {prefix}.model.0.*: not a MiniFASNet checkpoint")
        return x


def _torch_padding(size: int, k: int, stride: int, pad: int) -> tuple[int, tuple[int, int], bool]:
    """Output size, the (before, after) padding PyTorch effectively applies, and whether TFLite SAME matches."""
    out = (size + 2 * pad - k) // stride + 1
    # PyTorch pads `pad` on both sides but the window never reaches the last rows when they are surplus.
    after = max(0, min(pad, (out - 1) * stride + k - size - pad))
    same_out = -(-size // stride)
    same_total = max((same_out - 1) * stride + k - size, 0)
    same = same_out == out and same_total // 2 == pad and same_total - same_total // 2 == after
    return out, (pad, after), same


def _build_graph(state_dict: Mapping[str, np.ndarray], input_size: tuple[int, int]) -> _Graph:
    try:
        h, w = (int(v) for v in input_size)
    except (TypeError, ValueError) as err:
        raise ValueError(f"input_size must be (height, width), got {input_size!r}") from err
    if h < 16 or w < 16:
        raise ValueError(f"input_size {input_size!r} is too small for MiniFASNet (four stride-2 stages)")
    if state_dict and all(k.startswith("module.") for k in state_dict):  # a raw DataParallel state_dict
        state_dict = {k[len("module."):]: v for k, v in state_dict.items()}
    g = _GraphBuilder(state_dict, (h, w))
    x = g.cb("conv1", "input", stride=2, pad=1)
    x = g.cb("conv2_dw", x, stride=1, pad=1)
    for down, stage in zip(_DOWN_BLOCKS, _RESIDUAL_STAGES):
        x = g.dw_block(down, x, stride=2, residual=False)
        x = g.stage(stage, x)
    x = g.cb("conv_6_sep", x)
    x = g.lb("conv_6_dw", x)  # kernel = whole remaining map: 5x5 for 80x80
    if g.shapes[x][1:3] != (1, 1):
        k = g.get("conv_6_dw.conv.weight").shape[2:]
        raise ValueError(f"input_size {input_size!r} does not fit this checkpoint: conv_6_dw has a {k[0]}x{k[1]} "
                         f"kernel but sees a {g.shapes[x][1]}x{g.shapes[x][2]} map after it; use the input size "
                         "the checkpoint was trained for (its file name says, e.g. 80x80)")
    x = g.conv("linear", x, stride=1, pad=0, bn="bn")
    x = g.conv("prob", x, stride=1, pad=0)
    n_cls = g.shapes[x][-1]
    x = g.add("reshape", "logits", (x,), (1, n_cls))
    x = g.add("softmax", "softmax", (x,), (1, n_cls))
    return _Graph((1, h, w, 3), g.nodes, x)


def model_variant(state_dict: Mapping[str, np.ndarray]) -> str:
    """``"MiniFASNetV1SE"`` when the state_dict carries SE modules, else ``"MiniFASNetV2"``."""
    return "MiniFASNetV1SE" if any(".se_module." in k for k in state_dict) else "MiniFASNetV2"


# ------------------------------------------------------------------------------------------ numpy forward pass


def _np_pad_for(node: _Node, x: np.ndarray) -> np.ndarray:
    if node.attrs["padding"] == "VALID":
        return x
    kh, kw = node.attrs["w"].shape[1:3]
    s = node.attrs["stride"]
    pads = []
    for size, k in ((x.shape[1], kh), (x.shape[2], kw)):
        total = max((-(-size // s) - 1) * s + k - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, ((0, 0), pads[0], pads[1], (0, 0)))


def _np_forward(graph: _Graph, x: np.ndarray, dtype=np.float64, observe=None) -> np.ndarray:
    """Run the IR on an NHWC batch. ``observe(name, array)`` sees every tensor (calibration)."""
    cache: dict[str, np.ndarray] = {"input": x.astype(dtype)}
    if observe:
        observe("input", cache["input"])
    consumers: dict[str, int] = {}
    for node in graph.nodes:
        for i in node.inputs:
            consumers[i] = consumers.get(i, 0) + 1
    for node in graph.nodes:
        ins = [cache[i] for i in node.inputs]
        a = node.attrs
        if node.kind in ("conv", "dwconv"):
            v = _np_pad_for(node, ins[0])
            w = a["w"].astype(dtype)
            s = a["stride"]
            _, kh, kw, _ = w.shape
            n, hh, ww, c = v.shape
            ho, wo = (hh - kh) // s + 1, (ww - kw) // s + 1
            if node.kind == "conv" and kh == kw == 1 and s == 1:
                y = (v.reshape(-1, c) @ w.reshape(w.shape[0], -1).T).reshape(n, ho, wo, -1)
            elif node.kind == "conv":
                cols = [v[:, dy : dy + s * (ho - 1) + 1 : s, dx : dx + s * (wo - 1) + 1 : s, :]
                        for dy in range(kh) for dx in range(kw)]
                col = np.concatenate(cols, axis=-1).reshape(n * ho * wo, -1)
                y = (col @ w.reshape(w.shape[0], -1).T).reshape(n, ho, wo, -1)
            else:
                y = np.zeros((n, ho, wo, c), dtype=dtype)
                tmp = np.empty_like(y)
                for dy in range(kh):
                    for dx in range(kw):
                        np.multiply(v[:, dy : dy + s * (ho - 1) + 1 : s, dx : dx + s * (wo - 1) + 1 : s, :],
                                    w[0, dy, dx], out=tmp)
                        y += tmp
            y += a["b"].astype(dtype)
            if a["relu"]:
                np.maximum(y, 0, out=y)
        elif node.kind == "prelu":
            # x + min(x, 0) * (alpha - 1), in place: the calibration pass is memory-bound
            y = np.minimum(ins[0], 0)
            y *= a["alpha"].astype(dtype) - 1
            if observe:  # the int8 graph's MUL output, relu((alpha - 1) * x) when alpha <= 1
                observe(f"{node.name}.neg", y)
            y += ins[0]
        elif node.kind == "pad":
            y = np.pad(ins[0], a["pads"])
        elif node.kind == "add":
            y = ins[0] + ins[1]
        elif node.kind == "mul":
            y = ins[0] * ins[1]
        elif node.kind == "mean":
            y = ins[0].mean(axis=(1, 2), keepdims=True)
        elif node.kind == "logistic":
            y = 1.0 / (1.0 + np.exp(-ins[0]))
        elif node.kind == "reshape":
            y = ins[0].reshape((ins[0].shape[0],) + node.shape[1:])
        elif node.kind == "softmax":
            e = np.exp(ins[0] - ins[0].max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        else:  # pragma: no cover - the builder only emits the kinds above
            raise AssertionError(node.kind)
        cache[node.name] = y
        if observe:
            observe(node.name, y)
        for i in node.inputs:  # free activations as soon as their last consumer ran
            consumers[i] -= 1
            if consumers[i] == 0 and i != graph.output:
                del cache[i]
    return cache[graph.output]


# ------------------------------------------------------------------------------------------------ emitters


def _conv_options(node: _Node):
    o = schema.DepthwiseConv2DOptionsT() if node.kind == "dwconv" else schema.Conv2DOptionsT()
    o.padding = schema.Padding.SAME if node.attrs["padding"] == "SAME" else schema.Padding.VALID
    o.strideH = o.strideW = node.attrs["stride"]
    o.dilationHFactor = o.dilationWFactor = 1
    o.fusedActivationFunction = (schema.ActivationFunctionType.RELU if node.attrs["relu"]
                                 else schema.ActivationFunctionType.NONE)
    if node.kind == "dwconv":
        o.depthMultiplier = 1
    return o


def _emit_common(b: TFLiteBuilder, node: _Node, t: dict[str, int], out: int, *, int8: bool) -> bool:
    """Emit the operators whose form is the same in float and int8; False if ``node`` is not one of them."""
    ins = [t[i] for i in node.inputs]
    v2 = 2 if int8 else 1
    if node.kind == "pad":
        pads = b.add_const(f"{node.name}.paddings", np.asarray(node.attrs["pads"], dtype=np.int32))
        b.add_operator(Op.PAD, [ins[0], pads], [out], schema.PadOptionsT(), version=v2)
    elif node.kind == "add":
        b.add_operator(Op.ADD, ins, [out], schema.AddOptionsT(), version=v2)
    elif node.kind == "mean":
        axes = b.add_const(f"{node.name}.axes", np.asarray([1, 2], dtype=np.int32))
        o = schema.ReducerOptionsT()
        o.keepDims = True
        b.add_operator(Op.MEAN, [ins[0], axes], [out], o, version=v2)
    elif node.kind == "logistic":
        b.add_operator(Op.LOGISTIC, ins, [out], version=v2)
    elif node.kind == "reshape":
        shape = b.add_const(f"{node.name}.shape", np.asarray(node.shape, dtype=np.int32))
        o = schema.ReshapeOptionsT()
        o.newShape = list(node.shape)
        b.add_operator(Op.RESHAPE, [ins[0], shape], [out], o)
    elif node.kind == "softmax":
        o = schema.SoftmaxOptionsT()
        o.beta = 1.0
        b.add_operator(Op.SOFTMAX, ins, [out], o, version=v2)
    else:
        return False
    return True


def _emit_float(graph: _Graph, description: str) -> bytes:
    b = TFLiteBuilder(description)
    t = {"input": b.add_tensor("input", graph.input_shape, np.float32)}
    for node in graph.nodes:
        out = b.add_tensor(node.name, node.shape, np.float32)
        a = node.attrs
        if node.kind in ("conv", "dwconv"):
            w = b.add_const(f"{node.name}.weight", a["w"])
            bias = b.add_const(f"{node.name}.bias", a["b"])
            op = Op.DEPTHWISE_CONV_2D if node.kind == "dwconv" else Op.CONV_2D
            b.add_operator(op, [t[node.inputs[0]], w, bias], [out], _conv_options(node))
        elif node.kind == "prelu":
            alpha = b.add_const(f"{node.name}.alpha", a["alpha"].reshape(1, 1, -1))
            b.add_operator(Op.PRELU, [t[node.inputs[0]], alpha], [out])
        elif node.kind == "mul":
            b.add_operator(Op.MUL, [t[i] for i in node.inputs], [out], schema.MulOptionsT())
        elif not _emit_common(b, node, t, out, int8=False):  # pragma: no cover
            raise AssertionError(node.kind)
        t[node.name] = out
    b.set_io([t["input"]], [t[graph.output]], signature_inputs=["input"], signature_outputs=["probs"])
    return b.finish()


def _snap(v: float, up: bool) -> float:
    """Round a calibrated bound outward onto a 2^-8-relative grid.

    Range statistics come out of BLAS reductions whose last bits differ between machines; snapping makes
    the int8 file (whose sha256 is pinned in manifests) the same wherever it is built.
    """
    if v == 0.0 or not math.isfinite(v):
        return 0.0 if v == 0.0 else v
    m, e = math.frexp(abs(v))
    q = m * 256.0
    q = math.ceil(q) if (up == (v > 0)) else math.floor(q)
    return math.copysign(math.ldexp(q / 256.0, e), v)


def _act_quant(lo: float, hi: float, min_scale: float = 0.0) -> Quant:
    lo, hi = _snap(min(lo, 0.0), up=False), _snap(max(hi, 0.0), up=True)
    if hi - lo < 1e-6:
        hi = lo + 1e-6
    scale = float(np.float32(max((hi - lo) / 255.0, min_scale)))
    zp = int(np.clip(np.round(-128.0 - lo / scale), -128, 127))
    return Quant.per_tensor(scale, zp)


# XNNPACK (the default CPU delegate, also on the Pi) refuses the whole model when an op's input-to-output
# rescale is >= 256 (conv, add, mul, mean, prelu). A tensor whose calibrated range is nearly empty (a ReLU
# that never fires on the calibration crops) would get such a tiny scale, so floor it with some margin.
_MAX_RESCALE = 128.0


def _min_output_scale(node: _Node, quants: Mapping[str, Quant]) -> float:
    s_in = [quants[i].scale[0] for i in node.inputs]
    if node.kind in ("conv", "dwconv"):
        w = node.attrs["w"].astype(np.float64)
        w_scale = np.abs(w).max() / 127.0  # the largest per-channel weight scale
        return s_in[0] * w_scale / _MAX_RESCALE
    if node.kind == "mul":
        return s_in[0] * s_in[1] / _MAX_RESCALE
    if node.kind == "prelu":
        alpha_span = max(float(node.attrs["alpha"].max()), 0.0) - min(float(node.attrs["alpha"].min()), 0.0)
        return s_in[0] * max(1.0, alpha_span / 255.0) / _MAX_RESCALE
    return max(s_in) / _MAX_RESCALE


def _prelu_as_mul_add(node: _Node) -> bool:
    """Whether the int8 graph spells this PReLU as MUL + ADD (see :func:`_emit_int8_prelu`)."""
    return node.kind == "prelu" and float(node.attrs["alpha"].max()) <= 1.0


def _prelu_slope_quants(node: _Node, q_src: Quant,
                        neg_range: tuple[float, float]) -> tuple[np.ndarray, Quant, Quant]:
    """(alpha - 1 as a 1x1x1xC array, its quantization, the quantization of relu((alpha - 1) * z))."""
    slope = (node.attrs["alpha"].astype(np.float64) - 1.0).reshape(1, 1, 1, -1)  # all <= 0
    # one-sided range [min, 0]: asymmetric int8 spends all 256 levels on it (zero point 127)
    q_slope = _act_quant(float(slope.min()), 0.0)
    s_slope = float(np.float32(q_slope.scale[0]))
    q_neg = _act_quant(*neg_range, min_scale=q_src.scale[0] * s_slope / _MAX_RESCALE)
    return slope, q_slope, q_neg


def _emit_int8_prelu(b: TFLiteBuilder, node: _Node, src: int, out: int, q_src: Quant,
                     neg_range: tuple[float, float]) -> None:
    """PReLU(z) = z + relu((alpha - 1) * z), exact for alpha <= 1 (every upstream slope is in [-0.36, 0.59]).

    XNNPACK has no int8 PRELU: each one fell back to TFLite's reference kernel and cut the graph into
    34 delegate partitions (int8 ~5x slower than float). A per-channel MUL with a fused ReLU and an ADD
    are delegated by XNNPACK and on Coral's Edge TPU op list. The extra rounding is that of the MUL's
    output, whose range is calibrated (``<name>.neg``) and is at most (1 - alpha) times z's negative part.
    """
    slope, q_slope, q_neg = _prelu_slope_quants(node, q_src, neg_range)
    sq = b.add_const(f"{node.name}.slope", _quantize_values(slope, q_slope), quant=q_slope)
    neg = b.add_tensor(f"{node.name}.neg", node.shape, np.int8, quant=q_neg)
    o = schema.MulOptionsT()
    o.fusedActivationFunction = schema.ActivationFunctionType.RELU
    s_slope = float(np.float32(q_slope.scale[0]))
    version = 3 if q_src.scale[0] * s_slope / q_neg.scale[0] >= 1.0 else 2
    b.add_operator(Op.MUL, [src, sq], [neg], o, version=version)
    b.add_operator(Op.ADD, [src, neg], [out], schema.AddOptionsT(), version=2)


def _weight_quant(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 per channel along ``axis``: (int8 weights, float32 scales)."""
    other = tuple(i for i in range(w.ndim) if i != axis)
    absmax = np.abs(w.astype(np.float64)).max(axis=other)
    scale = np.where(absmax > 0, absmax / 127.0, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w.astype(np.float64) / scale.astype(np.float64).reshape(shape)), -127, 127)
    return q.astype(np.int8), scale


def _quantize_values(x: np.ndarray, q: Quant) -> np.ndarray:
    v = np.round(x.astype(np.float64) / q.scale[0]) + q.zero_point[0]
    return np.clip(v, -128, 127).astype(np.int8)


_BLAS_THREAD_SYMBOLS = (  # (set, get) pairs of the OpenBLAS builds numpy ships or links
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _openblas_thread_control():
    """(set, get) for the OpenBLAS that numpy loaded, found through /proc/self/maps; None elsewhere."""
    try:
        with open("/proc/self/maps") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # already mapped: this only returns a handle
        except OSError:
            continue
        for set_name, get_name in _BLAS_THREAD_SYMBOLS:
            setter, getter = getattr(lib, set_name, None), getattr(lib, get_name, None)
            if setter is not None and getter is not None:
                return setter, getter
    return None


@contextlib.contextmanager
def _single_threaded_blas():
    """Run BLAS on one thread for the duration.

    The calibration pass makes hundreds of mid-sized GEMM calls; on a busy machine OpenBLAS's threads
    spin waiting for each other and the pass takes 3-4x longer than on one thread. Best effort: other
    BLAS builds are left alone (only speed is at stake, never the result).
    """
    control = _openblas_thread_control()
    if control is None:
        yield
        return
    setter, getter = control
    before = int(getter())
    setter(1)
    try:
        yield
    finally:
        setter(before)


def calibrate_ranges(forward, calibration: np.ndarray, chunk: int) -> dict[str, tuple[float, float]]:
    """Activation ranges (min, max per tensor name) over a calibration set, in float64, ``chunk``
    inputs per numpy batch; ``forward(batch, observe)`` runs a graph and calls ``observe(name, array)``
    for every activation. Shared by the converters that quantize their own graphs."""
    ranges: dict[str, tuple[float, float]] = {}

    def observe(name: str, arr: np.ndarray) -> None:
        lo, hi = float(arr.min()), float(arr.max())
        if name in ranges:
            lo, hi = min(lo, ranges[name][0]), max(hi, ranges[name][1])
        ranges[name] = (lo, hi)

    with _single_threaded_blas():
        for start in range(0, len(calibration), chunk):
            forward(calibration[start : start + chunk], observe)
    return ranges


def _calibrate(graph: _Graph, calibration: np.ndarray) -> dict[str, tuple[float, float]]:
    return calibrate_ranges(lambda batch, observe: _np_forward(graph, batch, np.float64, observe), calibration, _CALIB_CHUNK)


# Largest power-of-two boost of a channel in _equalize: a channel that barely fires on the calibration
# crops must not push its conv's weight scales (and so the XNNPACK rescale floor) up without bound.
_EQUALIZE_MAX_SHIFT = 4


def _channel_extremes(graph: _Graph, calibration: np.ndarray,
                      names: set[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per-channel (min, max) over the calibration crops of the tensors in ``names``."""
    ext: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def observe(name: str, arr: np.ndarray) -> None:
        if name in names:
            lo, hi = arr.min(axis=(0, 1, 2)), arr.max(axis=(0, 1, 2))
            if name in ext:
                lo, hi = np.minimum(ext[name][0], lo), np.maximum(ext[name][1], hi)
            ext[name] = (lo, hi)

    with _single_threaded_blas():
        for start in range(0, len(calibration), _CALIB_CHUNK):
            _np_forward(graph, calibration[start : start + _CALIB_CHUNK], np.float64, observe)
    return ext


def _prelu_channel_gain(lo: np.ndarray, hi: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Largest s_c that keeps each per-tensor range around a PReLU (z, z's PReLU, relu((alpha-1) z)) as is."""
    lo, hi, alpha = np.minimum(lo, 0.0), np.maximum(hi, 0.0), alpha.astype(np.float64)
    neg_z = -lo
    y_hi = np.maximum(hi, alpha * lo)  # a negative slope maps negative z to positive outputs
    y_lo = -np.minimum(alpha * lo, 0.0)
    neg = (1.0 - alpha) * neg_z
    gain = np.full(lo.shape, np.inf)
    for ext in (hi, neg_z, y_hi, y_lo, np.maximum(neg, 0.0)):
        top = ext.max()
        ok = ext > 0
        gain[ok] = np.minimum(gain[ok], top / ext[ok])
    return gain


def _equalize(graph: _Graph, calibration: np.ndarray) -> tuple[_Graph, int]:
    """Balance the channels of every conv -> PReLU [-> pad] -> depthwise chain (int8 graph only).

    The conv's output, the PReLU's MUL/ADD tensors and the depthwise input are quantized per tensor, so a
    channel much smaller than the largest one keeps few int8 levels. Scaling conv output channel c by
    s_c (weights and bias) and the depthwise weights of channel c by 1 / s_c computes the same function
    (PReLU commutes with a positive per-channel scale, zero padding too); both convs have per-channel
    weight scales, so the weights lose nothing. s_c is the largest power of two (at most
    2^_EQUALIZE_MAX_SHIFT) that keeps the channel inside every one of those tensors' calibrated ranges, so
    no range widens; powers of two are exact in float32 and the statistics only pick the exponent.
    Measured on the golden crops: logit RMS error of int8 V2 -18 %, V1SE -5 %.
    """
    users: dict[str, list[_Node]] = {}
    for node in graph.nodes:
        for i in node.inputs:
            users.setdefault(i, []).append(node)

    def only_user(name: str) -> _Node | None:
        u = users.get(name, [])
        return u[0] if len(u) == 1 and name != graph.output else None

    chains: list[tuple[_Node, _Node, _Node]] = []  # conv, its PReLU, the depthwise conv after it
    for node in graph.nodes:
        if node.kind != "conv" and node.kind != "dwconv":
            continue
        act = only_user(node.name)
        if act is None or act.kind != "prelu" or node.attrs["relu"]:
            continue
        nxt = only_user(act.name)
        if nxt is not None and nxt.kind == "pad":
            nxt = only_user(nxt.name)
        if nxt is not None and nxt.kind == "dwconv":
            chains.append((node, act, nxt))
    if not chains:
        return graph, 0
    ext = _channel_extremes(graph, calibration, {c.name for c, _, _ in chains})
    out_scale: dict[str, np.ndarray] = {}  # producer conv -> s
    in_scale: dict[str, np.ndarray] = {}  # depthwise consumer -> s
    for conv, act, dw in chains:
        gain = _prelu_channel_gain(*ext[conv.name], act.attrs["alpha"])
        # floor, not round: a boosted channel must stay inside every tensor's calibrated range
        shift = np.floor(np.log2(np.where(np.isfinite(gain), gain, 1.0)))
        out_scale[conv.name] = in_scale[dw.name] = np.exp2(np.clip(shift, 0, _EQUALIZE_MAX_SHIFT))
    nodes = []
    for node in graph.nodes:
        if node.name in out_scale or node.name in in_scale:
            w = node.attrs["w"].astype(np.float64)
            b = node.attrs["b"].astype(np.float64)
            if node.name in out_scale:  # output channel c times s_c: OHWI (conv) or 1HWC (depthwise) weights
                s = out_scale[node.name]
                w = w * (s.reshape(-1, 1, 1, 1) if node.kind == "conv" else s.reshape(1, 1, 1, -1))
                b = b * s
            if node.name in in_scale:  # a depthwise conv: input channel c is output channel c
                w = w / in_scale[node.name].reshape(1, 1, 1, -1)
            attrs = dict(node.attrs, w=w.astype(np.float32), b=b.astype(np.float32))
            node = _Node(node.kind, node.name, node.inputs, node.shape, attrs)
        nodes.append(node)
    return _Graph(graph.input_shape, nodes, graph.output), len(chains)


def _emit_int8(graph: _Graph, ranges: Mapping[str, tuple[float, float]], description: str) -> bytes:
    b = TFLiteBuilder(description)
    # Raw uint8 BGR goes straight in; the shift to int8 (scale 1, zero point -128) is exact.
    raw = b.add_tensor("input", graph.input_shape, np.uint8, quant=Quant.per_tensor(1.0, 0))
    q_in = Quant.per_tensor(1.0, -128)
    first = b.add_tensor("input_int8", graph.input_shape, np.int8, quant=q_in)
    b.add_operator(Op.QUANTIZE, [raw], [first])
    t = {"input": first}
    quants: dict[str, Quant] = {"input": q_in}
    fixed_1_256 = Quant.per_tensor(1.0 / 256.0, -128)  # TFLite's int8 spec for LOGISTIC and SOFTMAX outputs
    for node in graph.nodes:
        a = node.attrs
        if node.kind in ("pad", "reshape"):
            q_out = quants[node.inputs[0]]  # both kernels require the output to share the input's params
        elif node.kind in ("logistic", "softmax"):
            q_out = fixed_1_256
        elif _prelu_as_mul_add(node):  # the ADD of z and relu((alpha - 1) * z)
            q_src = quants[node.inputs[0]]
            q_neg = _prelu_slope_quants(node, q_src, ranges[f"{node.name}.neg"])[2]
            q_out = _act_quant(*ranges[node.name], min_scale=max(q_src.scale[0], q_neg.scale[0]) / _MAX_RESCALE)
        else:
            q_out = _act_quant(*ranges[node.name], min_scale=_min_output_scale(node, quants))
        quants[node.name] = q_out
        out = b.add_tensor(node.name, node.shape, np.int8, quant=q_out)
        src = t[node.inputs[0]]
        if node.kind in ("conv", "dwconv"):
            axis = 3 if node.kind == "dwconv" else 0
            wq, ws = _weight_quant(a["w"], axis)
            w = b.add_const(f"{node.name}.weight", wq, quant=Quant.per_axis(ws, None, axis))
            in_scale = np.float64(np.float32(quants[node.inputs[0]].scale[0]))
            bias_scale = (in_scale * ws.astype(np.float64)).astype(np.float32)
            bq = np.round(a["b"].astype(np.float64) / bias_scale.astype(np.float64))
            bq = np.clip(bq, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
            bias = b.add_const(f"{node.name}.bias", bq, quant=Quant.per_axis(bias_scale, None, 0))
            op = Op.DEPTHWISE_CONV_2D if node.kind == "dwconv" else Op.CONV_2D
            b.add_operator(op, [src, w, bias], [out], _conv_options(node), version=3)
        elif _prelu_as_mul_add(node):
            _emit_int8_prelu(b, node, src, out, quants[node.inputs[0]], ranges[f"{node.name}.neg"])
        elif node.kind == "prelu":  # a slope > 1: no MUL + ADD form, keep the (reference-kernel) PRELU
            alpha = a["alpha"].reshape(1, 1, -1)
            q_alpha = _act_quant(float(alpha.min()), float(alpha.max()))
            aq = b.add_const(f"{node.name}.alpha", _quantize_values(alpha, q_alpha), quant=q_alpha)
            b.add_operator(Op.PRELU, [src, aq], [out])
        elif node.kind == "mul":
            s_in = [quants[i].scale[0] for i in node.inputs]
            version = 3 if s_in[0] * s_in[1] / q_out.scale[0] >= 1.0 else 2
            b.add_operator(Op.MUL, [t[i] for i in node.inputs], [out], schema.MulOptionsT(), version=version)
        elif not _emit_common(b, node, t, out, int8=True):  # pragma: no cover
            raise AssertionError(node.kind)
        t[node.name] = out
    b.set_io([raw], [t[graph.output]], signature_inputs=["input"], signature_outputs=["probs"])
    return b.finish()


# ------------------------------------------------------------------------------------------------ public API


def convert_minifasnet(state_dict: Mapping[str, np.ndarray], *, input_size: tuple[int, int] = (80, 80)) -> bytes:
    """Float32 TFLite bytes for a MiniFASNetV2/V1SE state_dict (keys without ``module.``).

    Input ``1xHxWx3`` float32 BGR 0..255, output ``1x3`` softmax (index 1 = live). Deterministic.
    """
    t0 = time.monotonic()
    graph = _build_graph(state_dict, input_size)
    variant = model_variant(state_dict)
    data = _emit_float(graph, f"{variant} float32 {input_size[0]}x{input_size[1]} (edge converter)")
    log.info("converted %s to float32 TFLite: %d ops, %d bytes, %.2f s", variant, len(graph.nodes), len(data),
             time.monotonic() - t0)
    return data


def _check_calibration(calibration, input_size: tuple[int, int]) -> np.ndarray:
    arr = np.asarray(calibration)
    h, w = input_size
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (h, w, 3) or arr.shape[0] < 1:
        raise ValueError(f"calibration must be a (N, {h}, {w}, 3) uint8 BGR array of face crops with N >= 1, "
                         f"got {arr.dtype} {arr.shape}")
    return arr


def quantize_minifasnet(state_dict: Mapping[str, np.ndarray], calibration: np.ndarray, *,
                        input_size: tuple[int, int] = (80, 80)) -> bytes:
    """Full-int8 TFLite bytes for a MiniFASNetV2/V1SE state_dict.

    ``calibration``: ``(N, H, W, 3)`` uint8 BGR face crops prepared exactly like runtime inputs; activation
    ranges are their min/max through the float graph. Weights are symmetric int8 per output channel, biases
    int32. Input ``1xHxWx3`` uint8 (raw pixels, scale 1, zero point 0); output ``1x3`` int8 softmax with
    scale 1/256, zero point -128 (dequantize with the output's TensorInfo). Deterministic for a given
    calibration array.
    """
    t0 = time.monotonic()
    h, w = (int(v) for v in input_size)
    crops = _check_calibration(calibration, (h, w))
    graph, chains = _equalize(_build_graph(state_dict, (h, w)), crops)
    ranges = _calibrate(graph, crops)
    variant = model_variant(state_dict)
    data = _emit_int8(graph, ranges, f"{variant} int8 {h}x{w} (edge converter, {len(crops)} calibration crops)")
    log.info("quantized %s to int8 TFLite on %d crops: %d bytes, %.2f s", variant, len(crops), len(data),
             time.monotonic() - t0)
    return data
