#!/usr/bin/env python3
"""Turn a still-image dataset into simulated capture sessions, for `edge eval --fusion`.

Each image becomes ``--seeds`` independent sessions of ``--frames`` frames, as a
cheap camera in poor light would deliver them while the person holds still: a
few pixels of hand shake and ±4 % scale, exposure 80-100 %, sensor noise
(Gaussian, sigma 12 grey levels) and JPEG compression at quality 40,
independently per frame. The manifest's ``group`` column names the source image,
so `edge eval --fusion` resamples and splits by image, never by session. Seeded,
so the same command gives the same frames. The output is development data
derived from the input set: write it outside the repository (e.g. /tmp) and
delete it after use (10 frames x 3 seeds of the 204 dev images: about 400 MB).

    python scripts/sim_sessions.py ../shared/fas-dev ../shared/fas-dev/manifest.csv /tmp/sessions
    edge eval /tmp/sessions --manifest /tmp/sessions/manifest.csv --fusion
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import cv2
import numpy as np


def simulate(img: np.ndarray, rng: np.random.Generator, noise: float, quality: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = 1 + rng.uniform(-0.04, 0.04)
    dx, dy = rng.uniform(-4, 4, 2)
    m = np.array([[s, 0, dx + (1 - s) * w / 2], [0, s, dy + (1 - s) * h / 2]])
    f = cv2.warpAffine(img, m, (w, h), borderMode=cv2.BORDER_REFLECT)
    f = f.astype(np.float32) * rng.uniform(0.8, 1.0) + rng.normal(0, noise, f.shape)
    ok, buf = cv2.imencode(".jpg", np.clip(f, 0, 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(buf, cv2.IMREAD_COLOR)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path, help="dataset root")
    ap.add_argument("manifest", type=Path, help="manifest CSV (file,label,attack[,repo])")
    ap.add_argument("out", type=Path, help="output folder (outside the repository)")
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=3, help="independent sessions per image")
    ap.add_argument("--noise", type=float, default=12.0, help="sensor noise sigma in grey levels")
    ap.add_argument("--quality", type=int, default=40, help="JPEG quality")
    ap.add_argument("--seed", type=int, default=7)
    args = ap.parse_args(argv)
    repo = Path(__file__).resolve().parents[1]
    if args.out.resolve().is_relative_to(repo):
        print(f"sim_sessions: write outside the repository, not into {args.out}", file=sys.stderr)
        return 2
    rng = np.random.default_rng(args.seed)
    rows = list(csv.DictReader(args.manifest.open()))
    args.out.mkdir(parents=True, exist_ok=True)
    with (args.out / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "label", "attack", "repo", "group"])
        for k, r in enumerate(rows):
            img = cv2.imread(str(args.root / r["file"]))
            if img is None:
                print(f"sim_sessions: cannot read {r['file']}", file=sys.stderr)
                return 1
            for seed in range(args.seeds):
                d = args.out / r["label"] / f"{k:04d}-{seed}"
                d.mkdir(parents=True, exist_ok=True)
                for i in range(args.frames):
                    cv2.imwrite(str(d / f"{i:04d}.jpg"), simulate(img, rng, args.noise, args.quality))
                w.writerow([str(d.relative_to(args.out)), r["label"], r.get("attack", ""), r.get("repo", ""), r["file"]])
    print(f"{len(rows) * args.seeds} sessions of {args.frames} frames from {len(rows)} images in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
