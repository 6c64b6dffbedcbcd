"""int8 graphs run inside one XNNPACK partition (LiteRT's default CPU delegate).

An op XNNPACK does not take in int8 falls back to TFLite's reference kernel and splits the graph; on this
x86 box that made int8 MiniFASNet ~5x slower than float (PRELU: 34 partitions). Only the input QUANTIZE
(uint8 -> int8) and the final SOFTMAX may stay outside, at the graph's edges. BlazeFace's RELUs can be
fused into their ADD/CONV_2D (blazeface_int8.build_int8(fuse_relus=True), what `edge models build` does).

Under qemu-user emulation (scripts/test-aarch64.sh sets EDGE_TEST_EMULATED) /sys is hidden, cpuinfo cannot
read the CPU's features and XNNPACK takes no int8 graph at all (0 partitions, seen with qemu 7.2). There the
partition count says nothing about the models, so these tests skip with that reason: the emulated run proves
the int8 graphs load and compute correctly on aarch64 (the other int8 tests), not how XNNPACK partitions
them, which is proven natively here and is to be confirmed on a real Pi (`edge bench`).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from test_models_minifasnet import reference_forward, synthetic_state_dict

from edge.models import blazeface_int8 as b8
from edge.models.golden import run_model
from edge.models.minifasnet import _build_graph, _equalize, _np_forward, quantize_minifasnet
from edge.models.tflite_writer import schema

REPO = Path(__file__).resolve().parents[1]

EDGE_OPS = {"QUANTIZE", "SOFTMAX"}


def _partitions(model_bytes: bytes):
    """(number of XNNPACK partitions, names of the ops left to TFLite's own kernels)."""
    from ai_edge_litert import interpreter as litert

    interp = litert.Interpreter(model_content=model_bytes, num_threads=1)
    interp.allocate_tensors()
    ops = interp._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    produced_by_delegate = {int(t) for o in delegates for t in o["outputs"]}
    # An op outside every partition produces a tensor that a partition, another such op or the graph
    # output reads; tensors crossing a partition boundary are produced by the DELEGATE node itself.
    producer = {int(t): o for o in ops if o["op_name"] != "DELEGATE" for t in o["outputs"]}
    wanted = {int(t) for o in delegates for t in o["inputs"]} | {int(d["index"]) for d in interp.get_output_details()}
    outside: dict[int, str] = {}
    todo = [t for t in wanted if t not in produced_by_delegate and t in producer]
    while todo:
        op = producer[todo.pop()]
        if op["index"] not in outside:
            outside[op["index"]] = op["op_name"]
            todo += [int(i) for i in op["inputs"] if int(i) in producer and int(i) not in produced_by_delegate]
    if not delegates and os.environ.get("EDGE_TEST_EMULATED"):
        pytest.skip(
            f"XNNPACK delegated nothing under {os.environ['EDGE_TEST_EMULATED']} emulation (cpuinfo cannot read "
            "/sys, so no int8 kernels): partitioning is proven natively, not here; confirm on a real Pi"
        )
    return len(delegates), sorted(outside.values())


def _op_names(model_bytes: bytes) -> set[str]:
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_bytes, 0))
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return {names[c.builtinCode] for c in model.operatorCodes}


@pytest.mark.parametrize("se", [False, True], ids=["V2-shaped", "V1SE-shaped"])
def test_minifasnet_int8_is_one_xnnpack_partition(se):
    sd = synthetic_state_dict(4, se=se)
    calib = np.random.default_rng(5).integers(0, 256, (8, 80, 80, 3), dtype=np.uint8)
    q = quantize_minifasnet(sd, calib)
    assert "PRELU" not in _op_names(q)
    parts, outside = _partitions(q)
    assert parts == 1 and set(outside) <= EDGE_OPS, (parts, outside)


def test_prelu_slope_above_one_keeps_the_prelu_op(tmp_path):
    # z + relu((alpha - 1) z) is PReLU only for alpha <= 1; a steeper slope keeps the (undelegated) PRELU
    sd = synthetic_state_dict(4, se=False)
    sd["conv_3.model.0.conv.prelu.weight"][0] = 1.5
    calib = np.random.default_rng(2).integers(0, 256, (16, 80, 80, 3), dtype=np.uint8)
    q = quantize_minifasnet(sd, calib)
    assert "PRELU" in _op_names(q)
    path = tmp_path / "q.tflite"
    path.write_bytes(q)
    probs = run_model(path, calib[:8])
    ref = reference_forward(sd, calib[:8])
    assert (probs.argmax(axis=1) == ref.argmax(axis=1)).mean() >= 0.75 and np.abs(probs - ref).mean() < 0.1


def test_minifasnet_equalization_is_exact_and_boosts_channels():
    sd = synthetic_state_dict(4, se=True)
    crops = np.random.default_rng(3).integers(0, 256, (8, 80, 80, 3), dtype=np.uint8)
    graph = _build_graph(sd, (80, 80))
    eq, chains = _equalize(graph, crops)
    assert chains == 1 + 10 + 1  # conv1 -> conv2_dw, the 10 blocks: conv -> conv_dw, conv_6_sep -> conv_6_dw
    changed = [n.name for n, m in zip(graph.nodes, eq.nodes) if n.kind in ("conv", "dwconv")
               and not np.array_equal(n.attrs["w"], m.attrs["w"])]
    assert changed  # some channels were boosted (and their depthwise weights scaled back)
    a = _np_forward(graph, crops[:2])
    b = _np_forward(eq, crops[:2])
    np.testing.assert_allclose(b, a, rtol=0, atol=1e-9)


def _upstream_blazeface() -> bytes:
    sha = "3bc182eb9f33925d9e58b5c8d59308a760f4adea8f282370e428c51212c26633"  # models/blazeface_short.toml
    for p in (REPO / "models" / "cache" / "face_detection_short_range.tflite",
              REPO / "models" / "build" / "blazeface_short.float32.tflite"):
        if p.is_file() and hashlib.sha256(p.read_bytes()).hexdigest() == sha:
            return p.read_bytes()
    pytest.skip("upstream BlazeFace not present (run: edge models fetch)")


def test_blazeface_fused_relus_are_exact_and_one_partition():
    from ai_edge_litert import interpreter as litert

    folded = b8.float_model(_upstream_blazeface())
    fused, n = b8.fuse_relu(folded)
    assert n == 17 and "RELU" not in _op_names(fused)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32)
    outs = []
    for data in (folded, fused):
        it = litert.Interpreter(model_content=data, num_threads=1)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        it.invoke()
        outs.append([it.get_tensor(o["index"]).copy() for o in it.get_output_details()])
    for a, b in zip(*outs):
        np.testing.assert_array_equal(a, b)
    inputs = [np.random.default_rng(i).uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32) for i in range(3)]
    plain = b8.quantize(folded, b8.calibrate(folded, inputs).ranges, clamp=b8.head_clamps(folded))
    q = b8.quantize(fused, b8.calibrate(fused, inputs).ranges, clamp=b8.head_clamps(fused))
    assert _partitions(plain)[0] > 1  # each int8 RELU cuts the graph
    parts, outside = _partitions(q)
    assert parts == 1 and outside == [], (parts, outside)


def test_built_int8_artifacts_are_one_partition_each():
    built = {n: REPO / "models" / "build" / f"{n}.int8.tflite" for n in ("blazeface_short", "minifasnet_v2", "minifasnet_v1se")}
    present = {n: p for n, p in built.items() if p.is_file()}
    if not present:
        pytest.skip("no int8 artifacts built (run: edge models build; needs ../shared)")
    for name, path in present.items():
        parts, outside = _partitions(path.read_bytes())
        assert parts == 1 and set(outside) <= EDGE_OPS, (name, parts, outside)
