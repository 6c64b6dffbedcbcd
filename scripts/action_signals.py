"""Do the landmark signals move? BlazeFace + the Face Landmarker v2 mesh on the action-dev clips.

For every clip in ``../shared/action-dev/manifest.csv`` this runs the detector and
the mesh on every frame and prints, per labelled segment, the signal an active
challenge would use next to the clip's hold (still) level:

* blink / eyes_closed / wink / squint: peak of eyeBlinkLeft, eyeBlinkRight, and the
  eye-aspect ratio (EAR) of the mesh (and of the old 468-point ``face_landmark``
  model with ``--old``) against the hold median;
* turn_*: peak yaw (ours: > 0 = nose toward the image's right = the person's left);
* look_* / nod: peak pitch change; tilt_*: peak roll;
* mouth_open / yawn: peak jawOpen; smile: peak mouthSmile (mean of left and right).

Development tool: the clips are never committed, nothing is written unless
``--save DIR`` is given (per-frame signals as .npz, outside the repository).

    .venv/bin/python scripts/action_signals.py [--old] [--clips PATTERN] [--variant int8]
"""

from __future__ import annotations

import argparse
import csv
import math
import re
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge.detect.blazeface import BlazeFaceDetector  # noqa: E402
from edge.landmarks.base import BLENDSHAPE_INDEX  # noqa: E402
from edge.landmarks.mesh import MeshLandmarker  # noqa: E402
from edge.models.registry import artifact_path  # noqa: E402
from edge.tflite import load_interpreter  # noqa: E402

ACTION = re.compile(r"([a-z_]+)@(\d+)-(\d+)")
# Eye-aspect-ratio points (outer, upper x2, inner, lower x2) on the MediaPipe mesh, person's right / left eye.
EAR_RIGHT = (33, 160, 158, 133, 153, 144)
EAR_LEFT = (362, 385, 387, 263, 373, 380)
COLUMNS = ("yaw", "pitch", "roll", "blinkL", "blinkR", "jaw", "smile", "ear", "ear_old")


def ear(p: np.ndarray, idx) -> float:
    o, u1, u2, i, l2, l1 = (p[k, :2] for k in idx)
    return float((np.linalg.norm(u1 - l1) + np.linalg.norm(u2 - l2)) / (2.0 * np.linalg.norm(o - i) + 1e-6))


class OldMesh:
    """The 468-point face_landmark model (192x192, pixel/255) on the same rotated 1.5x ROI."""

    def __init__(self):
        self.interp, ins, outs = load_interpreter(artifact_path("face_landmark", "float32"))
        self.inp = ins[0]
        self.pts = next(o for o in outs if int(np.prod(o.shape)) == 1404)
        self.crop = np.zeros((192, 192, 3), np.uint8)

    def points(self, image, face) -> np.ndarray:
        side = 1.5 * max(face.w, face.h)
        (rx, ry), (lx, ly) = face.keypoints[0], face.keypoints[1]
        a = math.atan2(ly - ry, lx - rx)
        c, s, k = math.cos(a), math.sin(a), side / 192
        w = np.array([[k * c, -k * s, face.cx - 0.5 + k * (c - s) * (0.5 - 96)],
                      [k * s, k * c, face.cy - 0.5 + k * (s + c) * (0.5 - 96)]])
        cv2.warpAffine(image, w, (192, 192), dst=self.crop, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        x = cv2.cvtColor(self.crop, cv2.COLOR_BGR2RGB).astype(np.float32)[None] / 255.0
        self.interp.set_tensor(self.inp.index, x)
        self.interp.invoke()
        raw = self.interp.get_tensor(self.pts.index).reshape(468, 3)
        u, v = raw[:, 0] - 96, raw[:, 1] - 96
        out = np.zeros((468, 3), np.float32)
        out[:, 0] = face.cx + k * (c * u - s * v)
        out[:, 1] = face.cy + k * (s * u + c * v)
        return out


def read_frames(path: Path):
    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                return
            yield frame
    finally:
        cap.release()


def run_clip(path: Path, det, mesh, old) -> np.ndarray:
    rows = []
    for frame in read_frames(path):
        row = [math.nan] * len(COLUMNS)
        faces = det.detect(frame)
        if faces:
            face = max(faces, key=lambda f: f.area)
            r = mesh.estimate(frame, face)
            if r is not None:
                b = r.blendshapes
                row[:8] = [
                    r.yaw_deg, r.pitch_deg, r.roll_deg,
                    b[BLENDSHAPE_INDEX["eyeBlinkLeft"]], b[BLENDSHAPE_INDEX["eyeBlinkRight"]],
                    b[BLENDSHAPE_INDEX["jawOpen"]],
                    0.5 * (b[BLENDSHAPE_INDEX["mouthSmileLeft"]] + b[BLENDSHAPE_INDEX["mouthSmileRight"]]),
                    0.5 * (ear(r.points_px, EAR_RIGHT) + ear(r.points_px, EAR_LEFT)),
                ]
            if old is not None and len(face.keypoints) >= 2:
                p = old.points(frame, face)
                row[8] = 0.5 * (ear(p, EAR_RIGHT) + ear(p, EAR_LEFT))
        rows.append(row)
    return np.asarray(rows, dtype=np.float64)


def segments(actions: str):
    return [(m.group(1), int(m.group(2)), int(m.group(3))) for m in ACTION.finditer(actions)]


def hold_frames(n: int, segs) -> np.ndarray:
    mask = np.zeros(n, bool)
    holds = [(a, b) for name, a, b in segs if name.startswith("hold")]
    if holds:
        for a, b in holds:
            mask[a : b + 1] = True
    else:  # no hold label: frames at least 5 away from every labelled action
        mask[:] = True
        for _, a, b in segs:
            mask[max(0, a - 5) : b + 6] = False
    return mask


def nanmed(x) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def nanpeak(x, sign=1) -> float:
    x = x[np.isfinite(x)]
    return float(sign * np.max(sign * x)) if x.size else math.nan


def report(name: str, sig: np.ndarray, segs) -> list[str]:
    n = len(sig)
    hold = sig[hold_frames(n, segs)]
    col = {c: i for i, c in enumerate(COLUMNS)}
    h = {c: nanmed(hold[:, col[c]]) for c in COLUMNS}
    lines = [f"{name}: {n} frames, mesh on {np.isfinite(sig[:, 0]).mean():.0%}; hold median yaw {h['yaw']:+.1f} "
             f"pitch {h['pitch']:+.1f} roll {h['roll']:+.1f} blinkL {h['blinkL']:.2f} blinkR {h['blinkR']:.2f} "
             f"jaw {h['jaw']:.2f} smile {h['smile']:.2f} EAR {h['ear']:.3f} EAR_old {h['ear_old']:.3f}"]
    for act, a, b in segs:
        s = sig[a : min(b, n - 1) + 1]
        if not len(s):
            continue
        c = lambda k: s[:, col[k]]  # noqa: E731
        if act in ("blink", "eyes_closed", "wink", "squint", "eyes_squeezed", "eyes_wide"):
            ear_drop = 1 - nanpeak(c("ear"), -1) / h["ear"] if h["ear"] else math.nan
            old_drop = 1 - nanpeak(c("ear_old"), -1) / h["ear_old"] if h["ear_old"] else math.nan
            txt = (f"blinkL {nanpeak(c('blinkL')):.2f} blinkR {nanpeak(c('blinkR')):.2f}  "
                   f"EAR drop {ear_drop:+.0%}  EAR_old drop {old_drop:+.0%}")
        elif act.startswith("turn") or act in ("small_turns", "slight_turn_right", "head_circle"):
            y = c("yaw")
            txt = f"yaw min {nanpeak(y, -1):+.1f} max {nanpeak(y):+.1f}"
        elif act.startswith("look") or act == "nod":
            p = c("pitch") - h["pitch"]
            txt = f"pitch-hold min {nanpeak(p, -1):+.1f} max {nanpeak(p):+.1f}"
        elif act.startswith("tilt"):
            r = c("roll")
            txt = f"roll min {nanpeak(r, -1):+.1f} max {nanpeak(r):+.1f}; |yaw| max {nanpeak(np.abs(c('yaw'))):.1f}"
        elif act in ("mouth_open", "yawn"):
            txt = f"jawOpen max {nanpeak(c('jaw')):.2f}"
        elif act == "smile":
            txt = f"smile max {nanpeak(c('smile')):.2f}"
        elif act.startswith("hold") or act == "gaze_shift_only":
            txt = (f"|yaw| max {nanpeak(np.abs(c('yaw'))):.1f} |pitch-hold| max "
                   f"{nanpeak(np.abs(c('pitch') - h['pitch'])):.1f} blink max "
                   f"{nanpeak(np.fmax(c('blinkL'), c('blinkR'))):.2f} jaw max {nanpeak(c('jaw')):.2f} "
                   f"smile max {nanpeak(c('smile')):.2f}")
        else:
            continue
        lines.append(f"  {act:<18} {a:>4}-{b:<4} {txt}")
    return lines


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--root", type=Path, default=ROOT.parent / "shared" / "action-dev")
    ap.add_argument("--clips", default="", help="only clips whose file name contains this")
    ap.add_argument("--variant", default="float32", choices=("float32", "int8"))
    ap.add_argument("--old", action="store_true", help="also the old 468-point face_landmark model's EAR")
    ap.add_argument("--save", type=Path, help="write per-frame signals here (outside the repository)")
    args = ap.parse_args(argv)
    manifest = args.root / "manifest.csv"
    if not manifest.is_file():
        print(f"no {manifest}: the action-dev clips are not beside the repository", file=sys.stderr)
        return 2
    det = BlazeFaceDetector(artifact_path("blazeface_short", "float32"))
    mesh = MeshLandmarker.from_registry(args.variant)
    old = OldMesh() if args.old else None
    with manifest.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if args.clips in r["file"]]
    for r in rows:
        t = time.monotonic()
        sig = run_clip(args.root / r["file"], det, mesh, old)
        for line in report(r["file"], sig, segments(r["actions"])):
            print(line)
        print(f"  ({time.monotonic() - t:.1f} s)", flush=True)
        if args.save:
            args.save.mkdir(parents=True, exist_ok=True)
            np.savez(args.save / (r["file"].replace("/", "__") + ".npz"), sig=sig, columns=COLUMNS)
    mesh.close()
    det.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
