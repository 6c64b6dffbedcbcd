"""The simulator CLI as integrators run it: a separate process on a pty, JSON lines out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from edge.bridge.serial_link import SerialBridge
from edge.types import Prompt, Reason, Verdict, VerdictKind

from .fakes import PtyLink
from .helpers import KEY

ROOT = Path(__file__).resolve().parents[2]


def _serve(bridge, verdicts, done):
    """A stand-in runtime: answers each START with the next verdict."""
    for kind in verdicts:
        req = bridge.wait(15.0)
        if req is None:
            break
        bridge.prompt(req, Prompt.LOOK_AT_CAMERA)
        reason = Reason.LIVE_CONFIRMED if kind is VerdictKind.PASS else Reason.SPOOF_DETECTED
        bridge.result(req, Verdict(kind, reason, 3, 6, 250, req.session_id))
    done.set()


def test_sim_runs_sessions_and_reports_json(tmp_path):
    keyf = tmp_path / "bridge.key"
    keyf.write_text(KEY.hex() + "\n")
    os.chmod(keyf, 0o600)
    with PtyLink() as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.sim", "--port", link.paths[0], "--key-file", str(keyf),
             "--sessions", "2", "--trigger-every", "0.1", "--pulse-ms", "200", "--heartbeat-interval-ms", "100",
             "--json", "--duration", "30"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        bridge = SerialBridge(link.paths[1], KEY, heartbeat_interval_s=0.1, heartbeat_timeout_s=1.0,
                              device_info=(("role", "runtime"), ("board", "pytest")))
        done = threading.Event()
        t = threading.Thread(target=_serve, args=(bridge, [VerdictKind.PASS, VerdictKind.FAIL], done), daemon=True)
        t.start()
        try:
            out, err = proc.communicate(timeout=40)
        finally:
            bridge.close()
    assert proc.returncode == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    names = [e["event"] for e in events]
    for n in ("boot", "hello", "link_up", "trigger", "start", "start_acked", "prompt", "result", "ack", "relay",
              "session_end", "summary"):
        assert n in names, (n, names)
    hello = events[names.index("hello")]
    assert hello["info"]["board"] == "pytest"
    summary = events[-1]
    assert summary["event"] == "summary" and summary["results"] == ["PASS", "FAIL"]
    ons = [r for r in summary["relay"] if r[1]]
    assert len(ons) == 1  # one pulse, for the PASS only
    relay_events = [e for e in events if e["event"] == "relay"]
    from edge.bridge.keys import key_fingerprint

    assert events[0] == {"event": "key", "t": events[0]["t"], "fingerprint": key_fingerprint(KEY)}
    assert events[1]["event"] == "boot" and events[1]["relay"] is False
    assert [e["on"] for e in relay_events] == [True, False]
    assert 0.15 <= relay_events[1]["t"] - relay_events[0]["t"] <= 2.0
    assert all(isinstance(e["t"], float) for e in events)
    assert sum(v for k, v in summary["stats"].items() if k != "ok") == 0


def test_sim_usage_errors(tmp_path):
    r = subprocess.run([sys.executable, "-m", "firmware_bridge.sim", "--port", "/dev/null", "--key-file",
                        str(tmp_path / "missing")], capture_output=True, text=True, cwd=ROOT, timeout=30)
    assert r.returncode == 2 and "missing" in r.stderr


def test_sim_plays_a_card_that_carries_a_template(tmp_path):
    """--template: every trigger sends the card's template in START, and the runtime receives it intact."""
    keyf = tmp_path / "bridge.key"
    keyf.write_text(KEY.hex() + "\n")
    os.chmod(keyf, 0o600)
    card = bytes(range(100, 240))  # 140 bytes, the size of an edge template
    import base64

    with PtyLink() as link:
        proc = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.sim", "--port", link.paths[0], "--key-file", str(keyf),
             "--sessions", "1", "--pulse-ms", "100", "--heartbeat-interval-ms", "100", "--json", "--duration", "30",
             "--template", base64.b64encode(card).decode()],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        )
        bridge = SerialBridge(link.paths[1], KEY, heartbeat_interval_s=0.1, heartbeat_timeout_s=1.0)
        try:
            req = bridge.wait(15.0)
            assert req is not None and req.template == card
            bridge.result(req, Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 6, 250, req.session_id))
            out, err = proc.communicate(timeout=40)
        finally:
            if proc.poll() is None:
                proc.kill()
            bridge.close()
    assert proc.returncode == 0, err
    assert card.hex() not in out and base64.b64encode(card).decode() not in out  # biometric: never printed


def test_sim_template_errors_are_one_line(tmp_path):
    keyf = tmp_path / "bridge.key"
    keyf.write_text(KEY.hex() + "\n")
    os.chmod(keyf, 0o600)
    for bad, why in (("not a template!", "neither base64 nor hex"), ("ab" * 200, "at most 175"), ("  ", "empty")):
        r = subprocess.run([sys.executable, "-m", "firmware_bridge.sim", "--port", "/dev/null", "--key-file", str(keyf),
                            "--template", bad], capture_output=True, text=True, cwd=ROOT, timeout=30)
        assert r.returncode == 2 and why in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert "Traceback" not in r.stderr
