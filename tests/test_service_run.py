"""`edge run --service` under a stand-in for systemd: READY, watchdog pings, hardening, STOPPING.

The test plays PID 1's part: it binds the notify socket, starts the service
with NOTIFY_SOCKET and WATCHDOG_USEC set, reads the process's limits from
/proc while it runs, then stops it with SIGTERM as `systemctl stop` would.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from timescale import scaled
from test_service_sigterm import CONFIG  # a session only the signal ends: no frame ever votes

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.realtime
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only")
def test_service_mode_lifecycle(models_env, tmp_path):
    sock_path = tmp_path / "notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(sock_path))
    rx.settimeout(0.1)
    msgs: list[tuple[float, str]] = []
    stop = threading.Event()

    def receive():
        while not stop.is_set():
            try:
                msgs.append((time.monotonic(), rx.recv(4096).decode()))
            except socket.timeout:
                continue

    t = threading.Thread(target=receive, daemon=True)
    t.start()
    cfg = tmp_path / "edge.toml"
    cfg.write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EDGE_MODELS_DIR": str(models_env),
           "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "1000000"}
    p = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--service", "--config", str(cfg)],
                         cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + scaled(120)
        while not any(m.startswith("READY=1") for _, m in msgs) and time.monotonic() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert any(m.startswith("READY=1") for _, m in msgs), p.stderr.read() if p.poll() is not None else "no READY"
        time.sleep(3.0)
        limits = Path(f"/proc/{p.pid}/limits").read_text()
        status = Path(f"/proc/{p.pid}/status").read_text()
        p.send_signal(signal.SIGTERM)
        out, err = p.communicate(timeout=scaled(30))
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
        stop.set()
        t.join(1)
        rx.close()

    assert p.returncode == 0, err[-2000:]
    texts = [m for _, m in msgs]
    assert texts[0].startswith("READY=1")
    assert texts[-1] == "STOPPING=1\n"
    pings = [ts for ts, m in msgs if m == "WATCHDOG=1\n"]
    assert len(pings) >= 4, texts
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert 0.25 <= statistics.median(gaps) <= 0.75, gaps  # ~WATCHDOG_USEC / 2
    assert max(gaps) < 1.0, gaps  # never as late as the watchdog timeout
    # In-process hardening held while it ran.
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size")).split()
    assert core[4:6] == ["0", "0"], core
    vmlck = int(next(line for line in status.splitlines() if line.startswith("VmLck:")).split()[1])
    if os.geteuid() == 0:
        assert vmlck > 0  # mlockall succeeded (root has CAP_IPC_LOCK)
    verdicts = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert verdicts[-1]["verdict"] == "FAULT" and verdicts[-1]["reason"] == "SHUTDOWN"
