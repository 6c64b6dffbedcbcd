"""dlib's face ResNet: the bounded .dat reader (hand-made and hostile files) and the converter (golden data)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import CheckpointError, ModelError
from edge.models.dlib_convert import convert_dlib_resnet, forward_numpy
from edge.models.dlib_resnet import ARCHITECTURE, load_dlib_resnet, parse_dlib_resnet
from tests.dlib_fakes import pint, tensor, write_resnet

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO.parent / "shared" / "models" / "dlib-face" / "golden.npz"


@pytest.fixture(scope="module")
def fake() -> bytes:
    return write_resnet()


def _one_line(err: pytest.ExceptionInfo) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_reads_a_well_formed_file(fake):
    net = parse_dlib_resnet(fake)
    assert len(net.blocks) == 14 and [b.down for b in net.blocks] == [d for _, d in ARCHITECTURE]
    assert net.stem.weight.shape == (32, 3, 7, 7) and net.fc.shape == (256, 128)
    assert net.means_rgb == pytest.approx((122.782, 117.001, 104.298))
    assert net.parameters == 5_614_592  # the README's 5.61 M, biases and affine terms included


def test_error_is_a_model_error_and_a_runtime_error():
    assert issubclass(CheckpointError, ModelError) and issubclass(CheckpointError, RuntimeError)


@pytest.mark.parametrize("cut", [0, 10, 500, 20_000, -1])
def test_truncated_file_is_refused(fake, cut):
    data = fake[:cut] if cut >= 0 else fake[:-1]
    with pytest.raises(CheckpointError, match="truncated") as err:
        parse_dlib_resnet(data, source="x.dat")
    assert "x.dat" in _one_line(err)


def test_trailing_bytes_are_refused(fake):
    with pytest.raises(CheckpointError, match="follow the last layer"):
        parse_dlib_resnet(fake + b"\0")


@pytest.mark.parametrize("arch", [ARCHITECTURE[:-1], ARCHITECTURE[:3] + ARCHITECTURE[4:],
                                  ARCHITECTURE + ((256, False),)])
def test_wrong_layer_count_is_refused(arch):
    with pytest.raises(CheckpointError, match="layer") as err:
        parse_dlib_resnet(write_resnet(arch))
    _one_line(err)


def test_wrong_block_width_is_refused():
    arch = ((48, False),) + ARCHITECTURE[1:]
    with pytest.raises(CheckpointError, match="expected"):
        parse_dlib_resnet(write_resnet(arch))


def test_absurd_tensor_size_is_refused_before_allocating():
    # the stem's params tensor claims 2^40 values: refused on the size fields, nothing read or allocated
    def huge(index, blob):
        return pint(2) + b"".join(pint(d) for d in (1 << 20, 1 << 20, 1, 1)) if index == 0 else blob

    with pytest.raises(CheckpointError, match="claims") as err:
        parse_dlib_resnet(write_resnet(tensor_override=huge))
    _one_line(err)


def test_tensor_of_the_wrong_size_is_refused():
    def short(index, blob):
        return tensor(np.zeros(10, np.float32)) if index == 3 else blob

    with pytest.raises(CheckpointError, match="has shape"):
        parse_dlib_resnet(write_resnet(tensor_override=short))


def test_non_finite_weights_are_refused():
    def nan(index, blob):
        return tensor(np.full(64, np.nan, np.float32)) if index == 1 else blob  # the stem's affine

    with pytest.raises(CheckpointError, match="non-finite"):
        parse_dlib_resnet(write_resnet(tensor_override=nan))


def test_wrong_input_size_is_refused():
    with pytest.raises(CheckpointError, match="input size is 112x112"):
        parse_dlib_resnet(write_resnet(size=112))


def test_malformed_integer_and_foreign_file_are_refused(fake):
    with pytest.raises(CheckpointError, match="control byte"):
        parse_dlib_resnet(b"\x7f" + fake[1:])
    with pytest.raises(CheckpointError, match="expected 'loss_metric_2"):
        parse_dlib_resnet(pint(1) + pint(4) + b"abcd" + fake[20:])


def test_oversized_file_is_refused_unread(tmp_path):
    big = tmp_path / "big.dat"
    with big.open("wb") as f:
        f.truncate(65 << 20)  # sparse: nothing written
    with pytest.raises(CheckpointError, match="larger than"):
        load_dlib_resnet(big)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_dlib_resnet(tmp_path / "absent.dat")


def test_converted_graph_matches_numpy_reference(fake):
    from ai_edge_litert.interpreter import Interpreter

    net = parse_dlib_resnet(fake)
    chips = np.random.default_rng(1).integers(0, 256, (2, 150, 150, 3), dtype=np.uint8)
    ref = forward_numpy(net, chips)
    it = Interpreter(model_content=convert_dlib_resnet(net), num_threads=1)
    it.allocate_tensors()
    i, o = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]
    for chip, want in zip(chips, ref):
        it.set_tensor(i, chip[None].astype(np.float32))
        it.invoke()
        np.testing.assert_allclose(it.get_tensor(o)[0], want, rtol=1e-4, atol=1e-4)
    assert convert_dlib_resnet(net) == convert_dlib_resnet(net)  # deterministic: manifests pin the bytes


def test_add_prev_pads_the_smaller_branch_at_the_end(fake):
    """The 8->3/4 stage: a 3x3 block output added to a 4x4 pooled skip, zero-padded at row/column 3."""
    from edge.models.dlib_convert import _build_graph

    nodes = {n.name: n for n in _build_graph(parse_dlib_resnet(fake))}
    pad = nodes["block10.conv2.pad"]
    assert nodes["block10.conv2"].shape == (1, 3, 3, 256) and pad.shape == (1, 4, 4, 256)
    assert pad.attrs["pads"] == ((0, 0), (0, 1), (0, 1), (0, 0))
    skip = nodes["block10.skip.pad"]  # 128 channels of the skip, then 128 zeros
    assert skip.attrs["pads"] == ((0, 0), (0, 0), (0, 0), (0, 128))
    assert nodes["block13.conv2.pad"].shape == (1, 2, 2, 256) and nodes["block13.out"].shape == (1, 2, 2, 256)


# ---- the real model (fetched only with face matching: edge models build --with face-match)


def _artifact(variant: str) -> Path:
    from edge.models.registry import artifact_path

    try:
        return artifact_path("dlib_resnet", variant)
    except ModelError as err:
        pytest.skip(f"dlib_resnet {variant} not built (edge models build --with face-match): {err}")


def _golden():
    if not GOLDEN.is_file():
        pytest.skip(f"no golden descriptors at {GOLDEN}")
    with np.load(GOLDEN, allow_pickle=False) as z:
        return z["chips"], z["descriptors"]


def test_float32_reproduces_dlib_golden_descriptors():
    from edge.match.descriptor import TFLiteDescriptor

    chips, want = _golden()
    with TFLiteDescriptor(_artifact("float32")) as d:
        got = np.stack([d.describe(c).copy() for c in chips])
    assert np.abs(got - want).max() <= 1e-4


def test_int8_keeps_pair_distances_close():
    from edge.match.descriptor import TFLiteDescriptor

    chips, want = _golden()
    with TFLiteDescriptor(_artifact("int8")) as d:
        got = np.stack([d.describe(c).copy() for c in chips])
    iu = np.triu_indices(len(chips), 1)
    dist = lambda x: np.linalg.norm(x[:, None] - x[None], axis=2)[iu]  # noqa: E731
    delta = np.abs(dist(got) - dist(want))
    assert delta.max() <= 0.05 and np.median(delta) <= 0.01


def test_int8_graph_and_descriptor_stage_on_a_hand_made_model(fake, tmp_path):
    """Without the real model: quantize the hand-made net, run it through the runtime's descriptor stage."""
    from edge.match.descriptor import TFLiteDescriptor
    from edge.models.dlib_convert import quantize_dlib_resnet

    net = parse_dlib_resnet(fake)
    chips = np.random.default_rng(3).integers(0, 256, (4, 150, 150, 3), dtype=np.uint8)
    ref = forward_numpy(net, chips)
    (tmp_path / "q.tflite").write_bytes(quantize_dlib_resnet(net, chips))
    (tmp_path / "f.tflite").write_bytes(convert_dlib_resnet(net))
    with TFLiteDescriptor(tmp_path / "q.tflite") as q, TFLiteDescriptor(tmp_path / "f.tflite") as f:
        assert q.quantized and not f.quantized
        for chip, want in zip(chips, ref):
            np.testing.assert_allclose(f.describe(chip), want, rtol=1e-4, atol=1e-4)
            got = q.describe(chip)
            cos = float(got @ want / (np.linalg.norm(got) * np.linalg.norm(want)))
            assert cos > 0.95, cos
        q.wipe()
        assert not q.descriptor.any() and not q._input.any()
    with pytest.raises(ValueError, match="150x150x3 uint8"):
        TFLiteDescriptor(tmp_path / "f.tflite").describe(np.zeros((150, 150), np.uint8))
