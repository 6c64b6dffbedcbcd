"""bench_upstream.py --upstream-src: upstream's own code is called the way its test.py calls it.

The checkout here is a stand-in with upstream's API (AntiSpoofPredict.get_bbox/predict,
CropImage.crop, parse_model_name) that records its calls; the real one is never fetched.
Needs the benchmark's own venv (PyTorch, OpenCV 4), like the benchmark itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH_PY = Path(os.environ.get("EDGE_BENCH_UPSTREAM_PYTHON", "/work/benchvenv/bin/python"))

FAKE_PREDICT = '''
import os, numpy as np
CALLS = os.environ["FAKE_UPSTREAM_LOG"]

class AntiSpoofPredict:
    def __init__(self, device_id):
        self.loads = 0

    def get_bbox(self, img):
        open(CALLS, "a").write("bbox\\n")
        return [10, 10, 40, 40]

    def predict(self, img, model_path):
        assert img.shape == (80, 80, 3)
        open(CALLS, "a").write("predict %s\\n" % os.path.basename(model_path))
        return np.array([[0.1, 0.8, 0.1]])
'''
FAKE_CROP = '''
import cv2
class CropImage:
    def crop(self, org_img, bbox, scale, out_w, out_h, crop=True):
        return cv2.resize(org_img, (out_w, out_h))
'''
FAKE_UTILITY = '''
def parse_model_name(name):
    info = name.split("_")[0:-1]
    h, w = info[-1].split("x")
    scale = None if info[0] == "org" else float(info[0])
    return int(h), int(w), name.split(".pth")[0].split("_")[-1], scale
'''


@pytest.mark.skipif(not BENCH_PY.exists(), reason=f"no benchmark venv at {BENCH_PY} (PyTorch lives only there)")
def test_upstream_own_code_runs_per_frame_as_its_test_py(tmp_path):
    root = tmp_path / "Silent-Face-Anti-Spoofing"
    (root / "src").mkdir(parents=True)
    (root / "src" / "__init__.py").write_text("")
    (root / "src" / "anti_spoof_predict.py").write_text(FAKE_PREDICT)
    (root / "src" / "generate_patches.py").write_text(FAKE_CROP)
    (root / "src" / "utility.py").write_text(FAKE_UTILITY)
    models = root / "resources" / "anti_spoof_models"
    models.mkdir(parents=True)
    for name in ("2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth"):
        (models / name).write_bytes(b"")
    clip = tmp_path / "clip.avi"
    w = cv2.VideoWriter(str(clip), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    log = tmp_path / "calls.txt"
    r = subprocess.run(
        [str(BENCH_PY), str(REPO / "scripts" / "bench_upstream.py"), "--upstream-src", str(root),
         "--source", str(clip), "--frames", "3", "--warmup", "1"],
        capture_output=True, text=True, env={**os.environ, "FAKE_UPSTREAM_LOG": str(log)}, timeout=300,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["own_code"] is True and out["frames"] == 3 and out["live_frames"] == 3
    calls = log.read_text().split("\n")
    per_frame = ["bbox", "predict 2.7_80x80_MiniFASNetV2.pth", "predict 4_0_0_80x80_MiniFASNetV1SE.pth"]
    assert calls[:-1] == per_frame * 4  # warm-up + 3 measured frames, each detect then both models


@pytest.mark.skipif(not BENCH_PY.exists(), reason=f"no benchmark venv at {BENCH_PY} (PyTorch lives only there)")
def test_upstream_src_that_is_not_a_checkout_is_refused(tmp_path):
    r = subprocess.run([str(BENCH_PY), str(REPO / "scripts" / "bench_upstream.py"), "--upstream-src", str(tmp_path),
                        "--source", "x.avi"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "not a Silent-Face-Anti-Spoofing checkout" in r.stderr
