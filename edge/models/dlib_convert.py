"""Convert dlib's face-recognition ResNet into TFLite (float32 and full int8), without dlib or torch.

The weights come from :func:`edge.models.dlib_resnet.load_dlib_resnet` (the bounded ``.dat`` reader).
The graph folds each ``affine_`` layer into its convolution and the input normalisation
``(pixel - mean) / 256`` into the first convolution (padding 0, so the fold is exact), and spells dlib's
``add_prev`` of two branches of different shapes as PAD (zeros at the end of the smaller one's channels,
rows and columns: dlib places the smaller tensor at channel 0 / row 0 / col 0) followed by ADD with a
fused ReLU.

Model contract: input ``1x150x150x3`` RGB chip (dlib's ``get_face_chip(size=150, padding=0.25)``),
raw 0..255 values; output ``1x128`` descriptor (Euclidean distance between descriptors, dlib's
customary threshold 0.6). Float32 takes a float32 input; int8 takes the uint8 chip unchanged and returns
an int8 descriptor (dequantize with the output's scale and zero point).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from edge.models.dlib_resnet import INPUT_SIZE, ConvLayer, DlibResNet
from edge.models.minifasnet import _act_quant, _single_threaded_blas, _weight_quant, _MAX_RESCALE, calibrate_ranges
from edge.models.tflite_writer import Op, Quant, TFLiteBuilder, schema

log = logging.getLogger(__name__)

__all__ = ["convert_dlib_resnet", "quantize_dlib_resnet", "forward_numpy"]

_CALIB_CHUNK = 8  # chips per numpy batch: the 72x72x(7*7*3) im2col of the stem is ~25 MB per chip in float64


@dataclass
class _Node:
    kind: str  # conv | maxpool | avgpool | pad | add | mean | reshape
    name: str
    inputs: tuple[str, ...]
    shape: tuple[int, ...]  # NHWC, batch 1
    attrs: dict = field(default_factory=dict)


def _fold(c: ConvLayer, *, means=None) -> tuple[np.ndarray, np.ndarray]:
    """(OHWI weights, bias) of conv + affine, in float64; ``means`` folds ``(x - mean) / 256`` in too."""
    w = c.weight.astype(np.float64)  # O I H W
    b = c.bias.astype(np.float64)
    g = c.gamma.astype(np.float64)
    w = w * g[:, None, None, None]
    b = b * g + c.beta.astype(np.float64)
    if means is not None:
        m = np.asarray(means, np.float64)
        b = b - (w.sum(axis=(2, 3)) * m[None, :]).sum(axis=1) / 256.0
        w = w / 256.0
    return w.transpose(0, 2, 3, 1), b


def _build_graph(net: DlibResNet) -> list[_Node]:
    nodes: list[_Node] = []
    shapes = {"input": (1, INPUT_SIZE, INPUT_SIZE, 3)}

    def add(kind, name, inputs, shape, **attrs) -> str:
        nodes.append(_Node(kind, name, tuple(inputs), tuple(int(s) for s in shape), attrs))
        shapes[name] = tuple(int(s) for s in shape)
        return name

    def conv(name, x, c: ConvLayer, *, relu: bool, means=None) -> str:
        w, b = _fold(c, means=means)
        _, h, wd, _ = shapes[x]
        k = w.shape[1]
        if c.pad == 0:
            padding, ho, wo = "VALID", (h - k) // c.stride + 1, (wd - k) // c.stride + 1
        elif c.stride == 1 and c.pad == k // 2:
            padding, ho, wo = "SAME", h, wd  # odd kernel, stride 1: TFLite SAME pads symmetrically like dlib
        else:  # pragma: no cover - the parser admits only the two forms above
            raise ValueError(f"{name}: padding {c.pad} with stride {c.stride} is not in this architecture")
        return add("conv", name, [x], (1, ho, wo, w.shape[0]), w=w, b=b, stride=c.stride, padding=padding, relu=relu)

    def pad_to(name, x, shape) -> str:
        s = shapes[x]
        if s == shape:
            return x
        pads = ((0, 0), (0, shape[1] - s[1]), (0, shape[2] - s[2]), (0, shape[3] - s[3]))
        return add("pad", name, [x], shape, pads=pads)

    x = conv("stem", "input", net.stem, relu=True, means=net.means_rgb)
    _, h, w, c = shapes[x]
    x = add("maxpool", "stem.pool", [x], (1, (h - 3) // 2 + 1, (w - 3) // 2 + 1, c), k=3, stride=2)
    for i, blk in enumerate(net.blocks):
        p = f"block{i}"
        y = conv(f"{p}.conv1", x, blk.conv1, relu=True)
        y = conv(f"{p}.conv2", y, blk.conv2, relu=False)
        skip = x
        if blk.down:
            _, h, w, c = shapes[x]
            skip = add("avgpool", f"{p}.skip", [x], (1, (h - 2) // 2 + 1, (w - 2) // 2 + 1, c), k=2, stride=2)
        # dlib's add_prev: the output has the larger size in every dimension; the smaller input is zero-padded
        # at the end (it sits at channel 0, row 0, column 0).
        out = tuple(max(a, b) for a, b in zip(shapes[y], shapes[skip]))
        y = pad_to(f"{p}.conv2.pad", y, out)
        skip = pad_to(f"{p}.skip.pad", skip, out)
        x = add("add", f"{p}.out", [skip, y], out, relu=True)
    c = shapes[x][3]
    x = add("mean", "pool", [x], (1, 1, 1, c))
    fc = net.fc.astype(np.float64).T.reshape(net.fc.shape[1], 1, 1, c)  # (out, 1, 1, in) = a 1x1 conv
    x = add("conv", "fc", [x], (1, 1, 1, fc.shape[0]), w=fc, b=np.zeros(fc.shape[0]), stride=1, padding="VALID",
            relu=False)
    add("reshape", "descriptor", [x], (1, fc.shape[0]))
    return nodes


# ------------------------------------------------------------------------------------------ numpy forward


def _np_conv(x: np.ndarray, node: _Node, dtype) -> np.ndarray:
    a = node.attrs
    w = a["w"].astype(dtype)
    o, kh, kw, i = w.shape
    if a["padding"] == "SAME":
        p = kh // 2
        x = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    s = a["stride"]
    n, hh, ww, _ = x.shape
    ho, wo = (hh - kh) // s + 1, (ww - kw) // s + 1
    if kh == kw == 1 and s == 1:
        col = x.reshape(-1, i)
    else:
        cols = [x[:, dy : dy + s * (ho - 1) + 1 : s, dx : dx + s * (wo - 1) + 1 : s, :]
                for dy in range(kh) for dx in range(kw)]
        col = np.concatenate(cols, axis=-1).reshape(n * ho * wo, -1)
    y = (col @ w.reshape(o, -1).T).reshape(n, ho, wo, o)
    y += a["b"].astype(dtype)
    if a["relu"]:
        np.maximum(y, 0, out=y)
    return y


def _np_pool(x: np.ndarray, k: int, s: int, op) -> np.ndarray:
    n, hh, ww, c = x.shape
    ho, wo = (hh - k) // s + 1, (ww - k) // s + 1
    win = [x[:, dy : dy + s * (ho - 1) + 1 : s, dx : dx + s * (wo - 1) + 1 : s, :] for dy in range(k) for dx in range(k)]
    return op(np.stack(win), axis=0)


def _np_forward(nodes: list[_Node], x: np.ndarray, dtype=np.float64, observe=None) -> np.ndarray:
    cache = {"input": x.astype(dtype)}
    if observe:
        observe("input", cache["input"])
    for node in nodes:
        ins = [cache[i] for i in node.inputs]
        if node.kind == "conv":
            y = _np_conv(ins[0], node, dtype)
        elif node.kind == "maxpool":
            y = _np_pool(ins[0], node.attrs["k"], node.attrs["stride"], np.max)
        elif node.kind == "avgpool":
            y = _np_pool(ins[0], node.attrs["k"], node.attrs["stride"], np.mean)
        elif node.kind == "pad":
            y = np.pad(ins[0], node.attrs["pads"])
        elif node.kind == "add":
            y = np.maximum(ins[0] + ins[1], 0)
        elif node.kind == "mean":
            y = ins[0].mean(axis=(1, 2), keepdims=True)
        elif node.kind == "reshape":
            y = ins[0].reshape((ins[0].shape[0],) + node.shape[1:])
        else:  # pragma: no cover
            raise AssertionError(node.kind)
        cache[node.name] = y
        if observe:
            observe(node.name, y)
    return cache[nodes[-1].name]


def forward_numpy(net: DlibResNet, chips: np.ndarray, *, dtype=np.float64) -> np.ndarray:
    """Reference descriptors ``(N, 128)`` of ``(N, 150, 150, 3)`` uint8 RGB chips (the graph the converter writes)."""
    nodes = _build_graph(net)
    chips = _check_chips(chips)
    out = []
    with _single_threaded_blas():
        for start in range(0, len(chips), _CALIB_CHUNK):
            out.append(_np_forward(nodes, chips[start : start + _CALIB_CHUNK], dtype))
    return np.concatenate(out).astype(np.float32)


def _check_chips(chips) -> np.ndarray:
    arr = np.asarray(chips)
    if arr.dtype != np.uint8 or arr.ndim != 4 or arr.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3) or len(arr) < 1:
        raise ValueError(f"chips must be a (N, {INPUT_SIZE}, {INPUT_SIZE}, 3) uint8 RGB array with N >= 1, "
                         f"got {arr.dtype} {arr.shape}")
    return arr


# ------------------------------------------------------------------------------------------------ emitters


def _conv_options(node: _Node):
    o = schema.Conv2DOptionsT()
    o.padding = schema.Padding.SAME if node.attrs["padding"] == "SAME" else schema.Padding.VALID
    o.strideH = o.strideW = node.attrs["stride"]
    o.dilationHFactor = o.dilationWFactor = 1
    o.fusedActivationFunction = (schema.ActivationFunctionType.RELU if node.attrs["relu"]
                                 else schema.ActivationFunctionType.NONE)
    return o


def _pool_options(node: _Node):
    o = schema.Pool2DOptionsT()
    o.padding = schema.Padding.VALID
    o.strideH = o.strideW = node.attrs["stride"]
    o.filterHeight = o.filterWidth = node.attrs["k"]
    o.fusedActivationFunction = schema.ActivationFunctionType.NONE
    return o


def _emit_common(b: TFLiteBuilder, node: _Node, t: dict[str, int], out: int, *, int8: bool) -> bool:
    ins = [t[i] for i in node.inputs]
    v2 = 2 if int8 else 1
    if node.kind == "maxpool":
        b.add_operator(Op.MAX_POOL_2D, ins, [out], _pool_options(node), version=v2)
    elif node.kind == "avgpool":
        b.add_operator(Op.AVERAGE_POOL_2D, ins, [out], _pool_options(node), version=v2)
    elif node.kind == "pad":
        pads = b.add_const(f"{node.name}.paddings", np.asarray(node.attrs["pads"], dtype=np.int32))
        b.add_operator(Op.PAD, [ins[0], pads], [out], schema.PadOptionsT(), version=v2)
    elif node.kind == "add":
        o = schema.AddOptionsT()
        o.fusedActivationFunction = schema.ActivationFunctionType.RELU
        b.add_operator(Op.ADD, ins, [out], o, version=v2)
    elif node.kind == "mean":
        axes = b.add_const(f"{node.name}.axes", np.asarray([1, 2], dtype=np.int32))
        o = schema.ReducerOptionsT()
        o.keepDims = True
        b.add_operator(Op.MEAN, [ins[0], axes], [out], o, version=v2)
    elif node.kind == "reshape":
        shape = b.add_const(f"{node.name}.shape", np.asarray(node.shape, dtype=np.int32))
        o = schema.ReshapeOptionsT()
        o.newShape = list(node.shape)
        b.add_operator(Op.RESHAPE, [ins[0], shape], [out], o)
    else:
        return False
    return True


def _emit_float(nodes: list[_Node], description: str) -> bytes:
    b = TFLiteBuilder(description)
    t = {"input": b.add_tensor("input", (1, INPUT_SIZE, INPUT_SIZE, 3), np.float32)}
    for node in nodes:
        out = b.add_tensor(node.name, node.shape, np.float32)
        if node.kind == "conv":
            w = b.add_const(f"{node.name}.weight", node.attrs["w"].astype(np.float32))
            bias = b.add_const(f"{node.name}.bias", node.attrs["b"].astype(np.float32))
            b.add_operator(Op.CONV_2D, [t[node.inputs[0]], w, bias], [out], _conv_options(node))
        elif not _emit_common(b, node, t, out, int8=False):  # pragma: no cover
            raise AssertionError(node.kind)
        t[node.name] = out
    b.set_io([t["input"]], [t[nodes[-1].name]], signature_inputs=["input"], signature_outputs=["descriptor"])
    return b.finish()


def _calibrate(nodes: list[_Node], chips: np.ndarray) -> dict[str, tuple[float, float]]:
    return calibrate_ranges(lambda batch, observe: _np_forward(nodes, batch, np.float64, observe), chips, _CALIB_CHUNK)


def _emit_int8(nodes: list[_Node], ranges, description: str) -> bytes:
    b = TFLiteBuilder(description)
    shape = (1, INPUT_SIZE, INPUT_SIZE, 3)
    raw = b.add_tensor("input", shape, np.uint8, quant=Quant.per_tensor(1.0, 0))
    q_in = Quant.per_tensor(1.0, -128)  # uint8 -> int8 shift: exact
    first = b.add_tensor("input_int8", shape, np.int8, quant=q_in)
    b.add_operator(Op.QUANTIZE, [raw], [first])
    t = {"input": first}
    quants: dict[str, Quant] = {"input": q_in}
    for node in nodes:
        a = node.attrs
        if node.kind in ("maxpool", "avgpool", "pad", "reshape"):
            q_out = quants[node.inputs[0]]  # these kernels want the output to share the input's parameters
        elif node.kind == "conv":
            w_scale = np.abs(a["w"]).max() / 127.0
            q_out = _act_quant(*ranges[node.name], min_scale=quants[node.inputs[0]].scale[0] * w_scale / _MAX_RESCALE)
        else:
            q_out = _act_quant(*ranges[node.name],
                               min_scale=max(quants[i].scale[0] for i in node.inputs) / _MAX_RESCALE)
        quants[node.name] = q_out
        out = b.add_tensor(node.name, node.shape, np.int8, quant=q_out)
        if node.kind == "conv":
            wq, ws = _weight_quant(a["w"], 0)
            w = b.add_const(f"{node.name}.weight", wq, quant=Quant.per_axis(ws, None, 0))
            in_scale = np.float64(np.float32(quants[node.inputs[0]].scale[0]))
            bias_scale = (in_scale * ws.astype(np.float64)).astype(np.float32)
            bq = np.round(a["b"].astype(np.float64) / bias_scale.astype(np.float64))
            bq = np.clip(bq, np.iinfo(np.int32).min, np.iinfo(np.int32).max).astype(np.int32)
            bias = b.add_const(f"{node.name}.bias", bq, quant=Quant.per_axis(bias_scale, None, 0))
            b.add_operator(Op.CONV_2D, [t[node.inputs[0]], w, bias], [out], _conv_options(node), version=3)
        elif not _emit_common(b, node, t, out, int8=True):  # pragma: no cover
            raise AssertionError(node.kind)
        t[node.name] = out
    b.set_io([raw], [t[nodes[-1].name]], signature_inputs=["input"], signature_outputs=["descriptor"])
    return b.finish()


# ------------------------------------------------------------------------------------------------ public API


def convert_dlib_resnet(net: DlibResNet) -> bytes:
    """Float32 TFLite bytes: ``1x150x150x3`` float32 RGB 0..255 -> ``1x128`` descriptor. Deterministic."""
    t0 = time.monotonic()
    nodes = _build_graph(net)
    data = _emit_float(nodes, "dlib face-recognition ResNet v1 float32 150x150 RGB (edge converter)")
    log.info("converted dlib ResNet to float32 TFLite: %d ops, %d bytes, %.2f s", len(nodes), len(data),
             time.monotonic() - t0)
    return data


def quantize_dlib_resnet(net: DlibResNet, chips: np.ndarray) -> bytes:
    """Full-int8 TFLite bytes; activation ranges are the min/max over ``chips`` ((N,150,150,3) uint8 RGB,
    aligned exactly as at run time) through the float64 graph. Per-channel int8 weights, int32 biases;
    uint8 input (scale 1, zero point 0), int8 descriptor output. Deterministic for a given ``chips``."""
    t0 = time.monotonic()
    chips = _check_chips(chips)
    nodes = _build_graph(net)
    ranges = _calibrate(nodes, chips)
    data = _emit_int8(nodes, ranges, f"dlib face-recognition ResNet v1 int8 150x150 RGB (edge converter, "
                                     f"{len(chips)} calibration chips)")
    log.info("quantized dlib ResNet to int8 on %d chips: %d bytes, %.2f s", len(chips), len(data),
             time.monotonic() - t0)
    return data
