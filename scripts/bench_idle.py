#!/usr/bin/env python3
"""Idle cost of the runtime between sessions (issue 15 item 4).

Starts the real `edge run` (synthetic camera, built models, serial trigger with the
DEFAULT link timings) on one end of a pty pair and the reference controller state
machine on the other, waits for the link to come up, then measures the runtime
process's CPU time (utime + stime from /proc/PID/stat) and its voluntary context
switches (wake-ups, summed over its threads) over --seconds with nobody pressing
the trigger. Prints one table; exit 1 if CPU is above --max-percent.

    nice -n 19 .venv/bin/python scripts/bench_idle.py --seconds 30

A benchmark, not a test: the figure depends on the machine (docs/BENCH.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_bridge.controller import IDLE, Controller, ControllerConfig  # noqa: E402
from firmware_bridge.sim import SimBoard  # noqa: E402
from firmware_bridge.tests.helpers import runtime_config  # noqa: E402
from firmware_bridge.tests.fakes import ControllerThread, MasterPort, PtyLink  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def sched_ns(pid: int) -> tuple[int, dict[str, int]]:
    """Time on CPU in ns from /proc/PID/task/*/schedstat (exact, not tick-sampled), total and per thread."""
    per = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            ns = int((task / "schedstat").read_text().split()[0])
            name = (task / "comm").read_text().strip()
        except OSError:
            continue
        per[f"{name}[{task.name}]"] = ns
    return sum(per.values()), per


def wakeups(pid: int) -> int:
    n = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            for line in (task / "status").read_text().splitlines():
                if line.startswith("voluntary_ctxt_switches:"):
                    n += int(line.split()[1])
        except OSError:
            continue
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--warmup", type=float, default=5.0, help="seconds after link-up before measuring")
    ap.add_argument("--models", default=os.environ.get("EDGE_MODELS_DIR", str(REPO / "models")))
    ap.add_argument("--max-percent", type=float, default=0.1)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp, PtyLink() as link:
        cfg = runtime_config(Path(tmp), link.paths[1], "synthetic://?pattern=face")
        env = dict(os.environ, EDGE_MODELS_DIR=args.models, PYTHONPATH=str(REPO))
        proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        fd = os.open(link.paths[0], os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        port = MasterPort(fd)
        ctl = Controller(SimBoard(port.read, port.write), bytes(range(32)), ControllerConfig())
        try:
            with ControllerThread(ctl):
                end = time.monotonic() + 60
                while ctl.state != IDLE and time.monotonic() < end and proc.poll() is None:
                    time.sleep(0.05)
                if ctl.state != IDLE:
                    print("bench_idle: the runtime never came up:", proc.stderr.read() if proc.poll() is not None
                          else "(still starting)", file=sys.stderr)
                    return 2
                time.sleep(args.warmup)
                c0, w0, (s0, p0), t0 = cpu_s(proc.pid), wakeups(proc.pid), sched_ns(proc.pid), time.monotonic()
                time.sleep(args.seconds)
                c1, w1, (s1, p1), t1 = cpu_s(proc.pid), wakeups(proc.pid), sched_ns(proc.pid), time.monotonic()
                still_up = ctl.state == IDLE
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            os.close(fd)
    wall = t1 - t0
    pct = 100.0 * (s1 - s0) / 1e9 / wall
    print("| measure | value |")
    print("|---|---|")
    print(f"| wall time measured | {wall:.1f} s |")
    print(f"| runtime CPU time on CPU (schedstat, ns-exact) | {(s1 - s0) / 1e9:.4f} s |")
    print(f"| runtime CPU time (utime+stime, {1000 / TICK:.0f} ms ticks) | {c1 - c0:.3f} s |")
    print(f"| **idle CPU** | **{pct:.3f} % of one core** |")
    for name in sorted(p1):
        d = p1[name] - p0.get(name, 0)
        if d > 0:
            print(f"| thread {name} | {100.0 * d / 1e9 / wall:.4f} % |")
    print(f"| wake-ups (voluntary context switches, all threads) | {(w1 - w0) / wall:.1f} /s |")
    print(f"| link still up at the end | {'yes' if still_up else 'NO'} |")
    return 0 if pct <= args.max_percent and still_up else 1


if __name__ == "__main__":
    sys.exit(main())
