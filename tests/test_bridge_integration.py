"""`edge run` and the controller simulator as two processes joined by a pty pair.

START -> PROMPT(s) -> RESULT -> ACK for PASS, FAIL, NO_FACE, TIMEOUT and FAULT
sessions, the relay pulsing only on PASS; and a runtime killed mid-session
leaves the relay off with the controller reporting FAULT after the heartbeat
timeout. Needs the built models (tests/conftest.py: built_models_dir); the
PASS session also needs a live face from ../shared.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LIVE_FACE = SHARED / "fas-dev" / "silentface" / "live" / "images__sample__image_T1.jpg"
sys.path.insert(0, str(REPO))  # firmware_bridge is not part of the installed edge package

from firmware_bridge.tests.fakes import PtyLink  # noqa: E402
from timescale import scaled  # noqa: E402

KEY_HEX = bytes(range(32)).hex()
HB_TIMEOUT_MS = 1000


class Pair:
    """One `edge run` and one simulator, each on its own end of a PtyLink."""

    def __init__(self, tmp: Path, models: Path, source: str, toml_extra: str = "", sim_args=(), sessions=1,
                 run_args=(), mode: str = "passive", camera_extra: str = ""):
        self.tmp = tmp
        key = tmp / "bridge.key"
        key.write_text(KEY_HEX + "\n")
        os.chmod(key, 0o600)
        self.link = PtyLink().__enter__()
        cfg = tmp / "edge.toml"
        cfg.write_text(
            f"""
[camera]
source = "{source}"
{camera_extra}
[trigger]
kind = "serial"
[serial]
port = "{self.link.paths[1]}"
key_file = "{key}"
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 1.0
result_retry_ms = 100
[liveness]
mode = "{mode}"
{toml_extra}
"""
        )
        env = dict(os.environ, EDGE_MODELS_DIR=str(models), PYTHONPATH=str(REPO))
        self.runtime = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg), *run_args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.sim = subprocess.Popen(
            [sys.executable, "-m", "firmware_bridge.sim", "--port", self.link.paths[0], "--key-file", str(key),
             "--sessions", str(sessions), "--json", "--duration", str(int(scaled(60))), "--trigger-every", "0.2", "--pulse-ms", "400",
             "--heartbeat-interval-ms", "200", "--heartbeat-timeout-ms", str(HB_TIMEOUT_MS), *sim_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.events: list[dict] = []
        self.live: queue.Queue[dict] = queue.Queue()
        self._reader = threading.Thread(target=self._read_sim, daemon=True)
        self._reader.start()

    def _read_sim(self):
        for line in self.sim.stdout:
            ev = json.loads(line)
            self.events.append(ev)
            self.live.put(ev)

    def wait_event(self, name: str, timeout: float = 30.0) -> dict:
        end = time.monotonic() + scaled(timeout)
        while time.monotonic() < end:
            try:
                ev = self.live.get(timeout=0.1)
            except queue.Empty:
                if self.sim.poll() is not None and self.live.empty():
                    break
                continue
            if ev["event"] == name:
                return ev
        raise AssertionError(f"no {name!r} event; got {[e['event'] for e in self.events]}\nruntime: {self.runtime_log()}")

    def finish(self, timeout: float = 60.0):
        """Wait for the simulator to end, then stop the runtime (SIGTERM) and collect both."""
        try:
            self.sim.wait(scaled(timeout))
        finally:
            self._reader.join(5)
            if self.runtime.poll() is None:
                self.runtime.send_signal(signal.SIGTERM)
            try:
                self.rt_out, self.rt_err = self.runtime.communicate(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.runtime.kill()
                self.rt_out, self.rt_err = self.runtime.communicate()
            self.sim_err = self.sim.stderr.read()
            self.close()
        return self

    def runtime_log(self) -> str:
        return getattr(self, "rt_err", "")[-3000:]

    def close(self):
        for p in (self.sim, self.runtime):
            if p.poll() is None:
                p.kill()
                p.wait()
        self.link.__exit__(None, None, None)

    def names(self):
        return [e["event"] for e in self.events]

    def summary(self) -> dict:
        assert self.events and self.events[-1]["event"] == "summary", self.names()
        return self.events[-1]

    def verdicts_printed(self) -> list[dict]:
        return [json.loads(x) for x in self.rt_out.splitlines() if x.startswith("{")]


def _check_session(pair: Pair, verdict: str, reason: str):
    from edge.types import Reason

    assert pair.sim.returncode == 0, pair.sim_err
    s = pair.summary()
    assert s["results"] == [verdict], (s, pair.runtime_log())
    names = pair.names()
    # the whole exchange, in order
    order = [names.index(n) for n in ("hello", "link_up", "start", "start_acked", "prompt", "result", "ack", "session_end")]
    assert order == sorted(order), names
    result = next(e for e in pair.events if e["event"] == "result")
    assert result["verdict"] == verdict and result["verified"] is True
    assert result["reason"] == int(Reason[reason])
    ons = [r for r in s["relay"] if r[1]]
    if verdict == "PASS":
        assert len(ons) == 1
        relay = [e for e in pair.events if e["event"] == "relay"]
        assert [e["on"] for e in relay] == [True, False]
        assert 0.3 <= relay[1]["t"] - relay[0]["t"] <= 3.0
    else:
        assert ons == [] and "relay" not in names
    assert sum(v for k, v in s["stats"].items() if k != "ok") == 0, s["stats"]
    printed = pair.verdicts_printed()
    assert printed and printed[0]["verdict"] == verdict and printed[0]["reason"] == reason, pair.rt_out


SCENARIOS = {
    # verdict: (camera source, extra TOML, reason)
    "FAIL": ("synthetic://?pattern=face&frames=3", "", "SPOOF_DETECTED"),  # a drawn face is not a live one
    "NO_FACE": ("synthetic://?pattern=black&frames=3", "", "NO_FACE_FOUND"),
    # a face that never passes the quality gate: faces seen, no votes
    "TIMEOUT": ("synthetic://?pattern=face&frames=3", "[quality]\nmin_face_fraction = 0.85", "FACE_TOO_SMALL"),
    "FAULT": ("synthetic://?pattern=face&fail_after=1", "", "CAMERA_LOST"),
}


@pytest.mark.parametrize("verdict", list(SCENARIOS))
def test_session_verdict_reaches_controller(tmp_path, built_models_dir, verdict):
    source, extra, reason = SCENARIOS[verdict]
    pair = Pair(tmp_path, built_models_dir, source, extra).finish()
    _check_session(pair, verdict, reason)


@pytest.mark.skipif(not LIVE_FACE.is_file(), reason=f"no live face image in ../shared ({LIVE_FACE})")
def test_pass_session_pulses_the_relay(tmp_path, built_models_dir):
    pair = Pair(tmp_path, built_models_dir, f"image://{LIVE_FACE}").finish()
    _check_session(pair, "PASS", "LIVE_CONFIRMED")


@pytest.mark.skipif(not LIVE_FACE.is_file(), reason=f"no live face image in ../shared ({LIVE_FACE})")
def test_service_mode_over_serial(tmp_path, built_models_dir):
    """The production path: --service (privacy guard armed during the session, no core dumps,
    mlock where permitted) with the controller on the serial link. Nothing is refused, and the
    PASS still reaches the controller and pulses its relay."""
    pair = Pair(tmp_path, built_models_dir, f"image://{LIVE_FACE}", run_args=("--service",)).finish()
    _check_session(pair, "PASS", "LIVE_CONFIRMED")
    assert "privacy guard refused" not in pair.rt_err, pair.runtime_log()


@pytest.mark.realtime
@pytest.mark.skipif(not LIVE_FACE.is_file(), reason=f"no live face image in ../shared ({LIVE_FACE})")
def test_active_challenge_over_serial_asks_the_order_the_controller_can_derive(tmp_path, built_models_dir):
    """Active mode with a controller: the order is HMAC(key, START nonce || "challenge"), so the
    controller knows what its person is asked; each action's PROMPT reaches it; a still photo
    held in front of the camera never answers, so the verdict is FAIL, never PASS."""
    from edge.challenge import ACTION_PROMPTS, challenge_seed, draw

    pair = Pair(tmp_path, built_models_dir, f"image://{LIVE_FACE}?loop=1", camera_extra="freeze_frames = 300\nfreeze_s = 10.0",
                sim_args=("--session-timeout-ms", "15000"), mode="active").finish(90)
    start = next(e for e in pair.events if e["event"] == "start")
    order = draw(challenge_seed(bytes.fromhex(KEY_HEX), bytes.fromhex(start["nonce"])), 2)
    codes = [e["code"] for e in pair.events if e["event"] == "prompt"]
    assert int(ACTION_PROMPTS[order[0]]) in codes, (order, codes, pair.runtime_log())
    assert int(ACTION_PROMPTS[order[1]]) not in codes  # the first action was never done
    assert pair.summary()["results"] == ["FAIL"]
    printed = [v for v in pair.verdicts_printed() if "verdict" in v]
    assert printed[0]["reason"] == "CHALLENGE_TIMEOUT" and printed[0]["challenge"] == list(order), pair.rt_out
    assert not any(on for _, on in pair.summary()["relay"])


def test_runtime_killed_mid_session_controller_faults_relay_off(tmp_path, built_models_dir):
    # a session that would run 20 s: no face, long budgets
    pair = Pair(tmp_path, built_models_dir, "synthetic://?pattern=black",
                "[decision]\ntimeout_ms = 20000\nno_face_ms = 20000", sim_args=("--session-timeout-ms", "30000"))
    try:
        pair.wait_event("prompt", 60)  # the session is running
        pair.runtime.kill()  # SIGKILL: no FAULT frame, no goodbye
        t_kill = time.monotonic()
        fault = pair.wait_event("fault", 15)
        t_fault = time.monotonic()
    finally:
        pair.finish()
    assert fault["why"] == "runtime_lost"
    assert HB_TIMEOUT_MS / 1000 * 0.8 <= t_fault - t_kill <= 10.0
    s = pair.summary()
    assert s["results"] == ["FAULT"]
    assert not any(on for _, on in s["relay"]) and "relay" not in pair.names()
    end = next(e for e in pair.events if e["event"] == "session_end")
    assert end["verdict"] == "FAULT" and end["reason"] == "runtime_lost"


NUAA_LIVE = SHARED / "fas-dev" / "nuaa" / "live"


@pytest.mark.skipif(not NUAA_LIVE.is_dir(), reason=f"no NUAA live faces in ../shared ({NUAA_LIVE})")
def test_card_and_face_over_serial(tmp_path, built_models_dir, monkeypatch, capsys):
    """Card + face over the link: the controller's card carries a template made by `edge enroll`; the
    card's owner, alive, gets PASS and the relay; another person gets FAIL FACE_MISMATCH and no relay."""
    from argparse import Namespace

    from edge.errors import ModelError
    from edge.match.cli import cmd_enroll
    from edge.models.registry import artifact_path

    monkeypatch.setenv("EDGE_MODELS_DIR", str(built_models_dir))
    try:
        artifact_path("dlib_resnet", "float32")
    except ModelError as err:
        pytest.skip(f"face-match model not built (edge models build --with face-match): {err}")
    files = sorted(p.name for p in NUAA_LIVE.iterdir())
    owner = [NUAA_LIVE / f for f in files if f.startswith("0004_")]
    other = next(NUAA_LIVE / f for f in files if f.startswith("0013_"))
    assert cmd_enroll(Namespace(input=str(owner[0]), source=None, config=None, hex=False)) == 0
    card = capsys.readouterr().out.strip()
    for face, verdict, reason in ((owner[5], "PASS", "LIVE_CONFIRMED"), (other, "FAIL", "FACE_MISMATCH")):
        run = tmp_path / verdict
        run.mkdir()
        pair = Pair(run, built_models_dir, f"image://{face}", "[match]\nenabled = true",
                    sim_args=("--template", card)).finish()
        _check_session(pair, verdict, reason)
        assert card not in pair.rt_out + pair.rt_err + "".join(json.dumps(e) for e in pair.events)
