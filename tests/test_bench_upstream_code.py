"""bench_upstream.py --upstream-src: upstream's own code is called the way its test.py calls it.

The checkout here is a stand-in laid out like upstream's (src/anti_spoof_predict.py, src/generate_patches.py,
src/utility.py, src/data_io/transform.py, resources/anti_spoof_models/, resources/detection_model/) with
upstream's API (AntiSpoofPredict.get_bbox/predict, CropImage.crop, parse_model_name) and its habits: it opens
./resources/... relative to the working directory and imports PIL. It records its calls; the real one is never
fetched. Needs the benchmark's own environment (PyTorch, OpenCV 4, Pillow: scripts/bench-env.sh makes
.venv-bench/, or set EDGE_BENCH_UPSTREAM_PYTHON), like the benchmark itself.
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
BENCH_PY = Path(os.environ.get("EDGE_BENCH_UPSTREAM_PYTHON", REPO / ".venv-bench" / "bin" / "python"))
NO_ENV = f"no benchmark environment at {BENCH_PY} (PyTorch lives only there): run scripts/bench-env.sh"


def _has_pil() -> bool:
    if not BENCH_PY.exists():
        return False
    return subprocess.run([str(BENCH_PY), "-c", "import PIL"], capture_output=True, timeout=60).returncode == 0


FAKE_PREDICT = '''
import os, numpy as np
from src.data_io import transform as trans  # upstream imports its transforms, which import PIL
CALLS = os.environ["FAKE_UPSTREAM_LOG"]

class AntiSpoofPredict:
    def __init__(self, device_id):
        # upstream's Detection opens its Caffe files relative to the working directory
        self.proto = open("./resources/detection_model/deploy.prototxt").read()

    def get_bbox(self, img):
        open(CALLS, "a").write("bbox\\n")
        return [10, 10, 40, 40]

    def predict(self, img, model_path):
        assert img.shape == (80, 80, 3)
        assert not os.path.isabs(model_path) and os.path.isfile(model_path), model_path
        open(CALLS, "a").write("predict %s\\n" % os.path.basename(model_path))
        return np.array([[0.1, 0.8, 0.1]])
'''
FAKE_TRANSFORM = '''
from PIL import Image  # noqa: F401  (as upstream's src/data_io/transform.py)
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


def _standin_checkout(root: Path) -> None:
    for rel, text in {"src/__init__.py": "", "src/anti_spoof_predict.py": FAKE_PREDICT,
                      "src/generate_patches.py": FAKE_CROP, "src/utility.py": FAKE_UTILITY,
                      "src/data_io/__init__.py": "", "src/data_io/transform.py": FAKE_TRANSFORM,
                      "resources/detection_model/deploy.prototxt": "name: 'stand-in'\n",
                      "resources/detection_model/Widerface-RetinaFace.caffemodel": ""}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    models = root / "resources" / "anti_spoof_models"
    models.mkdir(parents=True)
    for name in ("2.7_80x80_MiniFASNetV2.pth", "4_0_0_80x80_MiniFASNetV1SE.pth"):
        (models / name).write_bytes(b"")


@pytest.mark.skipif(not BENCH_PY.exists(), reason=NO_ENV)
def test_upstream_own_code_runs_per_frame_as_its_test_py(tmp_path):
    if not _has_pil():
        pytest.skip(f"no PIL in {BENCH_PY}: upstream's code imports it (scripts/bench-env.sh installs pillow)")
    root = tmp_path / "Silent-Face-Anti-Spoofing"
    _standin_checkout(root)
    elsewhere = tmp_path / "elsewhere"  # the caller's working directory is not the checkout
    elsewhere.mkdir()
    w = cv2.VideoWriter(str(elsewhere / "clip.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 48))
    for i in range(5):
        w.write(np.full((48, 64, 3), 40 * i, np.uint8))
    w.release()
    log = tmp_path / "calls.txt"
    r = subprocess.run(
        [str(BENCH_PY), str(REPO / "scripts" / "bench_upstream.py"), "--upstream-src", str(root),
         "--source", "clip.avi", "--frames", "3", "--warmup", "1"],  # a --source relative to the caller
        capture_output=True, text=True, env={**os.environ, "FAKE_UPSTREAM_LOG": str(log)}, timeout=300,
        cwd=elsewhere,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["own_code"] is True and out["frames"] == 3 and out["live_frames"] == 3
    calls = log.read_text().split("\n")
    per_frame = ["bbox", "predict 2.7_80x80_MiniFASNetV2.pth", "predict 4_0_0_80x80_MiniFASNetV1SE.pth"]
    assert calls[:-1] == per_frame * 4  # warm-up + 3 measured frames, each detect then both models


@pytest.mark.skipif(not BENCH_PY.exists(), reason=NO_ENV)
def test_upstream_src_that_is_not_a_checkout_is_refused(tmp_path):
    r = subprocess.run([str(BENCH_PY), str(REPO / "scripts" / "bench_upstream.py"), "--upstream-src", str(tmp_path),
                        "--source", "x.avi"], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "not a Silent-Face-Anti-Spoofing checkout" in r.stderr


def test_default_environment_is_project_relative_and_git_ignored():
    from edge import bench

    assert Path(bench.DEFAULT_UPSTREAM_PYTHON) == REPO / ".venv-bench" / "bin" / "python"
    assert "/.venv-bench/" in (REPO / ".gitignore").read_text().split()
    for doc in ("docs/BENCH.md", "scripts/bench_upstream.py", "edge/bench.py"):
        text = (REPO / doc).read_text()
        assert "/work/benchvenv" not in text, doc
        assert "scripts/bench-env.sh" in text, doc
