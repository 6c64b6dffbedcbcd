#!/usr/bin/env python3
"""The 1:1 figures of docs/MATCH.md from ../shared/models/dlib-face/golden.npz (nothing is written).

    .venv/bin/python scripts/match_figures.py

1. float32 and int8 descriptors from dlib's own chips against dlib's descriptors (max |delta|), and the
   agreement of all 5,050 pair distances;
2. our chip extraction from dlib's own 5 points (isolates the sampler);
3. mesh-aligned against dlib-aligned descriptors of the same image, every golden face (distribution);
4. what the 140-byte template's int8 quantisation does to distances.
Needs the face-match build (edge models build --with face-match) and ../shared beside the repository.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def pdist(x: np.ndarray) -> np.ndarray:
    iu = np.triu_indices(len(x), 1)
    return np.linalg.norm(x[:, None].astype(np.float64) - x[None], axis=2)[iu]


def q(x: np.ndarray) -> str:
    p = np.percentile(x, [0, 50, 90, 100])
    return f"min {p[0]:.4f}  median {p[1]:.4f}  p90 {p[2]:.4f}  max {p[3]:.4f}"


def main() -> int:
    import cv2

    from edge.detect.blazeface import BlazeFaceDetector
    from edge.landmarks.mesh import MeshLandmarker
    from edge.match import template as tpl
    from edge.match.align import ChipExtractor, mesh_points5
    from edge.match.descriptor import TFLiteDescriptor
    from edge.models.registry import artifact_path

    z = np.load(SHARED / "models" / "dlib-face" / "golden.npz", allow_pickle=False)
    names, chips, want, sp5 = z["names"], z["chips"], z["descriptors"], z["sp5_points"]
    print(f"{len(names)} golden faces")
    for variant in ("float32", "int8"):
        with TFLiteDescriptor.from_registry(variant) as d:
            got = np.stack([d.describe(c).copy() for c in chips])
        delta = np.abs(pdist(got) - pdist(want))
        print(f"{variant:>7} from dlib chips: max |delta| {np.abs(got - want).max():.2e}; self distance "
              f"{q(np.linalg.norm(got - want, axis=1))}")
        print(f"{'':>7} pair distances ({len(delta)} pairs) |delta|: {q(delta)}")
    own, mesh = [], []
    ex = ChipExtractor()
    det = BlazeFaceDetector(artifact_path("blazeface_short", "float32"))
    with TFLiteDescriptor.from_registry("float32") as d, MeshLandmarker.from_registry(blendshapes=False) as lm:
        for name, p, w in zip(names, sp5, want):
            img = cv2.imread(str(SHARED / "fas-dev" / str(name)))
            own.append(np.linalg.norm(d.describe(ex.extract(img, p.astype(np.float64))) - w))
            faces = det.detect(img)
            mesh_lm = lm.estimate(img, max(faces, key=lambda f: f.area)) if faces else None
            mesh.append(np.linalg.norm(d.describe(ex.extract(img, mesh_points5(mesh_lm.points_px))) - w)
                        if mesh_lm is not None else np.nan)
    own, mesh = np.array(own), np.array(mesh)
    print(f"our chip from dlib's 5 points vs dlib's chip, descriptor distance: {q(own)}")
    print(f"mesh-aligned vs dlib-aligned descriptor distance ({np.isfinite(mesh).sum()} faces): {q(mesh[np.isfinite(mesh)])}")
    print(f"  faces above 0.15: {(mesh > 0.15).sum()}, above 0.2: {(mesh > 0.2).sum()}")
    hist, edges = np.histogram(mesh[np.isfinite(mesh)], bins=np.arange(0.0, 0.3001, 0.05))
    print("  histogram: " + ", ".join(f"{a:.2f}-{b:.2f}: {n}" for a, b, n in zip(edges[:-1], edges[1:], hist)))
    rt = np.stack([tpl.decode(tpl.encode(w)).descriptor for w in want])
    print(f"template quantisation: distance template-vs-descriptor {q(np.linalg.norm(rt - want, axis=1))}")
    cross = np.linalg.norm(rt[:, None].astype(np.float64) - want[None], axis=2)
    exact = np.linalg.norm(want[:, None].astype(np.float64) - want[None], axis=2)
    print(f"  |delta| of every template-to-descriptor distance: {q(np.abs(cross - exact).ravel())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
