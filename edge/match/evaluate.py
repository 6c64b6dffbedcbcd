"""``edge eval --match``: genuine and impostor distances, FMR/FNMR at thresholds, the threshold for a
target FMR, on the live images of a dataset whose file names (or a ``subject`` manifest column) carry
the subject id.

A pair matches when its distance is at most the threshold. FMR = impostor pairs that match / impostor
pairs; FNMR = genuine pairs that do not match / genuine pairs (ISO/IEC 19795-1, one attempt per image,
every pair once). A small, single-population set gives a regression check, not a promise: integrators
must calibrate on their own population and cameras.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

SUBJECT_RE = r"^([0-9]+)_"  # NUAA: 0004_0004_01_06_03_0.jpg -> subject 0004
THRESHOLDS = (0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)
TARGET_FMRS = (0.001, 0.01)


def subject_of(name: str, pattern: str = SUBJECT_RE) -> str | None:
    m = re.search(pattern, Path(name).name)
    return m.group(1) if m else None


def pair_distances(desc: np.ndarray, subjects: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) distances over every unordered pair of rows with a finite descriptor."""
    ok = np.isfinite(desc).all(axis=1)
    d = desc[ok].astype(np.float64)
    s = np.asarray(subjects, dtype=object)[ok]
    iu = np.triu_indices(len(d), 1)
    dist = np.sqrt(((d[:, None, :] - d[None, :, :]) ** 2).sum(-1))[iu]
    same = (s[:, None] == s[None, :])[iu]
    return dist[same], dist[~same]


def threshold_at_fmr(impostor: np.ndarray, target: float) -> float:
    """The largest threshold whose FMR is at most ``target`` (matching is distance <= threshold)."""
    imp = np.sort(np.asarray(impostor, np.float64))
    k = int(math.floor(target * len(imp)))  # impostor matches allowed
    if k >= len(imp):
        return float(imp[-1])
    return float(np.nextafter(imp[k], -np.inf))


@dataclass(frozen=True)
class MatchReport:
    images: int
    described: int
    subjects: int
    skipped_no_subject: int
    genuine: np.ndarray = field(repr=False)
    impostor: np.ndarray = field(repr=False)
    threshold: float = 0.40

    def rates(self, t: float) -> tuple[float, float]:
        """(FMR, FNMR) at threshold ``t``."""
        fmr = float((self.impostor <= t).mean()) if len(self.impostor) else math.nan
        fnmr = float((self.genuine > t).mean()) if len(self.genuine) else math.nan
        return fmr, fnmr

    def to_dict(self) -> dict:
        ts = sorted(set(THRESHOLDS) | {self.threshold})
        return {
            "images": self.images, "described": self.described, "subjects": self.subjects,
            "skipped_no_subject": self.skipped_no_subject,
            "genuine_pairs": len(self.genuine), "impostor_pairs": len(self.impostor),
            "genuine": _summary(self.genuine), "impostor": _summary(self.impostor),
            "configured_threshold": self.threshold,
            "at_threshold": [{"threshold": t, "fmr": self.rates(t)[0], "fnmr": self.rates(t)[1]} for t in ts],
            "at_target_fmr": [{"target_fmr": f, "threshold": threshold_at_fmr(self.impostor, f),
                               "fnmr": self.rates(threshold_at_fmr(self.impostor, f))[1]} for f in TARGET_FMRS]
            if len(self.impostor) else [],
        }

    def render(self) -> str:
        d = self.to_dict()
        lines = [
            f"1:1 match evaluation: {self.described} of {self.images} live images described, "
            f"{self.subjects} subjects ({self.skipped_no_subject} images without a subject id skipped)",
            f"genuine pairs {len(self.genuine)}: distance median {d['genuine']['median']:.3f}, "
            f"max {d['genuine']['max']:.3f}",
            f"impostor pairs {len(self.impostor)}: distance min {d['impostor']['min']:.3f}, "
            f"median {d['impostor']['median']:.3f}",
            "",
            "threshold  FMR       FNMR",
        ]
        for row in d["at_threshold"]:
            mark = "  <- configured" if row["threshold"] == self.threshold else ""
            lines.append(f"{row['threshold']:<9.3f}  {_pct(row['fmr']):<8}  {_pct(row['fnmr'])}{mark}")
        for row in d["at_target_fmr"]:
            lines.append(f"threshold for FMR <= {_pct(row['target_fmr'])}: {row['threshold']:.3f} "
                         f"(FNMR {_pct(row['fnmr'])})")
        lines.append("A small single-population set: calibrate [match] threshold on your own population.")
        return "\n".join(lines) + "\n"


def _pct(v: float) -> str:
    return "n/a" if not math.isfinite(v) else f"{100 * v:.2f} %"


def _summary(x: np.ndarray) -> dict:
    if not len(x):
        return {"min": math.nan, "median": math.nan, "max": math.nan}
    return {"min": float(x.min()), "median": float(np.median(x)), "max": float(x.max())}


def describe_paths(paths: Sequence[Path], describe: Callable[[np.ndarray], np.ndarray | None],
                   progress: Callable[[], None] | None = None) -> np.ndarray:
    """(N, 128) descriptors (rows of NaN where no face or chip) of the images at ``paths``."""
    import cv2

    out = np.full((len(paths), 128), np.nan, np.float32)
    for i, p in enumerate(paths):
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is not None:
            d = describe(img)
            if d is not None:
                out[i] = d
        if progress is not None:
            progress()
    return out


class ImageDescriber:
    """Detector -> largest face -> mesh -> chip -> descriptor, on one still (enrolment-style)."""

    def __init__(self, detector, landmarks, matcher):
        self.detector, self.landmarks, self.matcher = detector, landmarks, matcher

    @classmethod
    def from_config(cls, cfg, variant: str | None = None) -> "ImageDescriber":
        from edge.assemble import model_path
        from edge.detect.blazeface import BlazeFaceDetector, BlazeFaceOptions
        from edge.landmarks.mesh import MeshLandmarker
        from edge.match.session import MeshMatcher

        det = BlazeFaceDetector(model_path(cfg, cfg.models.detector),
                                BlazeFaceOptions(min_score=cfg.detector.min_score, threads=cfg.models.threads))
        lm = MeshLandmarker.from_registry("float32", threads=cfg.models.threads, blendshapes=False)
        return cls(det, lm, MeshMatcher.from_registry(variant or cfg.match.variant, threads=cfg.models.threads))

    def __call__(self, image: np.ndarray) -> np.ndarray | None:
        faces = self.detector.detect(image)
        if not faces:
            return None
        lm = self.landmarks.estimate(image, max(faces, key=lambda f: f.area))
        if lm is None:
            return None
        return self.matcher.describe(image, lm)

    def close(self) -> None:
        for s in (self.detector, self.landmarks, self.matcher):
            s.close()


def evaluate(items, describe, *, threshold: float, pattern: str = SUBJECT_RE, progress=None) -> MatchReport:
    """``items``: (path, name, subject or None) of live images."""
    rows = []
    skipped = 0
    for path, name, subject in items:
        s = subject or subject_of(name, pattern)
        if s is None:
            skipped += 1
            continue
        rows.append((path, s))
    desc = describe_paths([p for p, _ in rows], describe, progress)
    subjects = [s for _, s in rows]
    genuine, impostor = pair_distances(desc, subjects)
    ok = np.isfinite(desc).all(axis=1)
    return MatchReport(len(rows) + skipped, int(ok.sum()), len({s for s, k in zip(subjects, ok) if k}), skipped,
                       genuine, impostor, threshold)


def _subjects_from_manifest(manifest: Path | None) -> dict[str, str]:
    import csv

    if manifest is None or not Path(manifest).is_file():
        return {}
    with open(manifest, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return {r["file"]: r["subject"] for r in rows if r.get("subject") and r.get("file")}


def run_eval(args, out, err) -> int:
    """``edge eval DATASET --match``: see the module doc."""
    import json

    from edge import config as config_mod
    from edge.eval.dataset import load_dataset

    dataset = load_dataset(args.dataset, args.manifest)
    manifest = Path(args.manifest) if args.manifest else Path(args.dataset) / "manifest.csv"
    subjects = _subjects_from_manifest(manifest)
    cfg = config_mod.load(args.config)
    threshold = args.threshold if args.threshold is not None else cfg.match.threshold
    items = [(it.path, it.rel, subjects.get(it.rel)) for it in dataset.items if it.bona_fide and it.kind == "image"]
    describer = ImageDescriber.from_config(cfg)
    done = [0]

    def tick() -> None:
        done[0] += 1
        if not args.quiet and err.isatty():
            err.write(f"\rdescribing {done[0]}/{len(items)}")
            err.flush()

    try:
        rep = evaluate(items, describer, threshold=threshold, pattern=args.subject_regex or SUBJECT_RE, progress=tick)
    finally:
        describer.close()
    if args.json:
        json.dump(rep.to_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(rep.render())
    return 0
