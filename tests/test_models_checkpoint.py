"""The numpy-only PyTorch checkpoint reader: real upstream file, hand-made files, hostile files."""

from __future__ import annotations

import io
import pickle
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.errors import CheckpointError, ModelError
from edge.models.checkpoint import load_checkpoint, load_checkpoint_bytes

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SILENT_FACE = SHARED / "models" / "silent-face"
V2_PTH = SILENT_FACE / "2.7_80x80_MiniFASNetV2.pth"

MAGIC = 0x1950A86A20F9469CFC6C
SYS_INFO = {"protocol_version": 1001, "little_endian": True, "type_sizes": {"short": 2, "int": 4, "long": 4}}


# ---- a tiny pickle writer, so the tests can build checkpoints (good and hostile) without torch


def _str(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _int(i: int) -> bytes:
    if -(2**31) <= i < 2**31:
        return b"J" + struct.pack("<i", i)
    raw = i.to_bytes(9, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw  # LONG1


def _tuple(items) -> bytes:
    return b"(" + b"".join(items) + b"t"


def _global(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


_ODICT = _global("collections", "OrderedDict") + b")R"


def _tensor(key, stype, numel, offset, shape, stride, *, legacy=True, view=None) -> bytes:
    pid = [_str("storage"), _global("torch", stype), _str(key), _str("cpu"), _int(numel)]
    if legacy:
        pid.append(b"N" if view is None else _tuple([_str(view[0]), _int(view[1]), _int(view[2])]))
    args = (_tuple(pid) + b"Q" + _int(offset) + _tuple(_int(s) for s in shape) + _tuple(_int(s) for s in stride)
            + b"\x89" + _ODICT)
    return _global("torch._utils", "_rebuild_tensor_v2") + b"(" + args + b"tR"


def _state_pickle(entries, *, legacy=True) -> bytes:
    body = b"".join(_str(name) + _tensor(*spec, legacy=legacy) for name, spec in entries)
    return b"\x80\x02" + _ODICT + b"(" + body + b"u."


def _legacy_file(obj_pickle: bytes, storages: dict[str, np.ndarray]) -> bytes:
    out = io.BytesIO()
    for head in (MAGIC, 1001, SYS_INFO):
        out.write(pickle.dumps(head, protocol=2))
    out.write(obj_pickle)
    out.write(pickle.dumps(list(storages), protocol=2))
    for arr in storages.values():
        out.write(struct.pack("<q", arr.size))
        out.write(arr.tobytes())
    return out.getvalue()


def _sample():
    weight = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    counts = np.array([7], dtype=np.int64)
    entries = [
        ("module.conv.weight", ("0", "FloatStorage", 24, 0, (2, 3, 4), (12, 4, 1))),
        # a transposed (non-contiguous) view of the same storage
        ("module.conv.weight_t", ("0", "FloatStorage", 24, 0, (4, 3, 2), (1, 4, 12))),
        ("module.bn.num_batches_tracked", ("1", "LongStorage", 1, 0, (), ())),
    ]
    return entries, {"0": weight.ravel(), "1": counts}, weight


def test_handmade_legacy_roundtrip():
    entries, storages, weight = _sample()
    sd = load_checkpoint_bytes(_legacy_file(_state_pickle(entries), storages))
    assert list(sd) == ["conv.weight", "conv.weight_t", "bn.num_batches_tracked"]
    np.testing.assert_array_equal(sd["conv.weight"], weight)
    np.testing.assert_array_equal(sd["conv.weight_t"], weight.transpose(2, 1, 0))
    assert sd["bn.num_batches_tracked"].shape == () and int(sd["bn.num_batches_tracked"]) == 7
    assert sd["conv.weight"].dtype == np.float32 and sd["conv.weight"].flags.writeable


def test_legacy_view_metadata():
    data = np.arange(10, dtype=np.float32)
    entries = [("w", ("0", "FloatStorage", 10, 1, (3,), (1,)))]
    raw = _state_pickle(entries).replace(b"N" + b"tQ", _tuple([_str("0v"), _int(4), _int(5)]) + b"tQ")
    sd = load_checkpoint_bytes(_legacy_file(raw, {"0": data}))
    np.testing.assert_array_equal(sd["w"], [5, 6, 7])  # view starts at 4, tensor offset 1


def test_zip_roundtrip(tmp_path):
    entries, storages, weight = _sample()
    path = tmp_path / "new.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", _state_pickle(entries, legacy=False))
        zf.writestr("archive/version", "3\n")
        for key, arr in storages.items():
            zf.writestr(f"archive/data/{key}", arr.tobytes())
    sd = load_checkpoint(path)
    np.testing.assert_array_equal(sd["conv.weight_t"], weight.transpose(2, 1, 0))


@pytest.mark.parametrize("module,name", [("os", "system"), ("builtins", "eval"), ("posix", "system"),
                                         ("subprocess", "Popen"), ("torch", "load")])
def test_refuses_code_references_and_runs_nothing(tmp_path, module, name):
    marker = tmp_path / "pwned"
    payload = f"open({str(marker)!r}, 'w')" if name == "eval" else f"touch {marker}"
    evil = b"\x80\x02" + _global(module, name) + _str(payload) + b"\x85R."
    path = tmp_path / "evil.pth"
    path.write_bytes(_legacy_file(evil, {}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    msg = str(info.value)
    assert f"{module}.{name}" in msg and str(path) in msg and "untrusted" in msg
    assert not marker.exists()
    assert isinstance(info.value, ModelError)


def test_refuses_code_in_header_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = b"\x80\x02" + _global("os", "system") + _str(f"touch {marker}") + b"\x85R."
    with pytest.raises(CheckpointError, match="os.system"):
        load_checkpoint_bytes(evil + pickle.dumps(1001, protocol=2))
    assert not marker.exists()


def test_refuses_code_hidden_inside_a_tensor_record():
    # a legitimate-looking state_dict whose backward_hooks slot calls builtins.exec
    entries, storages, _ = _sample()
    raw = _state_pickle(entries).replace(_ODICT + b"tR", _global("builtins", "exec") + _str("1") + b"\x85RtR", 1)
    with pytest.raises(CheckpointError, match=r"builtins\.exec"):
        load_checkpoint_bytes(_legacy_file(raw, storages))


def test_refuses_zip_with_code(tmp_path):
    path = tmp_path / "evil.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", b"\x80\x02" + _global("os", "system") + _str("true") + b"\x85R.")
    with pytest.raises(CheckpointError, match="os.system"):
        load_checkpoint(path)


def test_refuses_non_storage_persistent_id():
    obj = b"\x80\x02" + _tuple([_str("module"), _str("x"), _str("import os")]) + b"Q."
    with pytest.raises(CheckpointError, match="persistent id"):
        load_checkpoint_bytes(_legacy_file(obj, {}))


def test_out_of_bounds_stride_is_refused():
    entries = [("w", ("0", "FloatStorage", 4, 0, (4, 4), (4, 1)))]  # claims 16 elements of a 4-element storage
    with pytest.raises(CheckpointError, match="reaches element"):
        load_checkpoint_bytes(_legacy_file(_state_pickle(entries), {"0": np.zeros(4, np.float32)}))


def test_absurd_storage_size_is_refused():
    entries = [("w", ("0", "FloatStorage", 1 << 40, 0, (4,), (1,)))]
    with pytest.raises(CheckpointError, match="claims"):
        load_checkpoint_bytes(_legacy_file(_state_pickle(entries), {"0": np.zeros(4, np.float32)}))


def test_zip_storage_size_mismatch_is_refused(tmp_path):
    entries, storages, _ = _sample()
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", _state_pickle(entries, legacy=False))
        zf.writestr("archive/data/0", bytes(10_000_000))  # 96 bytes expected
        zf.writestr("archive/data/1", storages["1"].tobytes())
    with pytest.raises(CheckpointError, match="its record says 96"):
        load_checkpoint(path)


def test_storage_count_mismatch_is_refused():
    entries = [("w", ("0", "FloatStorage", 8, 0, (4,), (1,)))]
    with pytest.raises(CheckpointError, match="holds 4 elements"):
        load_checkpoint_bytes(_legacy_file(_state_pickle(entries), {"0": np.zeros(4, np.float32)}))


def test_truncated_files_are_refused(tmp_path):
    entries, storages, _ = _sample()
    raw = _legacy_file(_state_pickle(entries), storages)
    for cut in (0, 5, 40, len(raw) // 2, len(raw) - 20, len(raw) - 1):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint_bytes(raw[:cut], source="cut.pth")
        assert "cut.pth" in str(info.value)


def test_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_checkpoint_bytes(pickle.dumps(123, protocol=2))
    with pytest.raises(CheckpointError):
        load_checkpoint_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="cannot read"):
        load_checkpoint(tmp_path / "absent.pth")


def test_non_tensor_values_are_refused():
    obj = b"\x80\x02" + _ODICT + b"(" + _str("x") + _int(3) + b"u."
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_checkpoint_bytes(_legacy_file(obj, {}))


@pytest.mark.skipif(not V2_PTH.exists(), reason=f"upstream weights not found at {V2_PTH} (../shared beside the repo)")
def test_upstream_v2_checkpoint():
    sd = load_checkpoint(V2_PTH)
    assert len(sd) == 334
    assert not any(k.startswith("module.") for k in sd)
    assert sd["conv1.conv.weight"].shape == (32, 3, 3, 3) and sd["conv1.conv.weight"].dtype == np.float32
    assert sd["prob.weight"].shape == (3, 128)
    assert sd["conv1.bn.num_batches_tracked"].dtype == np.int64


@pytest.mark.skipif(not V2_PTH.exists(), reason=f"upstream weights not found at {V2_PTH} (../shared beside the repo)")
def test_upstream_v2_truncated(tmp_path):
    raw = V2_PTH.read_bytes()
    for cut in (1000, len(raw) - 1):
        path = tmp_path / "cut.pth"
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError, match="truncated"):
            load_checkpoint(path)
