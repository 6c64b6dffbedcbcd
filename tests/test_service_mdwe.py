"""MemoryDenyWriteExecute=yes in the unit is safe: the inference stack never needs W+X memory.

systemd implements MemoryDenyWriteExecute with a seccomp filter. Linux 6.3+
offers the same policy per process (prctl PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN):
a child process enables it, proves it is active (a W+X mmap is refused), then
imports numpy/OpenCV/LiteRT, runs every built model through LiteRT (XNNPACK
is applied by default to float models; threads=2 exercises its thread pool),
runs the OpenCV operations the pipeline uses, and creates a ctypes callback
(libffi closure). If any of them needed to generate code at run time, it
would crash here instead of on a gate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from timescale import scaled

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import ctypes, json, mmap, sys
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_MDWE, PR_GET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 66, 1
    if libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0) != 0:
        print(json.dumps({"unsupported": ctypes.get_errno()})); sys.exit(0)
    out = {"mdwe": libc.prctl(PR_GET_MDWE, 0, 0, 0, 0)}
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        out["wx_refused"] = False
    except OSError:
        out["wx_refused"] = True
    import numpy as np, cv2
    from edge.tflite import load_interpreter, interpreter_backend
    out["backend"] = interpreter_backend()
    img = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    small = cv2.resize(img, (128, 128), interpolation=cv2.INTER_AREA)
    cv2.cvtColor(small, cv2.COLOR_BGR2RGB)
    cv2.warpAffine(img, np.float32([[1, 0, 5], [0, 1, 5]]), (80, 80))
    cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var()
    ran = []
    for path in sys.argv[1:]:
        interp, inputs, outputs = load_interpreter(path, threads=2)
        for t in inputs:
            interp.set_tensor(t.index, np.zeros(t.shape, t.dtype))
        interp.invoke()
        interp.get_tensor(outputs[0].index)
        ran.append(path.rsplit("/", 1)[-1])
    out["ran"] = ran
    cb = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    out["ctypes_closure"] = cb(41)
    print(json.dumps(out))
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only")
def test_inference_stack_runs_under_mdwe():
    build = ROOT / "models" / "build"
    models = sorted(str(p) for p in build.glob("*.tflite")) if build.is_dir() else []
    if not models:
        pytest.skip("no built models in models/build (run: edge models build)")
    proc = subprocess.run([sys.executable, "-c", CHILD, *models], cwd=ROOT, capture_output=True, text=True,
                          timeout=scaled(300), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    if "unsupported" in out:
        pytest.skip(f"kernel lacks PR_SET_MDWE (Linux 6.3+), errno {out['unsupported']}")
    assert out["mdwe"] & 1 and out["wx_refused"]
    assert out["ran"] == [Path(m).name for m in models]
    assert out["ctypes_closure"] == 42
