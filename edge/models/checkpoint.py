"""Read a PyTorch state_dict checkpoint with numpy only, treating the file as untrusted input.

A ``.pth`` file is a pickle, and a pickle can call any importable function while it loads. Upstream's
weights are fetched from the internet, so the unpickler here resolves only the handful of globals a
plain state_dict needs and refuses everything else with :class:`~edge.errors.CheckpointError` *before*
anything is called. Tensors are rebuilt as numpy arrays; torch is never imported.

Two containers are understood:

* the legacy (torch < 1.6) stream: five pickles back to back (magic number, protocol version,
  sys_info, the object with persistent ids for its storages, the list of storage keys) followed by
  each storage's raw bytes, prefixed by an 8-byte little-endian element count;
* the zip archive of torch >= 1.6: ``<dir>/data.pkl`` plus one ``<dir>/data/<key>`` entry per storage.
"""

from __future__ import annotations

import io
import logging
import pickle
import struct
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import CheckpointError

log = logging.getLogger(__name__)

__all__ = ["load_checkpoint", "load_checkpoint_bytes"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
# Far above any liveness model (MiniFASNet storages are < 1 MB); bounds what a hostile record can make us read.
_MAX_STORAGE_BYTES = 1 << 30

# torch.<Name>Storage -> numpy dtype (little-endian, which is all torch writes on the platforms we meet).
_STORAGE_DTYPES = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
    # bfloat16 has no numpy dtype: read the raw 16 bits, widen to float32 when the tensor is built.
    "BFloat16Storage": np.dtype("<u2"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.*Storage`` class: only a dtype marker, deliberately not callable."""

    name: str

    @property
    def dtype(self) -> np.dtype:
        return _STORAGE_DTYPES[self.name]


class _Storage:
    """A storage whose bytes may arrive after the object pickle (legacy format)."""

    __slots__ = ("key", "stype", "numel", "data")

    def __init__(self, key: str, stype: _StorageType, numel: int):
        self.key = key
        self.stype = stype
        self.numel = numel
        self.data: np.ndarray | None = None


@dataclass(frozen=True)
class _View:
    """A slice of a storage (legacy view_metadata)."""

    base: _Storage
    offset: int
    numel: int


class _LazyTensor:
    __slots__ = ("storage", "offset", "size", "stride")

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride


def _as_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise CheckpointError(f"malformed tensor record: {what} is {value!r}, expected an integer")
    return value


def _int_tuple(value, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple):
        raise CheckpointError(f"malformed tensor record: {what} is {type(value).__name__}, expected a tuple")
    return tuple(_as_int(v, what) for v in value)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    # Same signature as torch._utils._rebuild_tensor_v2; records the view, the bytes may not be read yet.
    if not isinstance(storage, (_Storage, _View)):
        raise CheckpointError(f"malformed tensor record: storage is {type(storage).__name__}")
    return _LazyTensor(storage, _as_int(storage_offset, "storage_offset"), _int_tuple(size, "size"),
                       _int_tuple(stride, "stride"))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


# (module, name) -> object handed to the pickle machinery. Nothing else is ever resolved.
_ALLOWED_GLOBALS: dict[tuple[str, str], object] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
}
_ALLOWED_GLOBALS.update({("torch", name): _StorageType(name) for name in _STORAGE_DTYPES})


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, *, source: str, storages: dict[str, _Storage] | None = None):
        super().__init__(file, encoding="utf-8")
        self._source = source
        self._storages = storages

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise CheckpointError(
                f"refusing to load {self._source}: checkpoint references {module}.{name}; a checkpoint is "
                "untrusted input and only plain state_dict tensors are accepted. Obtain the file from its "
                "pinned upstream source (check its sha256) or re-export it as a bare state_dict"
            ) from None

    def persistent_load(self, pid):
        if self._storages is None:
            raise CheckpointError(f"malformed checkpoint {self._source}: unexpected persistent id {pid!r}")
        if not isinstance(pid, tuple) or not pid or pid[0] not in ("storage", b"storage"):
            raise CheckpointError(
                f"refusing to load {self._source}: unsupported persistent id {str(pid)[:80]!r} "
                "(only tensor storages are accepted)"
            )
        # legacy: (storage, type, key, location, numel, view_metadata); zip: (storage, type, key, location, numel)
        if len(pid) not in (5, 6):
            raise CheckpointError(f"malformed storage record in {self._source}: {str(pid)[:80]!r}")
        stype, key, _location, numel = pid[1:5]
        view = pid[5] if len(pid) == 6 else None
        if not isinstance(stype, _StorageType):
            raise CheckpointError(f"malformed storage record in {self._source}: type {stype!r}")
        if isinstance(key, bytes):
            key = key.decode("ascii", "replace")
        if not isinstance(key, str):
            raise CheckpointError(f"malformed storage record in {self._source}: key {key!r}")
        numel = _as_int(numel, "storage size")
        if not 0 <= numel * stype.dtype.itemsize <= _MAX_STORAGE_BYTES:
            raise CheckpointError(f"refusing to load {self._source}: storage {key} claims {numel} elements "
                                  f"(limit {_MAX_STORAGE_BYTES} bytes per storage)")
        storage = self._storages.get(key)
        if storage is None:
            storage = self._storages[key] = _Storage(key, stype, numel)
        elif storage.stype != stype:
            raise CheckpointError(f"malformed checkpoint {self._source}: storage {key} has two dtypes")
        if view is None:
            return storage
        if not (isinstance(view, tuple) and len(view) == 3):
            raise CheckpointError(f"malformed storage view in {self._source}: {view!r}")
        return _View(storage, _as_int(view[1], "view offset"), _as_int(view[2], "view size"))


def _materialise(name: str, t: _LazyTensor, source: str) -> np.ndarray:
    storage, base_offset = (t.storage.base, t.storage.offset) if isinstance(t.storage, _View) else (t.storage, 0)
    if storage.data is None:
        raise CheckpointError(f"malformed checkpoint {source}: tensor {name} uses storage {storage.key}, "
                              "whose data is missing")
    data = storage.data
    if len(t.size) != len(t.stride) or any(s < 0 for s in t.size) or any(s < 0 for s in t.stride):
        raise CheckpointError(f"malformed checkpoint {source}: tensor {name} has size {t.size}, stride {t.stride}")
    start = base_offset + t.offset
    numel = int(np.prod(t.size, dtype=np.int64)) if t.size else 1
    if numel == 0:
        out = np.empty(t.size, dtype=data.dtype)
    else:
        last = start + sum((n - 1) * s for n, s in zip(t.size, t.stride))
        # as_strided trusts its arguments blindly; a hostile record must not read outside the storage.
        if start < 0 or last >= data.size:
            raise CheckpointError(
                f"malformed checkpoint {source}: tensor {name} reaches element {last} of storage "
                f"{storage.key}, which holds {data.size}"
            )
        strides = tuple(s * data.itemsize for s in t.stride)
        out = np.lib.stride_tricks.as_strided(data[start:], shape=t.size, strides=strides, writeable=False).copy()
    if storage.stype.name == "BFloat16Storage":
        out = (out.astype(np.uint32) << 16).view(np.float32)
    return out


def _to_state_dict(obj, source: str) -> OrderedDict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # training checkpoints wrap the state_dict
    if not isinstance(obj, dict):
        raise CheckpointError(f"{source} holds a {type(obj).__name__}, not a state_dict; "
                              "export the model with torch.save(model.state_dict(), path)")
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in obj.items():
        if not isinstance(key, str):
            raise CheckpointError(f"malformed state_dict in {source}: key {key!r} is not a string")
        if not isinstance(value, _LazyTensor):
            raise CheckpointError(f"malformed state_dict in {source}: {key} is a {type(value).__name__}, "
                                  "not a tensor")
        # DataParallel saves every key as module.<name>
        name = key[len("module."):] if key.startswith("module.") else key
        if name in out:
            raise CheckpointError(f"malformed state_dict in {source}: {name} appears twice")
        out[name] = _materialise(key, value, source)
    return out


def _load_legacy(f: io.BufferedIOBase, source: str) -> OrderedDict[str, np.ndarray]:
    def small_pickle(what: str):
        try:
            return _RestrictedUnpickler(f, source=source).load()
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - any parse failure of untrusted bytes is a CheckpointError
            raise CheckpointError(f"cannot read {source}: its {what} is damaged or truncated ({err})") from err

    magic = small_pickle("header")
    if magic != _LEGACY_MAGIC:
        raise CheckpointError(f"{source} is not a PyTorch checkpoint (bad magic number); expected a .pth file")
    version = small_pickle("header")
    if version != _LEGACY_PROTOCOL:
        raise CheckpointError(f"{source} uses checkpoint protocol {version!r}; only {_LEGACY_PROTOCOL} is known")
    sys_info = small_pickle("header")
    if isinstance(sys_info, dict) and sys_info.get("little_endian") is False:
        raise CheckpointError(f"{source} was written on a big-endian machine; re-save it on a little-endian one")

    storages: dict[str, _Storage] = {}
    try:
        obj = _RestrictedUnpickler(f, source=source, storages=storages).load()
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001
        raise CheckpointError(f"cannot read {source}: its object pickle is damaged or truncated ({err})") from err
    keys = small_pickle("storage list")
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise CheckpointError(f"malformed checkpoint {source}: storage key list is {type(keys).__name__}")

    for key in keys:
        storage = storages.get(key)
        if storage is None:
            raise CheckpointError(f"malformed checkpoint {source}: storage {key} is listed but never used")
        head = f.read(8)
        if len(head) != 8:
            raise CheckpointError(f"cannot read {source}: file is truncated (storage {key} header missing); "
                                  "download it again and check its sha256")
        (count,) = struct.unpack("<q", head)
        if count != storage.numel:
            raise CheckpointError(f"malformed checkpoint {source}: storage {key} holds {count} elements, "
                                  f"its record says {storage.numel}")
        nbytes = count * storage.stype.dtype.itemsize
        raw = f.read(nbytes)
        if len(raw) != nbytes:
            raise CheckpointError(f"cannot read {source}: file is truncated (storage {key} has {len(raw)} of "
                                  f"{nbytes} bytes); download it again and check its sha256")
        storage.data = np.frombuffer(raw, dtype=storage.stype.dtype)
    return _to_state_dict(obj, source)


def _load_zip(raw: bytes, source: str) -> OrderedDict[str, np.ndarray]:
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as zf:
            names = zf.namelist()
            pkl = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if len(pkl) != 1:
                raise CheckpointError(f"{source} is a zip file but not a PyTorch checkpoint (no single data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            storages: dict[str, _Storage] = {}
            obj = _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), source=source, storages=storages).load()
            for key, storage in storages.items():
                entry = f"{prefix}data/{key}"
                if entry not in names:
                    raise CheckpointError(f"malformed checkpoint {source}: storage entry {entry} is missing")
                nbytes = storage.numel * storage.stype.dtype.itemsize
                size = zf.getinfo(entry).file_size
                if size != nbytes:  # checked before inflating anything: no zip bombs
                    raise CheckpointError(f"malformed checkpoint {source}: storage {key} has {size} bytes, "
                                          f"its record says {nbytes}")
                data = zf.read(entry)
                storage.data = np.frombuffer(data[:nbytes], dtype=storage.stype.dtype)
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - zipfile/pickle errors on untrusted bytes
        raise CheckpointError(f"cannot read {source}: damaged or truncated zip checkpoint ({err})") from err
    return _to_state_dict(obj, source)


def load_checkpoint_bytes(raw: bytes, *, source: str = "<bytes>") -> OrderedDict[str, np.ndarray]:
    """Parse checkpoint bytes; see :func:`load_checkpoint`."""
    if raw[:4] == b"PK\x03\x04":
        return _load_zip(raw, source)
    return _load_legacy(io.BytesIO(raw), source)


def load_checkpoint(path: str | Path) -> OrderedDict[str, np.ndarray]:
    """Load a PyTorch state_dict checkpoint as ``OrderedDict[name, np.ndarray]`` without torch.

    Keys lose a leading ``module.`` (DataParallel). Raises :class:`CheckpointError` for a file that
    references anything but tensors, or that is truncated or malformed; nothing in the file is executed.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err.strerror or err}") from err
    state = load_checkpoint_bytes(raw, source=str(path))
    log.debug("loaded %d tensors from %s", len(state), path)
    return state
