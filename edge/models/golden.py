"""Check a converted MiniFASNetV2 model against upstream PyTorch's softmax on the golden crops.

``golden_dir`` holds ``minifasnet_v2_crops.npz`` (``crops``: N x 80 x 80 x 3 uint8 BGR, ``names``: N strings)
and ``minifasnet_v2_reference.csv`` (``file,p0,p1_live,p2``: upstream's softmax per crop). The model runs
through the real TFLite interpreter (:func:`edge.tflite.load_interpreter`), one crop at a time as at run time.
Crops and scores stay in memory; nothing is written or logged per crop.
"""

from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.tflite import TensorInfo, load_interpreter

log = logging.getLogger(__name__)

__all__ = ["GoldenReport", "verify_golden", "load_golden", "run_model", "compare", "GOLDEN_CROPS", "GOLDEN_REFERENCE"]

GOLDEN_CROPS = "minifasnet_v2_crops.npz"
GOLDEN_REFERENCE = "minifasnet_v2_reference.csv"
LIVE_INDEX = 1

# Acceptance thresholds (the converter's contract).
FLOAT_MAX_ABS_DP = 1e-4
INT8_MIN_ARGMAX_AGREEMENT = 0.98
INT8_MAX_MEDIAN_ABS_DP_LIVE = 0.02


@dataclass(frozen=True)
class GoldenReport:
    """Agreement of a model with upstream's softmax over ``n`` golden crops.

    ``max_abs_dp``: largest |Δp| over all crops and classes; ``argmax_agreement``: fraction of crops where
    the live/attack call (argmax == live index, or not) is the same; ``median_abs_dp_live``: median |Δp|
    of the live probability.
    """

    n: int
    max_abs_dp: float
    argmax_agreement: float
    median_abs_dp_live: float
    max_abs_dp_live: float

    def passed(self, kind: str) -> bool:
        """Whether the figures meet the target for ``kind``: ``"float"`` (float32) or ``"int8"``."""
        if kind in ("float", "float32"):
            return self.n > 0 and self.max_abs_dp <= FLOAT_MAX_ABS_DP
        if kind == "int8":
            return (self.n > 0 and self.argmax_agreement >= INT8_MIN_ARGMAX_AGREEMENT
                    and self.median_abs_dp_live <= INT8_MAX_MEDIAN_ABS_DP_LIVE)
        raise ValueError(f"unknown model kind {kind!r}; expected 'float' or 'int8'")

    def summary(self) -> str:
        return (f"n={self.n} max|dp|={self.max_abs_dp:.3g} live/attack agreement={self.argmax_agreement:.1%} "
                f"median|dp_live|={self.median_abs_dp_live:.3g} max|dp_live|={self.max_abs_dp_live:.3g}")


def load_golden(golden_dir: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """``(crops N x H x W x 3 uint8, reference softmax N x 3 float64)``, rows matched by file name."""
    golden_dir = Path(golden_dir)
    npz_path, csv_path = golden_dir / GOLDEN_CROPS, golden_dir / GOLDEN_REFERENCE
    try:
        with np.load(npz_path, allow_pickle=False) as z:
            crops, names = z["crops"], [str(n) for n in z["names"]]
        with open(csv_path, newline="") as f:
            ref = {row["file"]: (float(row["p0"]), float(row["p1_live"]), float(row["p2"]))
                   for row in csv.DictReader(f)}
    except (OSError, KeyError, ValueError) as err:
        raise ModelError(f"cannot read the golden set in {golden_dir} ({GOLDEN_CROPS} with crops/names, "
                         f"{GOLDEN_REFERENCE} with file,p0,p1_live,p2): {err}") from err
    missing = [n for n in names if n not in ref]
    if missing or crops.dtype != np.uint8 or crops.ndim != 4 or len(crops) != len(names):
        raise ModelError(f"golden set in {golden_dir} is inconsistent: {len(missing)} crops without a reference "
                         f"row, crops {crops.dtype} {crops.shape}, {len(names)} names")
    return crops, np.array([ref[n] for n in names], dtype=np.float64)


def _to_input(crop: np.ndarray, info: TensorInfo) -> np.ndarray:
    x = crop[None]
    if info.dtype == np.float32:
        return x.astype(np.float32)
    if info.quantized and not (info.scale == 1.0 and info.zero_point == 0 and info.dtype == np.uint8):
        lim = np.iinfo(info.dtype)
        q = np.round(x.astype(np.float64) / info.scale) + info.zero_point
        return np.clip(q, lim.min, lim.max).astype(info.dtype)
    return x.astype(info.dtype)


def run_model(model_path: str | Path, crops: np.ndarray, *, threads: int = 1) -> np.ndarray:
    """Softmax (N x classes, float64) of a MiniFASNet TFLite model on BGR uint8 crops, dequantized if int8."""
    interp, inputs, outputs = load_interpreter(model_path, threads=threads)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelError(f"{model_path}: expected one input and one output, got {len(inputs)} and {len(outputs)}")
    i, o = inputs[0], outputs[0]
    if tuple(i.shape[1:]) != tuple(crops.shape[1:]):
        raise ModelError(f"{model_path} takes {i.shape}, the crops are {crops.shape[1:]}")
    out = np.empty((len(crops), o.shape[-1]), dtype=np.float64)
    for k, crop in enumerate(crops):
        interp.set_tensor(i.index, _to_input(crop, i))
        interp.invoke()
        y = interp.get_tensor(o.index).reshape(-1)
        out[k] = (y.astype(np.float64) - o.zero_point) * o.scale if o.quantized else y
    return out


def compare(probs: np.ndarray, reference: np.ndarray) -> GoldenReport:
    """Figures of ``probs`` against ``reference`` (both N x classes)."""
    if probs.shape != reference.shape or len(probs) == 0:
        raise ValueError(f"cannot compare {probs.shape} with {reference.shape}")
    d = np.abs(probs - reference)
    live = (probs.argmax(axis=1) == LIVE_INDEX) == (reference.argmax(axis=1) == LIVE_INDEX)
    return GoldenReport(
        n=len(probs),
        max_abs_dp=float(d.max()),
        argmax_agreement=float(live.mean()),
        median_abs_dp_live=float(np.median(d[:, LIVE_INDEX])),
        max_abs_dp_live=float(d[:, LIVE_INDEX].max()),
    )


def verify_golden(model_path: str | Path, golden_dir: str | Path) -> GoldenReport:
    """Run ``model_path`` on the golden crops in ``golden_dir`` and compare with upstream's softmax."""
    crops, reference = load_golden(golden_dir)
    report = compare(run_model(model_path, crops), reference)
    log.info("golden check of %s: %s", model_path, report.summary())
    return report
