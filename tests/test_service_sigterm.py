"""SIGTERM during a session of `edge run`: one FAULT/SHUTDOWN verdict, then exit within 2 s."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from timescale import scaled

ROOT = Path(__file__).resolve().parents[1]

# A session that cannot decide on its own for a minute: only the signal ends it.
CONFIG = """
[camera]
source = "synthetic://?pattern=face"
[trigger]
kind = "always"
[decision]
window = 100
pass_votes = 100
fail_votes = 100
timeout_ms = 60000
no_face_ms = 60000
[quality]
# the drawn face is far smaller than this: no frame ever votes, so no verdict
# can come before the signal however fast this machine reads frames
min_face_fraction = 0.85
"""


def test_sigterm_mid_session_reports_fault_shutdown_and_exits_fast(models_env, tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_MODELS_DIR": str(models_env)}
    p = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], cwd=tmp_path, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = False
        deadline = time.monotonic() + scaled(120)
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            if "session 1 started" in line:
                started = True
                break
        assert started, "the run loop never started a session"
        time.sleep(0.5)  # well inside the session (it cannot end by itself for 60 s)
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=scaled(30))
        elapsed = time.monotonic() - t0
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    verdicts = [v for v in (json.loads(line) for line in out.splitlines() if line.startswith("{")) if "verdict" in v]
    assert verdicts, err[-2000:]
    assert verdicts[-1]["verdict"] == "FAULT" and verdicts[-1]["reason"] == "SHUTDOWN", verdicts
    assert len(verdicts) == 1  # exactly one verdict for the one session
    assert p.returncode == 0, err[-2000:]
    assert elapsed < 2.0, f"took {elapsed:.2f} s from SIGTERM to exit"
