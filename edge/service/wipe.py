"""Zero buffers that held pixels, crops, tensors or per-person scores.

Used at session end, before the verdict is returned. Overwriting in place
matters: dropping the last reference only returns memory to the allocator
with the face still in it, where the next session (or a crash dump) finds it.
"""

from __future__ import annotations

import logging
from collections.abc import MutableSequence
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["wipe", "wipe_interpreter", "is_zeroed"]


def _wipe_one(obj: Any) -> int:
    if obj is None:
        return 0
    if isinstance(obj, np.ndarray):
        if obj.size == 0:
            return 0
        if not obj.flags.writeable:
            # A read-only view of a writable buffer (e.g. a frame handed out
            # read-only): zero the owner. A truly read-only buffer cannot hold
            # data we produced, so say so instead of failing the session.
            base = obj
            while isinstance(base, np.ndarray) and not base.flags.writeable and base.base is not None:
                base = base.base
            if isinstance(base, np.ndarray) and base.flags.writeable:
                return _wipe_one(base)
            if isinstance(base, (bytearray, memoryview)):
                return _wipe_one(base)
            log.warning("wipe: a read-only array of %d bytes could not be zeroed", obj.nbytes)
            return 0
        obj.fill(0)
        return int(obj.nbytes)
    if isinstance(obj, bytearray):
        n = len(obj)
        obj[:] = bytes(n)  # same length: rewritten in place, no reallocation
        return n
    if isinstance(obj, memoryview):
        if obj.readonly:
            log.warning("wipe: a read-only memoryview of %d bytes could not be zeroed", obj.nbytes)
            return 0
        flat = obj.cast("B") if obj.contiguous else None
        if flat is None:
            return _wipe_one(np.asarray(obj))
        flat[:] = bytes(flat.nbytes)
        return int(flat.nbytes)
    if isinstance(obj, (list, MutableSequence)) and not isinstance(obj, (str, bytes)):
        n = sum(_wipe_item(item) for item in obj)
        obj.clear()
        return n
    if isinstance(obj, dict):
        n = sum(_wipe_item(v) for v in obj.values())
        obj.clear()
        return n
    raise TypeError(f"wipe() cannot zero a {type(obj).__name__}: hold pixel/score data in numpy arrays or bytearrays")


def _wipe_item(item: Any) -> int:
    # Python numbers are immutable and cannot be overwritten; a container of them
    # (a score history) is cleared by the caller, which is the best Python allows.
    if isinstance(item, (int, float, complex, np.generic)):
        return 0
    return _wipe_one(item)


def wipe(*buffers: Any) -> int:
    """Zero every buffer in place; ``None`` is skipped. Returns the bytes zeroed.

    numpy arrays (any dtype, shape or stride), bytearrays and writable
    memoryviews are overwritten; lists/deques/dicts of them are zeroed
    item by item and then cleared.
    """
    return sum(_wipe_one(b) for b in buffers)


def wipe_interpreter(interpreter: Any) -> int:
    """Zero the input and output tensors of a TFLite/LiteRT interpreter.

    Only inputs and outputs: the other tensors include the model's weights.
    The tensor view is dropped before returning, because LiteRT refuses to
    invoke while a view into its buffers is alive.
    """
    n = 0
    details = list(interpreter.get_input_details()) + list(interpreter.get_output_details())
    for d in details:
        try:
            view = interpreter.tensor(d["index"])()
            n += _wipe_one(view)
            del view
        except (ValueError, RuntimeError) as err:
            log.warning("wipe: tensor %s could not be zeroed (%s)", d.get("name", d["index"]), type(err).__name__)
    return n


def is_zeroed(*buffers: Any) -> bool:
    """True if every buffer is all zeros (for tests and `edge doctor`-style self checks)."""
    for b in buffers:
        if b is None:
            continue
        if isinstance(b, (bytearray, bytes, memoryview)):
            if any(bytes(b)):
                return False
        elif isinstance(b, np.ndarray):
            if b.size and np.any(b):
                return False
        elif isinstance(b, (list, tuple, MutableSequence)):
            if not is_zeroed(*b):
                return False
        else:
            raise TypeError(f"is_zeroed() cannot inspect a {type(b).__name__}")
    return True
