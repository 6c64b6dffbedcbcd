"""``edge models verify``: are the built models the right files, and do they agree with upstream?

Checks, each a row of the report:

* every built artifact's sha256 matches its manifest;
* MiniFASNetV2 float32 reproduces upstream PyTorch's softmax on the golden crops
  (max |dp| <= 1e-4) and the int8 model agrees on the live/attack call for >= 98 %
  of them with median |dp_live| <= 0.02 (:func:`edge.models.golden.verify_golden`);
* BlazeFace int8 finds the faces the float model finds on the development images
  (median box IoU >= 0.9, no face lost). A face counts when the pipeline acts on it:
  the image's best face, and any other face the quality gate would count as a second
  face (score >= its ``second_face_min_score``). Weaker extra detections sit inside the
  quantization noise of the detector's threshold and the gate ignores them; they are
  reported, not gated.

Checks whose material (``../shared``) is absent are listed as skipped with the reason.
Images, crops and scores stay in memory; only aggregate figures are reported.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge.errors import ModelError
from edge.models import fetch
from edge.models.registry import build_dir, list_manifests, sha256_file

log = logging.getLogger(__name__)

FLOAT_MAX_ABS_DP = 1e-4
INT8_MIN_ARGMAX_AGREEMENT = 0.98
INT8_MAX_MEDIAN_ABS_DP_LIVE = 0.02
DETECTOR_MIN_MEDIAN_IOU = 0.9
DETECTOR_MAX_LOST = 0
MATCH_IOU = 0.5  # a float face counts as found when an int8 face overlaps it by at least this

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Check:
    model: str
    figure: str
    value: str
    target: str
    passed: bool


@dataclass(frozen=True)
class VerifyReport:
    checks: tuple[Check, ...]
    skipped: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


@dataclass(frozen=True)
class DetectorAgreement:
    """Faces of the float detector matched against the int8 one over ``images`` images."""

    images: int
    faces: int
    iou_median: float
    iou_min: float
    lost: int
    extra: int
    lost_minor: int = 0  # missed float detections that are neither the best face nor a countable second face

    @property
    def passed(self) -> bool:
        return self.faces > 0 and self.iou_median >= DETECTOR_MIN_MEDIAN_IOU and self.lost <= DETECTOR_MAX_LOST


def detector_agreement(float_path: Path, int8_path: Path, images: Sequence[Path]) -> DetectorAgreement:
    """Run both BlazeFace models on ``images`` and match every float face to its best int8 face."""
    import cv2

    from edge.detect.blazeface import BlazeFaceDetector
    from edge.quality import QualityConfig

    second_face = QualityConfig().second_face_min_score
    ious: list[float] = []
    lost = extra = lost_minor = 0
    with BlazeFaceDetector(float_path, threads=1) as ref, BlazeFaceDetector(int8_path, threads=1) as q:
        for p in images:
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is None:
                raise ModelError(f"cannot decode image {p}")
            a, b = ref.detect(img), q.detect(img)
            top = max((fa.score for fa in a), default=0.0)
            for fa in a:
                best = max((fa.iou(fb) for fb in b), default=0.0)
                ious.append(best)
                if best < MATCH_IOU:
                    if fa.score >= top or fa.score >= second_face:
                        lost += 1
                    else:
                        lost_minor += 1
            extra += sum(1 for fb in b if max((fb.iou(fa) for fa in a), default=0.0) < MATCH_IOU)
    arr = np.asarray(ious) if ious else np.zeros(1)
    return DetectorAgreement(
        images=len(images),
        faces=len(ious),
        iou_median=float(np.median(arr)),
        iou_min=float(arr.min()),
        lost=int(lost),
        extra=int(extra),
        lost_minor=int(lost_minor),
    )


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def run_verify(
    *,
    weights_dir: Path | None = None,
    images_dir: Path | None = None,
    progress: Progress | None = None,
) -> VerifyReport:
    """All checks whose material is present. Missing or corrupt artifacts fail their hash row."""
    checks: list[Check] = []
    skipped: list[str] = []

    def say(msg: str) -> None:
        log.info("%s", msg)
        if progress is not None:
            progress(msg)

    present: dict[tuple[str, str], Path] = {}
    for m in list_manifests():
        for variant, art in m.artifacts.items():
            path = build_dir() / art.file
            if not path.is_file():
                if not m.optional:  # an optional model is built only on request: its absence is no failure
                    checks.append(Check(m.name, f"{variant} sha256", "missing", "built", False))
                continue
            actual = sha256_file(path)
            ok = actual == art.sha256
            checks.append(Check(m.name, f"{variant} sha256", actual[:12] if ok else f"{actual[:12]} (mismatch)",
                                art.sha256[:12], ok))
            if ok:
                present[(m.name, variant)] = path

    if weights_dir is None:
        weights_dir = fetch.default_weights_dir()
    golden = Path(weights_dir) / "golden" if weights_dir is not None else None
    if golden is None or not golden.is_dir():
        skipped.append(f"MiniFASNetV2 golden check: no golden/ folder (looked in {weights_dir or 'no weights dir'})")
    else:
        from edge.models.golden import verify_golden

        for variant in ("float32", "int8"):
            path = present.get(("minifasnet_v2", variant))
            if path is None:
                skipped.append(f"MiniFASNetV2 {variant} golden check: artifact missing or mismatched")
                continue
            say(f"golden check of minifasnet_v2 {variant} on {golden}")
            r = verify_golden(path, golden)
            if variant == "float32":
                checks.append(Check("minifasnet_v2", "float32 max|dp|", _fmt(r.max_abs_dp), f"<= {FLOAT_MAX_ABS_DP:g}",
                                    r.n > 0 and r.max_abs_dp <= FLOAT_MAX_ABS_DP))
            else:
                checks.append(Check("minifasnet_v2", "int8 live/attack agreement", f"{r.argmax_agreement:.1%}",
                                    f">= {INT8_MIN_ARGMAX_AGREEMENT:.0%}",
                                    r.n > 0 and r.argmax_agreement >= INT8_MIN_ARGMAX_AGREEMENT))
                checks.append(Check("minifasnet_v2", "int8 median|dp_live|", _fmt(r.median_abs_dp_live),
                                    f"<= {INT8_MAX_MEDIAN_ABS_DP_LIVE:g}",
                                    r.n > 0 and r.median_abs_dp_live <= INT8_MAX_MEDIAN_ABS_DP_LIVE))
                checks.append(Check("minifasnet_v2", "int8 max|dp_live| (info)", _fmt(r.max_abs_dp_live), "-", True))
            checks.append(Check("minifasnet_v2", f"{variant} golden crops", str(r.n), "> 0", r.n > 0))

    if images_dir is None:
        d = fetch.shared_dir() / "fas-dev"
        images_dir = d if d.is_dir() else None
    fl, q8 = present.get(("blazeface_short", "float32")), present.get(("blazeface_short", "int8"))
    if images_dir is None or not Path(images_dir).is_dir():
        skipped.append("BlazeFace int8 agreement: no development images (../shared/fas-dev)")
    elif fl is None or q8 is None:
        skipped.append("BlazeFace int8 agreement: float32 or int8 artifact missing or mismatched")
    else:
        from edge.models.blazeface_int8 import calibration_images

        files = calibration_images(Path(images_dir))
        say(f"BlazeFace float32 vs int8 on {len(files)} images in {images_dir}")
        try:
            a = detector_agreement(fl, q8, files)
        except ImportError as err:
            skipped.append(f"BlazeFace int8 agreement: detector unavailable ({err})")
        else:
            iou_ok = a.faces > 0 and a.iou_median >= DETECTOR_MIN_MEDIAN_IOU
            checks.append(Check("blazeface_short", "int8 box IoU median", f"{a.iou_median:.3f}",
                                f">= {DETECTOR_MIN_MEDIAN_IOU}", iou_ok))
            checks.append(Check("blazeface_short", "int8 faces lost", f"{a.lost} of {a.faces}",
                                f"<= {DETECTOR_MAX_LOST}", a.faces > 0 and a.lost <= DETECTOR_MAX_LOST))
            checks.append(Check("blazeface_short", "int8 box IoU min (info)", f"{a.iou_min:.3f}", "-", True))
            checks.append(Check("blazeface_short", "int8 extra faces (info)", str(a.extra), "-", True))
            checks.append(Check("blazeface_short", "int8 weak extra detections missed (info)", str(a.lost_minor),
                                "-", True))
    _verify_descriptor(checks, skipped, say)
    return VerifyReport(tuple(checks), tuple(skipped))


DESCRIPTOR_FLOAT_MAX_ABS = 1e-4  # the float32 face ResNet against dlib's own descriptors
DESCRIPTOR_INT8_MAX_PAIR_DELTA = 0.05  # int8: every pair distance within this of dlib's


def _verify_descriptor(checks: list, skipped: list, say) -> None:
    """The optional face-match model (built with --with face-match): hashes and the dlib golden descriptors."""
    from edge.models.build import dlib_golden_path

    manifests = [m for m in list_manifests("all") if m.name == "dlib_resnet"]
    if not manifests:
        return
    m = manifests[0]
    built = {v: build_dir() / a.file for v, a in m.artifacts.items() if (build_dir() / a.file).is_file()}
    if not built:
        skipped.append("dlib_resnet: not built (optional: edge models build --with face-match)")
        return
    golden = dlib_golden_path()
    for variant, path in built.items():
        actual = sha256_file(path)
        ok = actual == m.artifact(variant).sha256
        checks.append(Check(m.name, f"{variant} sha256", actual[:12] if ok else f"{actual[:12]} (mismatch)",
                            m.artifact(variant).sha256[:12], ok))
        if not ok:
            continue
        if not golden.is_file():
            skipped.append(f"dlib_resnet {variant} golden check: no {golden}")
            continue
        from edge.match.descriptor import TFLiteDescriptor

        say(f"golden check of dlib_resnet {variant} on {golden}")
        with np.load(golden, allow_pickle=False) as z:
            chips, want = z["chips"], z["descriptors"]
        with TFLiteDescriptor(path) as d:
            got = np.stack([d.describe(c).copy() for c in chips])
        if variant == "float32":
            err = float(np.abs(got - want).max())
            checks.append(Check(m.name, "float32 max|d| vs dlib", _fmt(err), f"<= {DESCRIPTOR_FLOAT_MAX_ABS:g}",
                                err <= DESCRIPTOR_FLOAT_MAX_ABS))
        else:
            iu = np.triu_indices(len(got), 1)
            pd = lambda x: np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)[iu]  # noqa: E731
            delta = np.abs(pd(got) - pd(want))
            checks.append(Check(m.name, "int8 max|d pair distance|", f"{delta.max():.4f}",
                                f"<= {DESCRIPTOR_INT8_MAX_PAIR_DELTA:g}", delta.max() <= DESCRIPTOR_INT8_MAX_PAIR_DELTA))
            checks.append(Check(m.name, "int8 median|d pair distance| (info)", f"{np.median(delta):.4f}", "-", True))


__all__ = ["Check", "VerifyReport", "DetectorAgreement", "detector_agreement", "run_verify"]
