"""MiniFASNet -> TFLite converter: golden agreement, an independent numpy reference, int8, determinism.

The reference forward pass below works on the raw state_dict in NCHW with un-folded BatchNorm, written
from ARCHITECTURE.md and sharing no code with the converter, so it checks the TFLite path independently.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from edge.errors import CheckpointError
from edge.models.golden import GoldenReport, compare, load_golden, run_model, verify_golden
from edge.models.minifasnet import convert_minifasnet, model_variant, quantize_minifasnet
from edge.models.tflite_writer import schema
from edge.tflite import load_interpreter

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SILENT_FACE = SHARED / "models" / "silent-face"
GOLDEN = SILENT_FACE / "golden"
V2_PTH = SILENT_FACE / "2.7_80x80_MiniFASNetV2.pth"
V1SE_PTH = SILENT_FACE / "4_0_0_80x80_MiniFASNetV1SE.pth"

needs_shared = pytest.mark.skipif(
    not (V2_PTH.exists() and V1SE_PTH.exists() and (GOLDEN / "minifasnet_v2_crops.npz").exists()),
    reason=f"Silent-Face weights/golden crops not found under {SILENT_FACE} (expected ../shared beside the repo)",
)

EPS = 1e-5


# ------------------------------------------------------------------ independent reference (NCHW, float64)


def _conv(x, w, stride=1, pad=0, groups=1):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    ho, wo = (h - kh) // stride + 1, (wd - kw) // stride + 1
    y = np.zeros((n, o, ho, wo))
    for dy in range(kh):
        for dx in range(kw):
            xs = x[:, :, dy : dy + stride * (ho - 1) + 1 : stride, dx : dx + stride * (wo - 1) + 1 : stride]
            if groups == 1:
                y += np.einsum("nchw,oc->nohw", xs, w[:, :, dy, dx], optimize=True)
            else:
                assert groups == c == o
                y += xs * w[:, 0, dy, dx][None, :, None, None]
    return y


def _bn(x, sd, p):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    m, v = sd[f"{p}.running_mean"].reshape(shape), sd[f"{p}.running_var"].reshape(shape)
    return (x - m) / np.sqrt(v + EPS) * sd[f"{p}.weight"].reshape(shape) + sd[f"{p}.bias"].reshape(shape)


def _prelu(x, a):
    return np.where(x > 0, x, x * a[None, :, None, None])


def _cb(x, sd, p, stride=1, pad=0, dw=False, act=True):
    y = _bn(_conv(x, sd[f"{p}.conv.weight"], stride, pad, x.shape[1] if dw else 1), sd, f"{p}.bn")
    return _prelu(y, sd[f"{p}.prelu.weight"]) if act else y


def _dw_block(x, sd, p, stride, residual):
    y = _cb(x, sd, f"{p}.conv")
    y = _cb(y, sd, f"{p}.conv_dw", stride, 1, dw=True)
    y = _cb(y, sd, f"{p}.project", act=False)
    if not residual:
        return y
    se = f"{p}.se_module"
    if f"{se}.fc1.weight" in sd:
        g = y.mean(axis=(2, 3), keepdims=True)
        g = np.maximum(_bn(_conv(g, sd[f"{se}.fc1.weight"]), sd, f"{se}.bn1"), 0)
        g = _bn(_conv(g, sd[f"{se}.fc2.weight"]), sd, f"{se}.bn2")
        y = y * (1 / (1 + np.exp(-g)))
    return x + y


def reference_forward(sd, crops_bgr_uint8):
    sd = {k: np.asarray(v, dtype=np.float64) for k, v in sd.items()}
    x = crops_bgr_uint8.astype(np.float64).transpose(0, 3, 1, 2)  # raw 0..255, no /255
    x = _cb(x, sd, "conv1", 2, 1)
    x = _cb(x, sd, "conv2_dw", 1, 1, dw=True)
    for down, stage in (("conv_23", "conv_3"), ("conv_34", "conv_4"), ("conv_45", "conv_5")):
        x = _dw_block(x, sd, down, 2, False)
        i = 0
        while f"{stage}.model.{i}.conv.conv.weight" in sd:
            x = _dw_block(x, sd, f"{stage}.model.{i}", 1, True)
            i += 1
    x = _cb(x, sd, "conv_6_sep")
    x = _cb(x, sd, "conv_6_dw", dw=True, act=False)
    x = x.reshape(len(x), -1) @ sd["linear.weight"].T
    x = _bn(x, sd, "bn") @ sd["prob.weight"].T
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


# ------------------------------------------------------------------ synthetic checkpoints (no shared data needed)


def synthetic_state_dict(seed: int, *, se: bool, input_size=(80, 80)) -> OrderedDict:
    rng = np.random.default_rng(seed)
    sd: OrderedDict[str, np.ndarray] = OrderedDict()

    def conv(p, o, i, k):
        sd[f"{p}.weight"] = rng.normal(0, math.sqrt(2 / (i * k * k)), (o, i, k, k)).astype(np.float32)

    def bn(p, c):
        sd[f"{p}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
        sd[f"{p}.bias"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[f"{p}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
        sd[f"{p}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
        sd[f"{p}.num_batches_tracked"] = np.array(100, dtype=np.int64)

    def cb(p, o, i, k, dw=False, act=True):
        conv(f"{p}.conv", o, 1 if dw else i, k)
        bn(f"{p}.bn", o)
        if act:
            sd[f"{p}.prelu.weight"] = rng.uniform(-0.2, 0.4, o).astype(np.float32)

    def block(p, c_in, inner, c_out, with_se=False):
        cb(f"{p}.conv", inner, c_in, 1)
        cb(f"{p}.conv_dw", inner, inner, 3, dw=True)
        cb(f"{p}.project", c_out, inner, 1, act=False)
        if with_se:
            conv(f"{p}.se_module.fc1", c_out // 4, c_out, 1)
            bn(f"{p}.se_module.bn1", c_out // 4)
            conv(f"{p}.se_module.fc2", c_out, c_out // 4, 1)
            bn(f"{p}.se_module.bn2", c_out)

    cb("conv1", 8, 3, 3)
    # the first conv sees raw 0..255 pixels: keep the activations in a sane range
    sd["conv1.conv.weight"] /= 128
    cb("conv2_dw", 8, 8, 3, dw=True)
    widths = {"conv_3": 12, "conv_4": 16, "conv_5": 16}
    c = 8
    for down, stage, n in (("conv_23", "conv_3", 2), ("conv_34", "conv_4", 3), ("conv_45", "conv_5", 2)):
        w = widths[stage]
        block(down, c, 2 * w, w)
        for i in range(n):
            block(f"{stage}.model.{i}", w, w // 2 + 3 * i, w, with_se=se and i == n - 1)
        c = w
    k = tuple((s + 15) // 16 for s in input_size)
    cb("conv_6_sep", 32, c, 1)
    sd["conv_6_dw.conv.weight"] = rng.normal(0, 0.2, (32, 1) + k).astype(np.float32)
    bn("conv_6_dw.bn", 32)
    sd["linear.weight"] = rng.normal(0, 0.2, (16, 32)).astype(np.float32)
    bn("bn", 16)
    sd["prob.weight"] = rng.normal(0, 0.5, (3, 16)).astype(np.float32)
    return sd


def _float_probs(model_bytes, crops, tmp_path, name="m.tflite"):
    path = tmp_path / name
    path.write_bytes(model_bytes)
    return run_model(path, crops)


@pytest.mark.parametrize("se", [False, True], ids=["V2-shaped", "V1SE-shaped"])
@pytest.mark.parametrize("size", [(80, 80), (48, 48), (56, 72)])
def test_synthetic_float_matches_reference(tmp_path, se, size):
    sd = synthetic_state_dict(1 + se, se=se, input_size=size)
    crops = np.random.default_rng(7).integers(0, 256, (4, size[0], size[1], 3), dtype=np.uint8)
    probs = _float_probs(convert_minifasnet(sd, input_size=size), crops, tmp_path)
    ref = reference_forward(sd, crops)
    assert np.abs(probs - ref).max() <= 1e-4
    assert model_variant(sd) == ("MiniFASNetV1SE" if se else "MiniFASNetV2")


def test_synthetic_int8_tracks_float(tmp_path):
    # random weights amplify quantization noise far more than trained ones: a loose sanity bound only
    sd = synthetic_state_dict(4, se=True)
    rng = np.random.default_rng(11)
    calib = rng.integers(0, 256, (24, 80, 80, 3), dtype=np.uint8)
    test = rng.integers(0, 256, (16, 80, 80, 3), dtype=np.uint8)
    q = _float_probs(quantize_minifasnet(sd, calib), test, tmp_path, "q.tflite")
    ref = reference_forward(sd, test)
    assert np.abs(q.sum(axis=1) - 1).max() <= 3 / 256
    assert (q.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.75
    assert np.abs(q - ref).mean() < 0.1


def test_int8_dead_relu_still_loads_with_xnnpack(tmp_path):
    # an SE branch whose ReLU never fires on the calibration crops has an empty range; its conv's rescale
    # must stay within what XNNPACK (the default CPU delegate) accepts, or the whole model fails to load
    sd = synthetic_state_dict(4, se=True)
    sd["conv_3.model.1.se_module.bn1.bias"][:] = -1000.0
    calib = np.random.default_rng(2).integers(0, 256, (8, 80, 80, 3), dtype=np.uint8)
    q = _float_probs(quantize_minifasnet(sd, calib), calib[:2], tmp_path, "q.tflite")
    np.testing.assert_allclose(q, reference_forward(sd, calib[:2]), atol=0.25)


def _unpack(model_bytes):
    return schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))


def test_int8_graph_is_integer_only_and_well_formed():
    sd = synthetic_state_dict(4, se=True)
    calib = np.random.default_rng(5).integers(0, 256, (8, 80, 80, 3), dtype=np.uint8)
    model = _unpack(quantize_minifasnet(sd, calib))
    sg = model.subgraphs[0]
    T = schema.TensorType
    assert sg.tensors[sg.inputs[0]].type == T.UINT8
    assert sg.tensors[sg.outputs[0]].type == T.INT8
    out_q = sg.tensors[sg.outputs[0]].quantization
    assert list(out_q.scale) == [1 / 256] and list(out_q.zeroPoint) == [-128]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    ops = {names[c.builtinCode] for c in model.operatorCodes}
    # PReLU is spelled MUL + ADD in int8 (XNNPACK has no int8 PRELU; see test_models_int8_delegation.py)
    assert ops == {"QUANTIZE", "PAD", "CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN", "LOGISTIC", "MUL",
                   "RESHAPE", "SOFTMAX"}
    for c in model.operatorCodes:
        assert c.deprecatedBuiltinCode == min(c.builtinCode, 127)
    for op in sg.operators:
        code = names[model.operatorCodes[op.opcodeIndex].builtinCode]
        for i in op.inputs:
            t = sg.tensors[i]
            if code in ("CONV_2D", "DEPTHWISE_CONV_2D") and i == op.inputs[2]:
                assert t.type == T.INT32 and len(t.quantization.scale) == t.shape[0]
            elif code in ("PAD", "MEAN", "RESHAPE") and i == op.inputs[1]:
                assert t.type == T.INT32 and t.quantization is None
            elif code == "QUANTIZE":
                assert t.type == T.UINT8
            else:
                assert t.type == T.INT8, (code, t.name)
                assert t.quantization is not None and len(t.quantization.scale) >= 1
        for i in op.outputs:
            assert sg.tensors[i].type == T.INT8
        if code == "LOGISTIC":
            q = sg.tensors[op.outputs[0]].quantization
            assert list(q.scale) == [1 / 256] and list(q.zeroPoint) == [-128]
    assert model.signatureDefs[0].signatureKey.decode() == "serving_default"


def test_signature_and_float_io(tmp_path):
    path = tmp_path / "f.tflite"
    path.write_bytes(convert_minifasnet(synthetic_state_dict(6, se=False)))
    interp, inputs, outputs = load_interpreter(path)
    assert list(interp.get_signature_list()) == ["serving_default"]
    assert inputs[0].shape == (1, 80, 80, 3) and inputs[0].dtype == np.float32 and not inputs[0].quantized
    assert outputs[0].shape == (1, 3) and outputs[0].dtype == np.float32


def test_bad_arguments():
    sd = synthetic_state_dict(8, se=False)
    with pytest.raises(ValueError, match="does not fit this checkpoint"):
        convert_minifasnet(sd, input_size=(96, 96))
    with pytest.raises(ValueError, match="uint8"):
        quantize_minifasnet(sd, np.zeros((4, 80, 80, 3), np.float32))
    with pytest.raises(ValueError, match="uint8"):
        quantize_minifasnet(sd, np.zeros((4, 64, 64, 3), np.uint8))
    broken = OrderedDict((k, v) for k, v in sd.items() if not k.startswith("conv_34.project"))
    with pytest.raises(CheckpointError, match="conv_34.project"):
        convert_minifasnet(broken)


def test_synthetic_determinism():
    sd = synthetic_state_dict(9, se=True)
    calib = np.random.default_rng(1).integers(0, 256, (8, 80, 80, 3), dtype=np.uint8)
    assert convert_minifasnet(sd) == convert_minifasnet(OrderedDict((f"module.{k}", v) for k, v in sd.items()))
    assert quantize_minifasnet(sd, calib) == quantize_minifasnet(sd, calib.copy())


# ------------------------------------------------------------------ upstream weights + golden crops


@pytest.fixture(scope="module")
def upstream():
    from edge.models.checkpoint import load_checkpoint

    crops, reference = load_golden(GOLDEN)
    return {
        "v2": load_checkpoint(V2_PTH),
        "v1se": load_checkpoint(V1SE_PTH),
        "crops": crops,
        "reference": reference,
    }


@needs_shared
def test_v2_float_golden(upstream, tmp_path):
    path = tmp_path / "v2.tflite"
    path.write_bytes(convert_minifasnet(upstream["v2"]))
    report = verify_golden(path, GOLDEN)
    assert isinstance(report, GoldenReport) and report.n == len(upstream["crops"]) == 204
    assert report.max_abs_dp <= 1e-4, report.summary()
    assert report.argmax_agreement == 1.0
    assert report.passed("float")


@needs_shared
@pytest.mark.requantizes
def test_v2_int8_golden_held_out(upstream, tmp_path):
    # calibrate on the even crops, judge on the odd ones the quantizer never saw, and on all of them
    crops, reference = upstream["crops"], upstream["reference"]
    path = tmp_path / "v2_int8.tflite"
    path.write_bytes(quantize_minifasnet(upstream["v2"], crops[0::2]))
    probs = run_model(path, crops)
    held_out = compare(probs[1::2], reference[1::2])
    assert held_out.passed("int8"), held_out.summary()
    report = verify_golden(path, GOLDEN)
    assert report.passed("int8"), report.summary()
    assert not report.passed("float")  # int8 is not float-exact: the float threshold is really stricter


@needs_shared
def test_v1se_float_matches_numpy_reference(upstream, tmp_path):
    crops = upstream["crops"][::17]  # 12 crops spread over the sources keep the numpy reference quick
    probs = _float_probs(convert_minifasnet(upstream["v1se"]), crops, tmp_path)
    ref = reference_forward(upstream["v1se"], crops)
    assert np.abs(probs - ref).max() <= 1e-4


@needs_shared
def test_v2_numpy_reference_matches_golden(upstream):
    # validates the reference itself against upstream PyTorch, so the V1SE check above means something
    crops = upstream["crops"][::17]
    ref = reference_forward(upstream["v2"], crops)
    assert np.abs(ref - upstream["reference"][::17]).max() <= 1e-4


@needs_shared
@pytest.mark.requantizes
def test_v1se_int8_tracks_float(upstream, tmp_path):
    crops = upstream["crops"]
    f = _float_probs(convert_minifasnet(upstream["v1se"]), crops, tmp_path, "f.tflite")
    q = _float_probs(quantize_minifasnet(upstream["v1se"], crops[0::2]), crops, tmp_path, "q.tflite")
    report = compare(q, f)
    assert report.passed("int8"), report.summary()


@needs_shared
@pytest.mark.requantizes
def test_upstream_determinism(upstream):
    assert convert_minifasnet(upstream["v1se"]) == convert_minifasnet(upstream["v1se"])
    calib = upstream["crops"][:16]
    assert quantize_minifasnet(upstream["v2"], calib) == quantize_minifasnet(upstream["v2"], calib)


# ------------------------------------------------------------------ golden check plumbing (no shared data needed)


def _write_golden(folder: Path, crops: np.ndarray, probs: np.ndarray, names=None) -> None:
    names = names if names is not None else [f"src/{i:03d}.jpg" for i in range(len(crops))]
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / "minifasnet_v2_crops.npz", crops=crops, names=np.array(names))
    rows = ["file,p0,p1_live,p2"] + [f"{n},{p[0]:.8f},{p[1]:.8f},{p[2]:.8f}" for n, p in zip(names, probs)]
    (folder / "minifasnet_v2_reference.csv").write_text("\n".join(rows) + "\n")


def test_verify_golden_on_a_synthetic_golden_set(tmp_path):
    sd = synthetic_state_dict(12, se=False)
    crops = np.random.default_rng(3).integers(0, 256, (6, 80, 80, 3), dtype=np.uint8)
    ref = reference_forward(sd, crops)
    # rows in the csv in reverse order: matching is by file name, not position
    _write_golden(tmp_path / "golden", crops, ref)
    csv_path = tmp_path / "golden" / "minifasnet_v2_reference.csv"
    head, *rows = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join([head] + rows[::-1]) + "\n")
    model = tmp_path / "m.tflite"
    model.write_bytes(convert_minifasnet(sd))
    report = verify_golden(model, tmp_path / "golden")
    assert report.n == 6 and report.max_abs_dp <= 1e-4 and report.passed("float") and report.passed("int8")
    with pytest.raises(ValueError, match="unknown model kind"):
        report.passed("fp16")


def test_compare_figures_and_thresholds():
    ref = np.array([[0.1, 0.8, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3], [0.0, 0.9, 0.1]])
    probs = ref.copy()
    probs[2] = [0.5, 0.4, 0.1]  # live -> attack: one disagreement out of four
    r = compare(probs, ref)
    assert r.n == 4 and r.argmax_agreement == 0.75
    assert r.max_abs_dp == pytest.approx(0.3) and r.max_abs_dp_live == pytest.approx(0.1)
    assert r.median_abs_dp_live == pytest.approx(0.0)
    assert not r.passed("int8") and not r.passed("float")
    assert compare(ref, ref).passed("float")


def test_golden_set_inconsistent(tmp_path):
    from edge.errors import ModelError

    crops = np.zeros((2, 80, 80, 3), np.uint8)
    _write_golden(tmp_path / "g", crops, np.full((2, 3), 1 / 3), names=["a.jpg", "b.jpg"])
    csv_path = tmp_path / "g" / "minifasnet_v2_reference.csv"
    csv_path.write_text(csv_path.read_text().replace("b.jpg", "c.jpg"))
    with pytest.raises(ModelError, match="inconsistent"):
        load_golden(tmp_path / "g")
    with pytest.raises(ModelError, match="cannot read the golden set"):
        load_golden(tmp_path / "absent")
