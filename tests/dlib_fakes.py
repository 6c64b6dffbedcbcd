"""A writer of dlib's serialisation, so the tests can build face-ResNet files (good and hostile) without dlib."""

from __future__ import annotations

import math

import numpy as np

from edge.models.dlib_resnet import ARCHITECTURE, DESCRIPTOR_SIZE, _plan, _versions


def pint(v: int) -> bytes:
    mag = abs(int(v))
    raw = mag.to_bytes(max(1, (mag.bit_length() + 7) // 8), "little") if mag else b""
    return bytes([len(raw) | (0x80 if v < 0 else 0)]) + raw


def pfloat(v: float) -> bytes:
    if v == 0:
        return pint(0) + pint(0)
    m, e = math.frexp(v)
    return pint(int(m * (1 << 53))) + pint(e - 53)


def pstr(s: str) -> bytes:
    return pint(len(s)) + s.encode()


def tensor(arr: np.ndarray | None, dims=None) -> bytes:
    if arr is None:
        return pint(2) + b"".join(pint(d) for d in (dims or (0, 0, 0, 0)))
    dims = dims or (arr.size, 1, 1, 1)
    return pint(2) + b"".join(pint(d) for d in dims) + np.asarray(arr, "<f4").tobytes()


def alias(*dims) -> bytes:
    return pint(1) + b"".join(pint(d) for d in dims)


TRAILER = b"110" + tensor(None) * 3


def write_resnet(architecture=ARCHITECTURE, *, seed: int = 0, means=(122.782, 117.001, 104.298),
                 size: int = 150, tensor_override=None) -> bytes:
    """Bytes of a dlib face ResNet with random weights (``tensor_override(index, bytes) -> bytes`` edits
    the ``index``-th params tensor)."""
    rng = np.random.default_rng(seed)
    plan = _plan(architecture)
    out = [pint(1), pstr("loss_metric_2"), pfloat(0.04), pfloat(0.6)]
    out += [pint(v) for _, v in _versions(plan)]
    out += [pstr("input_rgb_image_sized")] + [pfloat(m) for m in means] + [pint(size), pint(size)]
    n_params = 0

    def params(arr):
        nonlocal n_params
        blob = tensor(arr)
        if tensor_override is not None:
            blob = tensor_override(n_params, blob)
        n_params += 1
        return blob

    for i, (kind, spec) in enumerate(plan[1:], start=1):
        if kind in ("tag", "skip"):
            continue
        if kind == "con":
            n, k, ks, stride, pad = spec
            w = rng.normal(0, math.sqrt(2.0 / (k * ks * ks)), n * k * ks * ks + n).astype(np.float32)
            out += [pstr("con_4"), params(w)] + [pint(v) for v in (n, ks, ks, stride, stride, pad, pad)]
            out += [alias(n, k, ks, ks), alias(1, n, 1, 1)] + [pfloat(1.0)] * 3 + [pfloat(0.0)]
        elif kind == "affine":
            g = np.concatenate([rng.uniform(0.5, 1.5, spec), rng.normal(0, 0.1, spec)]).astype(np.float32)
            out += [pstr("affine_"), params(g), alias(1, spec, 1, 1), alias(1, spec, 1, 1), pint(0)]
        elif kind == "relu":
            out += [pstr("relu_")]
        elif kind == "add_prev":
            out += [pstr("add_prev_")]
        elif kind in ("max_pool", "avg_pool"):
            out += [pstr(f"{kind}_2")] + [pint(v) for v in spec]
        elif kind == "avg_pool_everything":
            out += [pstr("avg_pool_2")] + [pint(v) for v in (0, 0, 1, 1, 0, 0)]
        elif kind == "fc":
            k_in, n_out = spec
            w = rng.normal(0, 0.05, k_in * n_out).astype(np.float32)
            out += [pstr("fc_2"), pint(n_out), pint(k_in), params(w), alias(k_in, n_out, 1, 1), alias(0, 0, 0, 0),
                    pint(1)] + [pfloat(1.0)] * 4
        out.append(TRAILER)
        if i == 1:
            out.append(pint(1))
    assert DESCRIPTOR_SIZE == 128
    return b"".join(out)
