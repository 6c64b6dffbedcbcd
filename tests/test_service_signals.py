"""SIGTERM sets the shutdown Event and the running session's cancel; the process exits within 2 s."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from timescale import scaled

from edge.bridge.base import SessionRequest
from edge.service.signals import EXIT_DEADLINE, ShutdownSignals

ROOT = Path(__file__).resolve().parents[1]


def test_signal_cancels_current_session_and_restores_handlers():
    request = SessionRequest(session_id=7)
    previous = signal.getsignal(signal.SIGTERM)
    fired: list[bool] = []
    with ShutdownSignals(lambda: request, deadline_s=5.0, on_deadline=lambda: fired.append(True)) as sd:
        os.kill(os.getpid(), signal.SIGTERM)
        assert sd.event.wait(scaled(2.0))
        assert request.cancel.is_set()
        assert sd.requested and sd.signum == signal.SIGTERM
    assert signal.getsignal(signal.SIGTERM) is previous
    time.sleep(0.05)
    assert fired == []  # restore() cancelled the deadline


def test_no_session_running_only_sets_shutdown():
    sd = ShutdownSignals(deadline_s=None)
    sd.request()
    assert sd.requested


def test_deadline_fires_when_the_loop_does_not_return():
    fired = threading.Event()
    sd = ShutdownSignals(deadline_s=0.1, on_deadline=fired.set)
    sd.request(signal.SIGTERM)
    sd.request(signal.SIGTERM)  # a second signal does not start a second timer
    assert fired.wait(scaled(2.0))
    sd.restore()


CHILD = textwrap.dedent(
    """
    import sys, threading, time
    from edge.bridge.base import SessionRequest
    from edge.service.signals import ShutdownSignals
    from edge.types import Reason

    hang = sys.argv[1] == "hang"
    current = {"req": None}
    sd = ShutdownSignals(lambda: current["req"]).install()
    req = SessionRequest(session_id=1)
    current["req"] = req
    print("session started", flush=True)
    while not req.cancel.is_set():      # a session loop checks cancel every frame
        time.sleep(0.01)
    reason = Reason.SHUTDOWN if sd.requested else Reason.ABORTED
    print(f"verdict FAULT {reason.name}", flush=True)
    if hang:
        time.sleep(30)                  # a stuck camera close: the deadline must end us
    sd.restore()
    sys.exit(0)
    """
)


def _run_child(mode: str) -> tuple[int, str, float]:
    p = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "session started"
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=scaled(20))
    return p.returncode, out, time.monotonic() - t0


def test_sigterm_ends_session_with_fault_shutdown_and_exits():
    rc, out, elapsed = _run_child("ok")
    assert rc == 0
    assert "verdict FAULT SHUTDOWN" in out
    assert elapsed < 2.0


def test_sigterm_with_a_stuck_loop_exits_at_the_deadline():
    rc, out, elapsed = _run_child("hang")
    assert "verdict FAULT SHUTDOWN" in out
    assert rc == EXIT_DEADLINE
    assert elapsed < 5.0  # the 2 s deadline, well inside TimeoutStopSec=5 on a loaded box
