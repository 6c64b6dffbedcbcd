#!/usr/bin/env python3
"""OSDP reader latency: `edge run` as the reader (PD) and libosdp's control panel
(edge.bridge.osdp_panel) as two processes on a pty pair, Secure Channel on.

Measured per session, on the shared monotonic clock (CLOCK_MONOTONIC is system-wide):
- start -> first prompt: the panel submits MFG START .. the PROMPT reply reaches its callback
  (the panel's poll, the reader's session start and camera open, the next poll);
- verdict -> panel: the reader hands the VERDICT to libosdp .. it reaches the panel's callback
  (bounded by the panel's poll interval).

    python scripts/bench_osdp.py [--sessions 20] [--baudrate 115200]

A pty has no baud-rate timing: on a real RS-485 bus add the frame time (about 10 bits per
byte: a 40-byte SC-wrapped VERDICT takes 42 ms at 9600 baud, 3.5 ms at 115200).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--baudrate", type=int, default=115200)
    # realtime=1: frames at 30 fps as a camera delivers them (a file source would end the session at once)
    p.add_argument("--source", default="synthetic://?pattern=face&frames=30&realtime=1", help="camera spec of the reader")
    p.add_argument("--events", action="store_true", help="also print the panel's events")
    args = p.parse_args()

    from firmware_bridge.tests.fakes import PtyLink

    with tempfile.TemporaryDirectory() as tmp, PtyLink() as link:
        key = Path(tmp) / "scbk.key"
        fd = os.open(key, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, (os.urandom(16).hex() + "\n").encode())
        os.close(fd)
        cfg = Path(tmp) / "edge.toml"
        cfg.write_text(f'[camera]\nsource = "{args.source}"\n[trigger]\nkind = "osdp"\n[output]\nstdout = false\n'
                       f'[logging]\nlevel = "DEBUG"\n[osdp]\nport = "{link.paths[1]}"\nbaudrate = {args.baudrate}\n'
                       f'scbk_file = "{key}"\n')
        env = dict(os.environ, PYTHONPATH=str(REPO))
        rt = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        panel = subprocess.run(
            [sys.executable, "-m", "edge.bridge.osdp_panel", "--port", link.paths[0], "--baudrate", str(args.baudrate),
             "--scbk-file", str(key), "--sessions", str(args.sessions), "--json", "--pause-s", "0.1",
             "--online-timeout-s", "60"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
        rt.send_signal(signal.SIGTERM)
        _, rt_err = rt.communicate(timeout=30)
    events = [json.loads(x) for x in panel.stdout.splitlines() if x.startswith("{")]
    if args.events:
        print(panel.stdout)
    handed = {int(m.group(1)): float(m.group(2))
              for m in re.finditer(r"session (\d+): verdict handed to the bus at monotonic ([0-9.]+)", rt_err)}
    first = [e["first_prompt_ms"] for e in events if e["event"] == "session_end" and e.get("first_prompt_ms")]
    deliver = [(e["t_received"] - handed[e["session"]]) * 1000 for e in events
               if e["event"] == "verdict" and e["session"] in handed]
    results = [e["result"] for e in events if e["event"] == "session_end"]
    if len(first) < args.sessions or len(deliver) < args.sessions:
        print(f"bench_osdp: only {len(first)} prompts / {len(deliver)} verdicts measured of {args.sessions} sessions\n"
              f"panel: {panel.stderr[-1500:]}\nreader: {rt_err[-1500:]}", file=sys.stderr)
        return 1
    print(f"OSDP reader latency, {args.sessions} sessions, Secure Channel, pty at {args.baudrate} baud, "
          f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; verdicts: {sorted(set(results))}")
    print(f"{'':<26}{'median':>9}{'p10':>9}{'p90':>9}{'max':>9}  ms")
    for name, xs in (("START -> first PROMPT", first), ("VERDICT -> panel", deliver)):
        xs = sorted(xs)
        q = statistics.quantiles(xs, n=10)
        print(f"{name:<26}{statistics.median(xs):>9.1f}{q[0]:>9.1f}{q[-1]:>9.1f}{xs[-1]:>9.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
