"""``edge eval --depth3d``: how well the 3-D check separates real head turns from turned planes.

Real: every labelled head turn of ../shared/action-dev (``turn_left``/``turn_right``
and the nested ones of ``head_circle``; ``look_up``/``look_down`` reported apart):
the reference is the most frontal frame (smallest |yaw|) from 20 frames before the
turn's start to 2 after it, the measured frame the one of the turn whose yaw differs
most from it, as the challenge engine would measure at the turn's peak.

Planar: every ../shared/fas-dev image (live and printed photos alike: once on
paper, both are a plane) rendered as a photo held in front of a pinhole camera,
once near frontal (|yaw|, |pitch|, |roll| <= 4 degrees) and once turned (|yaw|
15-35 degrees either way, pitch +-8, roll +-5), rotated about the face centre,
at a distance where the face spans 20-40 % of the focal length (a print 12 cm
wide at 30-60 cm), sensor noise sigma 3 and JPEG q85 per frame. ``bent`` draws
the same sheet curved about its vertical axis (sagitta 2-6 % of the face width,
toward or away from the camera), held identically in both frames.

Both sets run through the same detector and mesh model; the score is
:class:`edge.liveness.depth.DepthCheck`'s residual. This is a simulation of
planar attacks, not a recording of them: see docs/ACTIVE-EVAL.md for what it does
and does not show.
"""

from __future__ import annotations

import csv
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from edge.errors import EdgeError
from edge.eval import metrics as m
from edge.eval.actions import Clip, load_action_manifest
from edge.eval.meshes import MeshSeries, measure_series, read_frames
from edge.landmarks.base import FaceLandmarks
from edge.liveness.depth import DEFAULT_THRESHOLD, DepthCheck, DepthResult

log = logging.getLogger(__name__)

TURNS = frozenset({"turn_left", "turn_right", "slight_turn_right", "slight_turn_left", "small_turns"})
LOOKS = frozenset({"look_up", "look_down"})


# --------------------------------------------------------------------------- rendering a held photo


def rotation(yaw_deg: float, pitch_deg: float, roll_deg: float) -> np.ndarray:
    """Rotation matrix (camera frame: x right, y down, z forward), yaw about y, pitch about x, roll about z."""
    a, b, c = np.radians([yaw_deg, pitch_deg, roll_deg])
    ry = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return ry @ rx @ rz


def render_sheet(img: np.ndarray, centre: tuple[float, float], rot: np.ndarray, focal: float,
                 bend_radius: float | None = None, bend_sign: int = 1, fill: int = 128) -> np.ndarray:
    """``img`` as a sheet seen by a pinhole camera (same size, principal point at the centre).

    Unrotated and flat, the sheet lies at depth ``focal`` and projects onto itself. It is
    rotated by ``rot`` about the sheet point at ``centre`` (image pixels). With
    ``bend_radius`` (pixels) the sheet is a cylinder about its vertical axis through
    ``centre``, its sides bent away from the camera (``bend_sign`` 1) or toward it (-1).
    Each output pixel's ray is intersected with the sheet and the sheet point looked up.
    """
    h, w = img.shape[:2]
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([(xs - cx) / focal, (ys - cy) / focal, np.ones_like(xs)], axis=-1)
    c = np.array([centre[0] - cx, centre[1] - cy, focal])  # the rotation centre in camera space
    rt = rot.T
    o = rt @ (-c)  # the camera centre in sheet coordinates
    dl = d @ rot  # = (rt @ d) per pixel
    dx, dy, dz = dl[..., 0], dl[..., 1], dl[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        if bend_radius is None:
            t = -o[2] / dz
            s_u = o[0] + t * dx
            s_v = o[1] + t * dy
        else:
            r = float(bend_radius)
            zc = bend_sign * r  # cylinder axis at (0, *, zc), through the sheet's centre line at z = 0
            a = dx * dx + dz * dz
            b = 2 * (o[0] * dx + (o[2] - zc) * dz)
            cc = o[0] ** 2 + (o[2] - zc) ** 2 - r * r
            disc = np.maximum(b * b - 4 * a * cc, 0.0)
            sq = np.sqrt(disc)
            # The sheet is the half of the cylinder nearer the camera.
            t = np.where(bend_sign > 0, (-b - sq) / (2 * a), (-b + sq) / (2 * a))
            px, pz = o[0] + t * dx, o[2] + t * dz
            s_u = r * np.arctan2(px, bend_sign * (zc - pz))
            s_v = o[1] + t * dy
    mapx = (centre[0] + s_u).astype(np.float32)
    mapy = (centre[1] + s_v).astype(np.float32)
    bad = ~np.isfinite(mapx) | ~np.isfinite(mapy) | (t <= 0)
    mapx[bad] = -1e6
    mapy[bad] = -1e6
    return cv2.remap(img, mapx, mapy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(fill,) * 3)


def _camera_noise(img: np.ndarray, rng: np.random.Generator, sigma: float = 3.0, quality: int = 85) -> np.ndarray:
    f = img.astype(np.float32) + rng.normal(0.0, sigma, img.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(f, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EdgeError("JPEG encoding failed while simulating a camera")
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


@dataclass(frozen=True)
class SheetPose:
    yaw: float
    pitch: float
    roll: float
    face_over_focal: float
    sagitta: float  # bend as a fraction of the face width; 0 = flat
    bend_sign: int


def draw_pose(rng: np.random.Generator, *, turned: bool, sagitta: float, bend_sign: int,
              face_over_focal: float) -> SheetPose:
    if turned:
        yaw = float(rng.uniform(15.0, 35.0) * rng.choice((-1.0, 1.0)))
        pitch, roll = float(rng.uniform(-8, 8)), float(rng.uniform(-5, 5))
    else:
        yaw, pitch, roll = (float(v) for v in rng.uniform(-4, 4, 3))
    return SheetPose(yaw, pitch, roll, face_over_focal, sagitta, bend_sign)


def render_pose(img: np.ndarray, face_box: tuple[float, float, float, float], pose: SheetPose) -> np.ndarray:
    x, y, w, h = face_box
    centre = (x + w / 2.0, y + h / 2.0)
    focal = w / pose.face_over_focal
    radius = w / (8.0 * pose.sagitta) if pose.sagitta > 0 else None  # sagitta over the face width
    return render_sheet(img, centre, rotation(pose.yaw, pose.pitch, pose.roll), focal, radius, pose.bend_sign)


# --------------------------------------------------------------------------- the pairs


@dataclass(frozen=True)
class Pair:
    """One 3-D measurement with its provenance. ``kind``: turn, look, planar, bent."""

    kind: str
    source: str
    result: DepthResult
    truth_deg: float | None = None  # the turn the renderer applied (planar/bent) or the label's angle


def _measure_pair(check: DepthCheck, ref: FaceLandmarks, cur: FaceLandmarks) -> DepthResult:
    check.set_reference(ref)
    try:
        return check.measure(cur)
    finally:
        check.wipe()


def real_pairs(clips: list[Clip], series: dict[str, MeshSeries], check: DepthCheck,
               before: int = 20, after: int = 2) -> list[Pair]:
    """One pair per labelled turn (and up/down look): most frontal frame before it vs its peak."""
    pairs = []
    for clip in clips:
        s = series.get(clip.file)
        if s is None:
            continue
        for seg in clip.all_segments():
            kind = "turn" if seg.action in TURNS else "look" if seg.action in LOOKS else None
            if kind is None:
                continue
            lo, hi = max(0, seg.start - before), min(len(s) - 1, seg.start + after)
            idx = [i for i in range(lo, hi + 1) if s.present[i]]
            seg_idx = [i for i in range(seg.start, min(seg.end, len(s) - 1) + 1) if s.present[i]]
            if not idx or not seg_idx:
                log.info("%s %s@%d-%d: no mesh around the start or in the segment", clip.file, seg.action,
                         seg.start, seg.end)
                continue
            axis = 0 if kind == "turn" else 1
            ref = min(idx, key=lambda i: abs(float(s.pose[i, axis])))
            peak = max(seg_idx, key=lambda i: abs(float(s.pose[i, axis] - s.pose[ref, axis])))
            if peak == ref:
                continue
            name = f"{clip.file}:{seg.action}@{seg.start}-{seg.end}"
            res = _measure_pair(check, s.landmarks(ref), s.landmarks(peak))
            pairs.append(Pair(kind, name, res, seg.angle_deg))
            if kind == "turn":
                # Every frame of the turn against the same reference: the residual as the turn grows.
                check.set_reference(s.landmarks(ref))
                for i in seg_idx:
                    pairs.append(Pair("turn_frame", f"{name}#{i}", check.measure(s.landmarks(i)), seg.angle_deg))
                check.wipe()
    return pairs


def planar_pairs(images: list[tuple[str, np.ndarray]], measure: Callable, check: DepthCheck,
                 rng: np.random.Generator, draws: int = 2, progress: Callable[[int, int], None] | None = None
                 ) -> list[Pair]:
    """``draws`` flat and ``draws`` bent held-photo pairs per image (images without a face are skipped)."""
    pairs = []
    for k, (name, img) in enumerate(images):
        if progress:
            progress(k, len(images))
        faces = measure.detector.detect(img)
        if not faces:
            log.info("%s: no face in the original image; skipped", name)
            continue
        # The most confident face: in a few NUAA frames the person holding the print is also
        # detected, half hidden behind it, and a mesh of a hidden face measures nothing.
        f = max(faces, key=lambda b: b.score)
        box = (f.x, f.y, f.w, f.h)
        centre = (f.cx, f.cy)
        for kind in ("planar", "bent"):
            for _ in range(draws):
                sag = float(rng.uniform(0.02, 0.06)) if kind == "bent" else 0.0
                sign = int(rng.choice((-1, 1)))
                fof = float(rng.uniform(0.2, 0.4))
                p0 = draw_pose(rng, turned=False, sagitta=sag, bend_sign=sign, face_over_focal=fof)
                p1 = draw_pose(rng, turned=True, sagitta=sag, bend_sign=sign, face_over_focal=fof)
                # The rotation centre is the face centre, which therefore stays put in the image: a
                # second face in the picture (the person holding the print) is never taken for it.
                a = _camera_noise(render_pose(img, box, p0), rng)
                lm_a = measure(a, near=centre).landmarks
                if lm_a is None:
                    continue
                check.set_reference(lm_a)
                b = _camera_noise(render_pose(img, box, p1), rng)
                lm_b = measure(b, near=centre).landmarks
                if lm_b is None:
                    check.wipe()
                    continue
                res = check.measure(lm_b)
                check.wipe()
                pairs.append(Pair(kind, name, res, p1.yaw - p0.yaw))
    return pairs


# --------------------------------------------------------------------------- report


def _quantiles(v: np.ndarray) -> str:
    if v.size == 0:
        return "-"
    q = np.quantile(v, [0.0, 0.05, 0.5, 0.95, 1.0])
    return " ".join(f"{x:7.4f}" for x in q)


@dataclass(frozen=True)
class DepthReport:
    pairs: tuple[Pair, ...] = field(repr=False)
    threshold: float
    auc_flat: float
    auc_all: float
    auc_turned: float  # planar pairs whose mesh yaw change reached min_turn_deg only
    suggested: float  # the midpoint (in log) of the largest planar and the smallest real residual

    def render(self) -> str:
        lines = ["3-D check: homography residual (RMS, eye-corner distances) of turned vs neutral frame", ""]
        lines.append(f"{'set':<34}{'n':>5}   {'min':>7} {'p5':>7} {'median':>7} {'p95':>7} {'max':>7}   "
                     f"{'mesh |dyaw| median':>18}   {'>= thr':>6}")
        groups = [("real head turns (action-dev)", "turn", None), ("real up/down looks (action-dev)", "look", None),
                  ("held photo, flat (fas-dev)", "planar", None), ("held photo, bent 2-6 % (fas-dev)", "bent", None),
                  ("flat, mesh |dyaw| >= min turn", "planar", True), ("bent, mesh |dyaw| >= min turn", "bent", True)]
        for label, kind, turned in groups:
            ps = [p for p in self.pairs if p.kind == kind and (turned is None or p.result.turned == turned)]
            r = np.array([p.result.residual for p in ps])
            dy = np.array([abs(p.result.yaw_delta_deg if kind != "look" else p.result.pitch_delta_deg) for p in ps])
            acc = f"{np.mean(r >= self.threshold) * 100:5.1f}%" if r.size else "-"
            lines.append(f"{label:<34}{len(ps):>5}   {_quantiles(r)}   "
                         f"{(f'{np.median(dy):.1f}' if dy.size else '-'):>18}   {acc:>6}")
        lines += ["", "by the yaw change the mesh reports (every frame of every real turn; held photos):",
                  f"{'|dyaw| deg':<12}{'real n':>7} {'p5':>7} {'median':>7} {'>= thr':>7}   "
                  f"{'photo n':>7} {'p95':>7} {'max':>7} {'>= thr':>7}"]
        for lo, hi in ((0, 6), (6, 12), (12, 18), (18, 25), (25, 35), (35, 90)):
            def sel(kinds):
                return np.array([p.result.residual for p in self.pairs if p.kind in kinds
                                 and lo <= abs(p.result.yaw_delta_deg) < hi])
            r, f = sel(("turn_frame",)), sel(("planar", "bent"))
            rr = (f"{r.size:>7} {np.quantile(r, 0.05):7.4f} {np.median(r):7.4f} "
                  f"{np.mean(r >= self.threshold) * 100:6.1f}%") if r.size else f"{0:>7} {'-':>7} {'-':>7} {'-':>7}"
            ff = (f"{f.size:>7} {np.quantile(f, 0.95):7.4f} {f.max():7.4f} "
                  f"{np.mean(f >= self.threshold) * 100:6.1f}%") if f.size else f"{0:>7} {'-':>7} {'-':>7} {'-':>7}"
            lines.append(f"{f'{lo}-{hi}':<12}{rr}   {ff}")
        turned = (f"{self.auc_turned:.4f}" if math.isfinite(self.auc_turned)
                  else "- (no photo pair reached it)")
        lines += ["", f"AUC real turns vs flat photos: {self.auc_flat:.4f}; vs flat + bent: {self.auc_all:.4f}; "
                      f"vs photo pairs whose mesh yaw moved >= min turn: {turned}",
                  f"threshold {self.threshold:.4f} (residual >= threshold counts as 3-D); "
                  f"midpoint of max flat/bent and min real: {self.suggested:.4f}"]
        return "\n".join(lines) + "\n"


def _auc(real: list[float], fake: list[float]) -> float:
    if not real or not fake:
        return float("nan")
    return m.auc(m.Scores.from_lists([min(v, 1e9) for v in real], [min(v, 1e9) for v in fake]))


def build_report(pairs: list[Pair], threshold: float) -> DepthReport:
    real = [p.result.residual for p in pairs if p.kind == "turn"]
    flat = [p.result.residual for p in pairs if p.kind == "planar"]
    bent = [p.result.residual for p in pairs if p.kind == "bent"]
    turned = [p.result.residual for p in pairs if p.kind in ("planar", "bent") and p.result.turned]
    fin = [v for v in flat + bent if math.isfinite(v)]
    sugg = math.sqrt(max(fin) * min(real)) if fin and real and min(real) > 0 else float("nan")
    return DepthReport(tuple(pairs), threshold, _auc(real, flat), _auc(real, flat + bent), _auc(real, turned), sugg)


def run(shared: Path, measure, *, draws: int = 2, seed: int = 11, threshold: float = DEFAULT_THRESHOLD,
        progress: Callable[[str], None] | None = None) -> DepthReport:
    """The whole evaluation on a ../shared layout (action-dev/ and fas-dev/)."""
    action_root, fas_root = shared / "action-dev", shared / "fas-dev"
    for p in (action_root / "manifest.csv", fas_root / "manifest.csv"):
        if not p.is_file():
            raise EdgeError(f"{p} not found: --depth3d wants the shared data folder holding action-dev/ and fas-dev/")
    clips = [c for c in load_action_manifest(action_root / "manifest.csv")
             if any(s.action in TURNS or s.action in LOOKS for s in c.all_segments())]
    check = DepthCheck(threshold)
    series = {}
    for k, clip in enumerate(clips):
        if progress:
            progress(f"mesh {k + 1}/{len(clips)}: {clip.file}")
        series[clip.file] = measure_series(clip.file, read_frames(action_root / clip.file), clip.frames, clip.fps,
                                           measure)
    pairs = real_pairs(clips, series, check)
    for s in series.values():
        s.wipe()
    images = []
    with (fas_root / "manifest.csv").open(newline="") as fh:
        for row in csv.DictReader(fh):
            img = cv2.imread(str(fas_root / row["file"]), cv2.IMREAD_COLOR)
            if img is None:
                raise EdgeError(f"cannot read {fas_root / row['file']}")
            images.append((row["file"], img))
    step = max(1, len(images) // 10)
    pairs += planar_pairs(images, measure, check, np.random.default_rng(seed), draws,
                          (lambda k, n: progress(f"held photos {k}/{n}") if progress and k % step == 0 else None))
    return build_report(pairs, threshold)
