#!/usr/bin/env python3
"""Which multi-frame rule for 1:1: the first frame, the mean descriptor of the best frames, or the
closest of them? Measured on simulated capture sessions of the dev faces (nothing is written).

Each NUAA live image is enrolled from the clean still (as `edge enroll IMAGE` does); every image also
becomes a 6-frame session as scripts/sim_sessions.py makes them (shake, +-4 % scale, exposure 80-100 %,
noise sigma 12, JPEG q40). Every (template, session) pair of different images is compared: same
subject = genuine, else impostor. Rules see the frames ranked by edge.match.session.frame_quality.

    nice -n 19 .venv/bin/python scripts/match_rules.py
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIVE = ROOT.parent / "shared" / "fas-dev" / "nuaa" / "live"
FRAMES, BEST = 6, 3


def main() -> int:
    from edge import config as config_mod
    from edge.match import template as tpl
    from edge.match.evaluate import ImageDescriber, subject_of, threshold_at_fmr
    from edge.match.session import frame_quality

    spec = importlib.util.spec_from_file_location("sim", ROOT / "scripts" / "sim_sessions.py")
    sim = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim)
    cfg = config_mod.from_dict({"match": {"enabled": True}})
    d = ImageDescriber.from_config(cfg)
    files = sorted(LIVE.glob("*.jpg"))
    subjects = [subject_of(f.name) for f in files]
    templates = np.full((len(files), 128), np.nan, np.float32)
    frames = np.full((len(files), FRAMES, 128), np.nan, np.float32)
    quality = np.zeros((len(files), FRAMES))
    rng = np.random.default_rng(0)
    for i, f in enumerate(files):
        img = cv2.imread(str(f))
        t = d(img)
        if t is not None:
            templates[i] = tpl.decode(tpl.encode(t)).descriptor  # through the 140-byte template, as deployed
        for k in range(FRAMES):
            frame = sim.simulate(img, rng, 12.0, 40)
            faces = d.detector.detect(frame)
            if not faces:
                continue
            lm = d.landmarks.estimate(frame, max(faces, key=lambda b: b.area))
            if lm is None:
                continue
            quality[i, k] = frame_quality(lm)
            frames[i, k] = d.matcher.describe(frame, lm)
    d.close()
    order = np.argsort(-quality, axis=1)
    rules = {}

    def dist(a, b):
        return np.linalg.norm(a.astype(np.float64) - b, axis=-1)

    n = len(files)
    pairs = [(i, j) for i in range(n) for j in range(n) if i != j]
    gen = np.array([subjects[i] == subjects[j] for i, j in pairs])
    for name in ("first frame", f"mean of best {BEST}", f"min of best {BEST}", f"mean of all {FRAMES}"):
        out = []
        for i, j in pairs:
            fr = frames[j][np.isfinite(frames[j]).all(axis=1)] if name != "first frame" else frames[j][:1]
            best = frames[j][order[j][:BEST]]
            best = best[np.isfinite(best).all(axis=1)]
            if name.startswith("mean of best"):
                v = dist(best.mean(axis=0), templates[i]) if len(best) else np.nan
            elif name.startswith("min of best"):
                v = dist(best, templates[i]).min() if len(best) else np.nan
            elif name.startswith("mean of all"):
                v = dist(fr.mean(axis=0), templates[i]) if len(fr) else np.nan
            else:
                v = dist(fr[0], templates[i])
            out.append(v)
        rules[name] = np.array(out)
    print(f"{n} images, {FRAMES}-frame sessions, {gen.sum()} genuine / {(~gen).sum()} impostor (template, session) pairs")
    print(f"{'rule':<16} {'FNMR@0.38':>9} {'FMR@0.38':>9} {'EER':>7} {'thr@FMR0.1%':>12} {'FNMR there':>10}")
    for name, v in rules.items():
        ok = np.isfinite(v)
        g, im = v[ok & gen], v[ok & ~gen]
        ts = np.linspace(0.2, 0.7, 501)
        fmr = np.array([(im <= t).mean() for t in ts])
        fnmr = np.array([(g > t).mean() for t in ts])
        k = int(np.argmin(np.abs(fmr - fnmr)))
        t01 = threshold_at_fmr(im, 0.001)
        print(f"{name:<16} {100 * (g > 0.38).mean():>8.2f}% {100 * (im <= 0.38).mean():>8.2f}% "
              f"{100 * (fmr[k] + fnmr[k]) / 2:>6.2f}% {t01:>12.3f} {100 * (g > t01).mean():>9.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
