#!/usr/bin/env python3
"""Upstream Silent-Face's pipeline, rebuilt for a side-by-side benchmark (PyTorch; NOT the runtime).

Runs in the benchmark's own optional environment (never the runtime's venv):

    scripts/bench-env.sh        # .venv-bench/: torch, OpenCV 4, Pillow

Upstream's code is not fetched (it must not enter the project); this is a
reimplementation from the facts in ../shared/models/silent-face/README.md and
ARCHITECTURE.md, checked against upstream's src/anti_spoof_predict.py, with
upstream's own weights:
- detection: upstream's RetinaFace Caffe model through OpenCV DNN (needs
  OpenCV 4: OpenCV 5 dropped the Caffe importer), input resized to ~192x192 of
  area keeping the aspect ratio, mean (104, 117, 123), best row of
  'detection_out';
- liveness: MiniFASNetV2 (crop scale 2.7) and MiniFASNetV1SE (scale 4.0) in
  PyTorch, crops by upstream's rule, raw 0..255 BGR as float NCHW, softmax
  summed over both models, argmax (index 1 = live).
With ``--upstream-src DIR`` (a local checkout of Silent-Face-Anti-Spoofing,
which is never fetched or committed by this project) it runs upstream's own
code instead, called the way its test.py calls it: from the checkout as the
working directory (its code opens ./resources/... relative to it), with its
own imports (PIL among them: Pillow is in the bench environment).

Two ways to run the rebuild:
- default: models loaded once and held, which favours upstream;
- ``--as-shipped``: as upstream's own code runs: ``AntiSpoofPredict.predict()``
  calls ``_load_model()`` on every call (builds the network, ``torch.load``s
  the checkpoint, strips the ``module.`` prefix, ``load_state_dict``), once per
  model per frame. That time is counted in the liveness stage.

``--check`` verifies the rebuilt MiniFASNetV2 against the 204 golden crops.
Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import time
from collections import OrderedDict
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "silent-face"
MODELS = (("2.7_80x80_MiniFASNetV2.pth", 2.7), ("4_0_0_80x80_MiniFASNetV1SE.pth", 4.0))


# --- MiniFASNet from a state_dict (ARCHITECTURE.md) ---------------------------------------------
class CB(nn.Module):
    """Conv (no bias) -> BatchNorm -> PReLU (LB: without PReLU)."""

    def __init__(self, sd, prefix, stride, padding, groups=1, prelu=True):
        super().__init__()
        w = sd[prefix + ".conv.weight"]
        out_c, in_per_group, kh, kw = w.shape
        self.conv = nn.Conv2d(in_per_group * groups, out_c, (kh, kw), stride, padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_c)
        self.prelu = nn.PReLU(out_c) if prelu else None

    def forward(self, x):
        x = self.bn(self.conv(x))
        return self.prelu(x) if self.prelu is not None else x


class SE(nn.Module):
    def __init__(self, sd, prefix):
        super().__init__()
        c_mid, c = sd[prefix + ".fc1.weight"].shape[:2]
        self.fc1 = nn.Conv2d(c, c_mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_mid)
        self.fc2 = nn.Conv2d(c_mid, c, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        g = x.mean(dim=(2, 3), keepdim=True)
        g = torch.relu(self.bn1(self.fc1(g)))
        return x * torch.sigmoid(self.bn2(self.fc2(g)))


class DW(nn.Module):
    def __init__(self, sd, prefix, stride, residual):
        super().__init__()
        self.conv = CB(sd, prefix + ".conv", 1, 0)
        groups = sd[prefix + ".conv_dw.conv.weight"].shape[0]
        self.conv_dw = CB(sd, prefix + ".conv_dw", stride, 1, groups=groups)
        self.project = CB(sd, prefix + ".project", 1, 0, prelu=False)
        self.se_module = SE(sd, prefix + ".se_module") if prefix + ".se_module.fc1.weight" in sd else None
        self.residual = residual

    def forward(self, x):
        y = self.project(self.conv_dw(self.conv(x)))
        if self.se_module is not None:
            y = self.se_module(y)
        return x + y if self.residual else y


class Residual(nn.Module):
    def __init__(self, sd, prefix):
        super().__init__()
        n = 1 + max(int(k[len(prefix) + 7 :].split(".")[0]) for k in sd if k.startswith(prefix + ".model."))
        self.model = nn.Sequential(*[DW(sd, f"{prefix}.model.{i}", 1, True) for i in range(n)])

    def forward(self, x):
        return self.model(x)


class MiniFASNet(nn.Module):
    def __init__(self, sd):
        super().__init__()
        self.conv1 = CB(sd, "conv1", 2, 1)
        self.conv2_dw = CB(sd, "conv2_dw", 1, 1, groups=sd["conv2_dw.conv.weight"].shape[0])
        self.conv_23 = DW(sd, "conv_23", 2, False)
        self.conv_3 = Residual(sd, "conv_3")
        self.conv_34 = DW(sd, "conv_34", 2, False)
        self.conv_4 = Residual(sd, "conv_4")
        self.conv_45 = DW(sd, "conv_45", 2, False)
        self.conv_5 = Residual(sd, "conv_5")
        self.conv_6_sep = CB(sd, "conv_6_sep", 1, 0)
        self.conv_6_dw = CB(sd, "conv_6_dw", 1, 0, groups=sd["conv_6_dw.conv.weight"].shape[0], prelu=False)
        self.linear = nn.Linear(*reversed(sd["linear.weight"].shape), bias=False)
        self.bn = nn.BatchNorm1d(sd["bn.weight"].shape[0])
        self.prob = nn.Linear(*reversed(sd["prob.weight"].shape), bias=False)

    def forward(self, x):
        for stage in (self.conv1, self.conv2_dw, self.conv_23, self.conv_3, self.conv_34, self.conv_4,
                      self.conv_45, self.conv_5, self.conv_6_sep, self.conv_6_dw):
            x = stage(x)
        return self.prob(self.bn(self.linear(torch.flatten(x, 1))))


def load_minifasnet(path: Path) -> MiniFASNet:
    raw = torch.load(str(path), map_location="cpu", weights_only=True)
    sd = OrderedDict((k[7:] if k.startswith("module.") else k, v) for k, v in raw.items())
    model = MiniFASNet(sd)
    model.load_state_dict(sd, strict=True)
    return model.eval()


# --- upstream's detection and crop ---------------------------------------------------------------
class RetinaFaceCaffe:
    def __init__(self, folder: Path):
        self.net = cv2.dnn.readNetFromCaffe(str(folder / "deploy.prototxt"), str(folder / "Widerface-RetinaFace.caffemodel"))

    def best_box(self, img: np.ndarray) -> tuple[int, int, int, int] | None:
        h, w = img.shape[:2]
        aspect = w / h
        if h * w >= 192 * 192:
            img = cv2.resize(img, (int(192 * math.sqrt(aspect)), int(192 / math.sqrt(aspect))),
                             interpolation=cv2.INTER_LINEAR)
        blob = cv2.dnn.blobFromImage(img, 1, mean=(104, 117, 123))
        self.net.setInput(blob, "data")
        out = self.net.forward("detection_out").squeeze()
        if out.ndim == 1:
            out = out[None]
        if out.size == 0:
            return None
        i = int(np.argmax(out[:, 2]))
        left, top, right, bottom = out[i, 3] * w, out[i, 4] * h, out[i, 5] * w, out[i, 6] * h
        return int(left), int(top), int(right - left + 1), int(bottom - top + 1)


def upstream_crop(img: np.ndarray, box, scale: float, size=(80, 80)) -> np.ndarray:
    src_h, src_w = img.shape[:2]
    x, y, bw, bh = box
    scale = min((src_h - 1) / bh, min((src_w - 1) / bw, scale))
    nw, nh = bw * scale, bh * scale
    cx, cy = bw / 2 + x, bh / 2 + y
    l, t, r, b = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if l < 0:
        r -= l
        l = 0
    if t < 0:
        b -= t
        t = 0
    if r > src_w - 1:
        l -= r - src_w + 1
        r = src_w - 1
    if b > src_h - 1:
        t -= b - src_h + 1
        b = src_h - 1
    l, t, r, b = int(l), int(t), int(r), int(b)
    return cv2.resize(img[t : b + 1, l : r + 1], size)


def to_tensor(crop: np.ndarray) -> torch.Tensor:
    # Upstream's ToTensor skips the /255: raw BGR values as float, NCHW.
    return torch.from_numpy(crop.transpose(2, 0, 1).astype(np.float32)).unsqueeze(0)


# --- runs -------------------------------------------------------------------------------------
def check_golden(model: MiniFASNet) -> dict:
    folder = SHARED / "golden"
    data = np.load(folder / "minifasnet_v2_crops.npz")
    arr, names = data["crops"], [str(n) for n in data["names"]]
    import csv

    with open(folder / "minifasnet_v2_reference.csv", newline="") as fh:
        by_file = {r["file"]: r for r in csv.DictReader(fh)}
    cols = ["p0", "p1_live", "p2"]
    ref = np.array([[float(by_file[n][c]) for c in cols] for n in names], np.float64)
    with torch.no_grad():
        got = torch.softmax(model(torch.from_numpy(arr.transpose(0, 3, 1, 2).astype(np.float32))), 1).numpy()
    return {"golden_crops": int(arr.shape[0]), "columns": cols, "max_abs_diff": float(np.abs(got - ref).max())}


def pct(values, q):
    return float(np.percentile(np.asarray(values) * 1e3, q)) if values else float("nan")


def rebuilt_steps(args):
    """Upstream's pipeline rebuilt here: (detect(img) -> box, models [(predict(img, box) -> probs, crop)])."""
    det = RetinaFaceCaffe(SHARED)
    steps = []
    for f, scale in MODELS:
        path, held = SHARED / f, load_minifasnet(SHARED / f)

        def predict(crop, path=path, held=held):
            model = load_minifasnet(path) if args.as_shipped else held  # as shipped: _load_model() every call
            return torch.softmax(model(to_tensor(crop)), 1).numpy()

        steps.append((lambda img, box, scale=scale: upstream_crop(img, box, scale), predict))
    return det.best_box, steps


def upstream_code_steps(args):
    """Upstream's own code from a local checkout (``--upstream-src``), called as its test.py does:
    ``AntiSpoofPredict.get_bbox``, then per model file ``CropImage.crop`` and ``predict`` (which
    reloads the weights on every call). Nothing of it is copied into this project."""
    import os

    root = Path(args.upstream_src).resolve()
    if not (root / "src" / "anti_spoof_predict.py").is_file():
        raise SystemExit(f"{root} is not a Silent-Face-Anti-Spoofing checkout (no src/anti_spoof_predict.py)")
    # Upstream runs from its root: test.py and AntiSpoofPredict open ./resources/... relative to the working
    # directory. The caller's --source was resolved before this (run() does it first).
    os.chdir(root)
    sys.path.insert(0, str(root))
    try:
        from src.anti_spoof_predict import AntiSpoofPredict  # noqa: E402  (upstream's own modules)
        from src.generate_patches import CropImage
        from src.utility import parse_model_name
    except ImportError as err:
        hint = " (upstream imports PIL: pip install pillow, as scripts/bench-env.sh does)" if err.name == "PIL" else ""
        raise SystemExit(f"upstream's code in {root} cannot be imported: {err}{hint}") from err

    model_dir = Path("resources") / "anti_spoof_models"  # relative, as upstream's test.py names it
    model_test = AntiSpoofPredict(0)
    cropper = CropImage()
    steps = []
    for name in sorted(os.listdir(model_dir)):
        h_input, w_input, _model_type, scale = parse_model_name(name)

        def crop(img, box, h=h_input, w=w_input, scale=scale):
            return cropper.crop(org_img=img, bbox=box, scale=scale, out_w=w, out_h=h, crop=scale is not None)

        steps.append((crop, lambda c, path=str(model_dir / name): model_test.predict(c, path)))
    return model_test.get_bbox, steps


def run(args) -> dict:
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    own_code = bool(getattr(args, "upstream_src", None))
    args.source = str(Path(args.source).resolve())  # before upstream_code_steps changes the working directory
    detect, steps = upstream_code_steps(args) if own_code else rebuilt_steps(args)
    cap = cv2.VideoCapture(args.source)
    if not cap.isOpened():
        raise SystemExit(f"cannot open {args.source}")
    stages = {k: [] for k in ("capture", "detect", "crop", "liveness", "decision")}
    e2e = []
    live = frames = faces = 0
    cpu0 = wall0 = None
    total = args.warmup + args.frames
    with torch.no_grad():
        for i in range(total):
            if i == args.warmup:
                stages = {k: [] for k in stages}
                e2e = []
                cpu0, wall0 = time.process_time(), time.perf_counter()
            t0 = time.perf_counter()
            ok, img = cap.read()  # upstream decodes into a new array per frame
            if not ok:
                cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                ok, img = cap.read()
            t1 = time.perf_counter()
            box = detect(img)
            t2 = time.perf_counter()
            crop_s = live_s = 0.0
            pred = np.zeros((1, 3), np.float32)
            if box is not None and box[2] > 0 and box[3] > 0:
                for crop_fn, predict in steps:
                    c0 = time.perf_counter()
                    crop = crop_fn(img, box)
                    c1 = time.perf_counter()
                    pred += predict(crop)
                    c2 = time.perf_counter()
                    crop_s += c1 - c0
                    live_s += c2 - c1
            t3 = time.perf_counter()
            label = int(np.argmax(pred))
            t4 = time.perf_counter()
            if i >= args.warmup:
                frames += 1
                faces += box is not None
                live += label == 1
                for k, v in (("capture", t1 - t0), ("detect", t2 - t1), ("crop", crop_s), ("liveness", live_s),
                             ("decision", t4 - t3)):
                    stages[k].append(v)
                e2e.append(t4 - t0)
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    if own_code:
        name = f"upstream's own code from {args.upstream_src} (its test.py steps; weights reloaded per predict())"
    else:
        name = ("upstream (rebuilt): RetinaFace Caffe (cv2.dnn) + MiniFASNetV2+V1SE (PyTorch)"
                + (", weights reloaded per predict() as shipped" if args.as_shipped else ", models held in memory"))
    return {
        "pipeline": name,
        "as_shipped": bool(args.as_shipped or own_code),
        "own_code": own_code,
        "threads": args.threads,
        "frames": frames,
        "faces": faces,
        "live_frames": live,
        "fps": frames / wall,
        "e2e": {"p50_ms": pct(e2e, 50), "p99_ms": pct(e2e, 99), "mean_ms": float(np.mean(e2e) * 1e3)},
        "cpu_ms_per_frame": cpu / frames * 1e3,
        "stages": {k: {"p50_ms": pct(v, 50), "p99_ms": pct(v, 99)} for k, v in stages.items()},
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "versions": {"torch": torch.__version__, "opencv": cv2.__version__, "numpy": np.__version__},
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--source", help="video file (the frames the edge benchmark uses)")
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--as-shipped", action="store_true",
                   help="reload the weights on every predict(), as upstream's AntiSpoofPredict does")
    p.add_argument("--upstream-src", metavar="DIR",
                   help="a local checkout of Silent-Face-Anti-Spoofing: run its own code instead of the rebuild")
    p.add_argument("--check", action="store_true", help="compare the rebuilt MiniFASNetV2 with the golden crops")
    args = p.parse_args(argv)
    if not args.upstream_src and not (SHARED / "deploy.prototxt").is_file():
        print(json.dumps({"error": f"upstream models not found under {SHARED}"}))
        return 2
    if args.check:
        torch.set_num_threads(args.threads)
        out = check_golden(load_minifasnet(SHARED / MODELS[0][0]))
    else:
        if not args.source:
            p.error("--source is required unless --check")
        out = run(args)
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
