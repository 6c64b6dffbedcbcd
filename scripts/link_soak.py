#!/usr/bin/env python3
"""Soak the controller link through the fault-injection proxy (issue 12).

    nice -n 19 .venv/bin/python scripts/link_soak.py --sessions 10000 --loss 0.01 --corrupt 0.005 --restart-every 500

Three parties on real ttys: the reference controller state machine (this process,
firmware_bridge/controller.py, polled every 2 ms), the fault proxy (this process,
firmware_bridge/tests/faultproxy.py: drops, corrupts, duplicates, delays and
reorders frames at the given rates in each direction) and a runtime process
running the real SerialBridge (edge/bridge/serial_link.py) with a stand-in runner
that answers each START at once with PASS or FAIL (drawn from the nonce) and
prints what it decided. Every --restart-every sessions one side restarts, in
turn: the runtime process is SIGKILLed and started again, or the controller
"reboots" (a new Controller on a reopened tty).

Checks, printed as a table (exit 1 if one fails):
  * relay pulses == PASS verdicts accepted by the controller, and every accepted
    PASS is one the runtime really decided for that (session, nonce);
  * no pulse for anything else;
  * every restart recovered (link keyed and IDLE) within 2 s of the restarted side
    being up (the runtime: its port open; the controller: rebooted);
  * RSS flat: the runtime's RSS after its first 100 sessions vs at its end, and
    this process's (controller + proxy) over the run.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_bridge import protocol as P  # noqa: E402
from firmware_bridge.controller import IDLE, Controller, ControllerConfig  # noqa: E402
from firmware_bridge.sim import SimBoard  # noqa: E402
from firmware_bridge.tests.fakes import ControllerThread, MasterPort  # noqa: E402
from firmware_bridge.tests.faultproxy import FaultProxy, Rates  # noqa: E402

KEY = bytes(range(32))

RUNTIME = r"""
import sys, time, os
sys.path.insert(0, sys.argv[2])
from edge.bridge.serial_link import SerialBridge
from edge.types import Reason, Verdict, VerdictKind
b = SerialBridge(sys.argv[1], bytes(range(32)), device_info=(("role", "runtime"), ("board", "soak")))
print("ready", flush=True)
while True:
    req = b.wait(1.0)
    if req is None:
        continue
    passed = req.nonce[0] < 128
    v = Verdict(VerdictKind.PASS if passed else VerdictKind.FAIL,
                Reason.LIVE_CONFIRMED if passed else Reason.SPOOF_DETECTED, 3, 5, 40, req.session_id)
    print("decided", req.session_id, req.nonce.hex(), "PASS" if passed else "FAIL", len(req.template), flush=True)
    b.result(req, v)
"""


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Runtime:
    def __init__(self, path: str):
        self.decided: dict[tuple[int, str], str] = {}
        self.proc = None
        self.path = path
        self.ready_at = 0.0
        self.spawned_at = 0.0
        self.rss_after_100 = None
        self.sessions = 0
        self.rss_samples: list[tuple[int, int, int]] = []  # (generation, sessions in it, rss)
        self.generation = 0

    def start(self):
        self.generation += 1
        self.sessions = 0
        self.rss_after_100 = None
        self.spawned_at = time.monotonic()
        self._ready = threading.Event()
        self.proc = subprocess.Popen([sys.executable, "-c", RUNTIME, self.path, str(REPO)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO)
        threading.Thread(target=self._read, args=(self.proc,), daemon=True).start()
        if not self._ready.wait(30):
            raise SystemExit("soak: the runtime process never became ready")

    def _read(self, proc):
        for line in proc.stdout:
            parts = line.split()
            if parts[0] == "ready":
                self.ready_at = time.monotonic()
                self._ready.set()
            elif parts[0] == "decided":
                self.decided[(int(parts[1]), parts[2])] = parts[3]

    def kill(self):
        self.proc.kill()
        self.proc.wait(10)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sessions", type=int, default=10_000)
    ap.add_argument("--loss", type=float, default=0.01, help="frame loss rate, each direction")
    ap.add_argument("--corrupt", type=float, default=0.005, help="frame corruption rate, each direction")
    ap.add_argument("--dup", type=float, default=0.0)
    ap.add_argument("--delay", type=float, default=0.0, help="rate of frames delayed up to 50 ms")
    ap.add_argument("--reorder", type=float, default=0.0)
    ap.add_argument("--restart-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=12)
    ap.add_argument("--pulse-ms", type=int, default=20)
    args = ap.parse_args(argv)

    rates = Rates(drop=args.loss, corrupt=args.corrupt, dup=args.dup, delay=args.delay, reorder=args.reorder)
    t_start = time.monotonic()
    with FaultProxy(seed=args.seed, rates={"C": rates, "R": rates}) as proxy:
        rt = Runtime(proxy.runtime_path)
        rt.start()
        fd = os.open(proxy.controller_path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        cfg = ControllerConfig(pulse_ms=args.pulse_ms)
        accepted_pass: list[tuple[int, str]] = []
        pulses = 0
        results: dict[str, int] = {}
        events_lock = threading.Lock()
        keyed_at = [0.0]

        def make_controller():
            port = MasterPort(fd)
            board = SimBoard(port.read, port.write)

            def on_event(name, f):
                nonlocal pulses
                with events_lock:
                    if name == "relay" and f["on"]:
                        pulses += 1
                    elif name == "result" and f["verdict"] == "PASS":
                        accepted_pass.append((f["session_id"], ctl_box[0].nonce.hex()))
                    elif name == "keyed":
                        keyed_at[0] = time.monotonic()

            ctl = Controller(board, KEY, cfg, on_event=on_event)
            return ctl

        ctl_box = [None]
        ctl_box[0] = make_controller()
        ct = ControllerThread(ctl_box[0]).__enter__()
        recoveries: list[tuple[str, float, float]] = []
        stuck = 0
        rss_self0 = None
        rss_self_samples = []
        template = bytes(range(140))

        def wait_idle(timeout):
            end = time.monotonic() + timeout
            while time.monotonic() < end:
                c = ctl_box[0]
                if c.state == IDLE and not c.relay_on:
                    return True
                time.sleep(0.002)
            return False

        restart_side = "runtime"
        for i in range(args.sessions):
            if i and args.restart_every and i % args.restart_every == 0:
                keyed_at[0] = 0.0
                t_begin = time.monotonic()
                if restart_side == "runtime":
                    rt.kill()
                    rt.start()
                    t0 = rt.ready_at  # its port is open and its first HELLO sent
                    t_spawn = rt.spawned_at
                else:
                    ct.__exit__()
                    ctl_box[0] = make_controller()  # reboot: relay off, no key, DOWN
                    ct = ControllerThread(ctl_box[0]).__enter__()
                    t0 = t_spawn = time.monotonic()
                ok = False
                end = time.monotonic() + 10
                while time.monotonic() < end:
                    c = ctl_box[0]
                    if keyed_at[0] >= t_begin and c.state == IDLE:
                        ok = True
                        break
                    time.sleep(0.002)
                done = max(keyed_at[0], t0)
                recoveries.append((restart_side, (done - t0) if ok else float("inf"),
                                   (done - t_spawn) if ok else float("inf")))
                restart_side = "controller" if restart_side == "runtime" else "runtime"
            if not wait_idle(10):
                stuck += 1
                continue
            c = ctl_box[0]
            before = c.sessions_ended
            if not ct.call(c.press, template if i % 3 == 0 else b""):
                stuck += 1
                continue
            end = time.monotonic() + cfg.session_timeout_ms / 1000 + 2
            while c.sessions_ended == before and time.monotonic() < end:
                time.sleep(0.001)
            v = c.results[-1] if c.sessions_ended > before else "NONE"
            results[v] = results.get(v, 0) + 1
            rt.sessions += 1
            if rt.sessions == 100:
                rt.rss_after_100 = rss_kb(rt.proc.pid)
            if rt.sessions % 100 == 0:
                rt.rss_samples.append((rt.generation, rt.sessions, rss_kb(rt.proc.pid)))
            if i == 200:
                rss_self0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if i % 500 == 0:
                rss_self_samples.append(rss_kb(os.getpid()))
            if i % 1000 == 0:
                print(f"  {i} sessions, {time.monotonic() - t_start:.0f} s, results {results}", file=sys.stderr,
                      flush=True)
        wait_idle(5)
        ct.__exit__()
        final_stats = dict(ctl_box[0].codec.stats)
        rt_rss_end = rss_kb(rt.proc.pid)
        rt.kill()
        os.close(fd)
        counts = proxy.counts
    elapsed = time.monotonic() - t_start
    genuine = all(rt.decided.get(k) == "PASS" for k in accepted_pass)
    not_genuine = sum(1 for k in accepted_pass if rt.decided.get(k) != "PASS")
    rec_times = [t for _, t, _ in recoveries]
    spawn_times = [t for s, _, t in recoveries if s == "runtime"]
    worst = max(rec_times) if rec_times else 0.0
    gens = {}
    for g, n, r in rt.rss_samples:
        gens.setdefault(g, []).append((n, r))
    rss_lines = []
    rss_growth = 0
    for g, xs in sorted(gens.items()):
        if len(xs) >= 2:
            rss_growth = max(rss_growth, xs[-1][1] - xs[0][1])
            rss_lines.append(f"gen {g}: {xs[0][1]} -> {xs[-1][1]} kB over sessions {xs[0][0]}..{xs[-1][0]}")
    ok_pulses = pulses == len(accepted_pass)
    ok = ok_pulses and genuine and worst <= 2.0 and stuck == 0 and rss_growth <= 2048

    print("| measure | value |")
    print("|---|---|")
    print(f"| sessions | {args.sessions} in {elapsed:.0f} s |")
    print(f"| fault rates each way | drop {args.loss:.3%}, corrupt {args.corrupt:.3%}, dup {args.dup:.3%}, "
          f"delay {args.delay:.3%}, reorder {args.reorder:.3%} |")
    for d, name in (("C", "controller -> runtime"), ("R", "runtime -> controller")):
        c = counts[d]
        print(f"| frames {name} | {c['frames']} ({c['drop']} dropped, {c['corrupt']} corrupted, {c['dup']} dup, "
              f"{c['delay']} delayed, {c['reorder']} reordered) |")
    print(f"| verdicts at the controller | {dict(sorted(results.items()))} |")
    print(f"| PASS accepted by the controller | {len(accepted_pass)} |")
    print(f"| relay pulses | {pulses} ({'==' if ok_pulses else '!='} accepted PASS) |")
    print(f"| accepted PASS the runtime did not decide | {not_genuine} |")
    print(f"| sessions that could not start (link down > 10 s) | {stuck} |")
    print(f"| restarts | {len(recoveries)} ({sum(1 for s, *_ in recoveries if s == 'runtime')} runtime, "
          f"{sum(1 for s, *_ in recoveries if s == 'controller')} controller) |")
    if rec_times:
        print(f"| link keyed after the restarted side is up (median / worst) | {statistics.median(rec_times):.3f} s"
              f" / {worst:.3f} s |")
    if spawn_times:
        print(f"| runtime restart: from spawn (Python start-up included), median / worst | "
              f"{statistics.median(spawn_times):.3f} s / {max(spawn_times):.3f} s |")
    print(f"| runtime RSS growth within one process (worst) | {rss_growth} kB ({'; '.join(rss_lines[:3])}) |")
    print(f"| runtime RSS at its end | {rt_rss_end} kB |")
    print(f"| soak process RSS (controller + proxy) | {rss_self_samples[0] if rss_self_samples else 0} -> "
          f"{rss_self_samples[-1] if rss_self_samples else 0} kB |")
    print(f"| last controller's frame counters | { {k: v for k, v in final_stats.items() if v} } |")
    print(f"| result | {'OK' if ok else 'FAILED'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
