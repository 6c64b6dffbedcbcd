#!/usr/bin/env python3
"""FAULT latency at the controller after the runtime dies or hangs (issue 12, finding 10).

    nice -n 19 .venv/bin/python scripts/link_fault_latency.py --runs 10

Each run starts the real `edge run` (synthetic camera, built models, serial trigger,
DEFAULT link timings) on one end of a pty pair, the reference controller state
machine (default ControllerConfig, polled every 2 ms) on the other, presses the
trigger, and 0.3 s into the session sends the runtime SIGKILL (no goodbye) or
SIGSTOP (hung: the process exists, the port stays open). The latency is the time
from the signal to the controller's `fault` event (runtime_lost), relay off.
Prints the median and worst of --runs runs per signal; exit 1 if a median is over 1 s.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_bridge.controller import IDLE, SESSION, Controller, ControllerConfig  # noqa: E402
from firmware_bridge.sim import SimBoard  # noqa: E402
from firmware_bridge.tests.helpers import runtime_config  # noqa: E402
from firmware_bridge.tests.fakes import ControllerThread, MasterPort, PtyLink  # noqa: E402


def one_run(sig: int, models: str) -> tuple[float, bool]:
    with tempfile.TemporaryDirectory() as tmp, PtyLink() as link:
        # no face: the session runs until its deadline, so it is still running when the signal comes
        cfg = runtime_config(Path(tmp), link.paths[1], "synthetic://?pattern=black&fps=15")
        env = dict(os.environ, EDGE_MODELS_DIR=models, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO, env=env)
        fd = os.open(link.paths[0], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        port = MasterPort(fd)
        faults: list[float] = []
        ctl = Controller(SimBoard(port.read, port.write), bytes(range(32)), ControllerConfig(),
                         on_event=lambda n, f: faults.append(time.monotonic()) if n == "fault" else None)
        try:
            with ControllerThread(ctl) as ct:
                end = time.monotonic() + 60
                while ctl.state != IDLE and time.monotonic() < end:
                    time.sleep(0.01)
                if ctl.state != IDLE:
                    raise SystemExit("link_fault_latency: the runtime never came up")
                time.sleep(0.5)
                ct.call(ctl.press)
                time.sleep(0.3)
                in_session = ctl.state == SESSION
                t_sig = time.monotonic()
                os.kill(proc.pid, sig)
                end = time.monotonic() + 10
                while not faults and time.monotonic() < end:
                    time.sleep(0.001)
                relay_off = not ctl.relay_on
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(10)
            os.close(fd)
        if not faults:
            return float("inf"), in_session
        assert relay_off
        return faults[0] - t_sig, in_session


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--models", default=os.environ.get("EDGE_MODELS_DIR", str(REPO / "models")))
    args = ap.parse_args(argv)
    cfg = ControllerConfig()
    print(f"defaults: runtime heartbeat 0.25 s, controller heartbeat timeout {cfg.heartbeat_timeout_ms} ms\n")
    print("| signal | runs | in a session | median | worst | best |")
    print("|---|---|---|---|---|---|")
    ok = True
    for name, sig in (("SIGKILL", signal.SIGKILL), ("SIGSTOP", signal.SIGSTOP)):
        lat, sess = [], 0
        for _ in range(args.runs):
            t, in_session = one_run(sig, args.models)
            lat.append(t)
            sess += in_session
        med = statistics.median(lat)
        ok = ok and med <= 1.0
        print(f"| {name} | {args.runs} | {sess} | {med * 1000:.0f} ms | {max(lat) * 1000:.0f} ms | "
              f"{min(lat) * 1000:.0f} ms |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
