"""`edge run` as an OSDP reader (PD) and libosdp's control panel (edge.bridge.osdp_panel) as
two processes joined by a pty pair, Secure Channel enforced.

Each verdict goes panel MFG START -> PROMPTs (the panel echoes them to the reader as LED,
TEXT and buzzer commands) -> VERDICT, which the panel decodes and checks against its own
session id and nonce; a session is started and aborted; a camera fault raises the tamper
bit. Needs the built models (tests/conftest.py) and libosdp; PASS also needs a live face
from ../shared.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("osdp_sys", reason="libosdp is not installed (pip install 'libosdp==3.2.9')")

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
LIVE_FACE = SHARED / "fas-dev" / "silentface" / "live" / "images__sample__image_T1.jpg"
sys.path.insert(0, str(REPO))

from firmware_bridge.tests.fakes import PtyLink  # noqa: E402
from timescale import scaled  # noqa: E402

SCBK_HEX = bytes(range(16, 32)).hex()
ADDRESS = 7


def write_key(path: Path, hexkey: str = SCBK_HEX) -> Path:
    path.write_text(hexkey + "\n")
    os.chmod(path, 0o600)
    return path


class OsdpPair:
    """One `edge run` (the reader) and one osdp_panel (the panel), each on one end of a PtyLink."""

    def __init__(self, tmp: Path, models: Path, source: str, toml_extra: str = "", panel_args=(), osdp_extra: str = "",
                 panel_key: Path | None = None, run_args=(), mode: str = "passive", camera_extra: str = ""):
        self.tmp = tmp
        key = write_key(tmp / "scbk.key")
        self.link = PtyLink().__enter__()
        cfg = tmp / "edge.toml"
        cfg.write_text(f"""
[camera]
source = "{source}"
{camera_extra}
[liveness]
mode = "{mode}"  # passive: the wire's verdict paths; the challenge has its own test below
[trigger]
kind = "osdp"
[osdp]
port = "{self.link.paths[1]}"
baudrate = 115200
address = {ADDRESS}
scbk_file = "{key}"
serial_number = 4242
panel_timeout_ms = 1000
led_red_pin = 5
led_green_pin = 6
{osdp_extra}
{toml_extra}
""")
        # the reader's own LED on mock GPIO pins: it then reports LED control in PDCAP and the panel drives it
        env = dict(os.environ, EDGE_MODELS_DIR=str(models), PYTHONPATH=str(REPO), GPIOZERO_PIN_FACTORY="mock")
        self.runtime = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg), *run_args],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
        self.panel = subprocess.Popen(
            [sys.executable, "-m", "edge.bridge.osdp_panel", "--port", self.link.paths[0], "--baudrate", "115200",
             "--address", str(ADDRESS), "--scbk-file", str(panel_key or key), "--json", "--online-timeout-s", "30",
             *panel_args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)

    def finish(self, timeout: float = 60.0):
        timeout = scaled(timeout)
        try:
            self.panel_out, self.panel_err = self.panel.communicate(timeout=timeout)
        finally:
            if self.runtime.poll() is None:
                self.runtime.send_signal(signal.SIGTERM)
            try:
                self.rt_out, self.rt_err = self.runtime.communicate(timeout=scaled(20))
            except subprocess.TimeoutExpired:
                self.runtime.kill()
                self.rt_out, self.rt_err = self.runtime.communicate()
            self.link.__exit__(None, None, None)
        self.events = [json.loads(x) for x in self.panel_out.splitlines() if x.startswith("{")]
        return self

    def names(self):
        return [e["event"] for e in self.events]

    def first(self, name):
        return next(e for e in self.events if e["event"] == name)

    def log(self):
        return f"panel: {self.panel_err[-1500:]}\nruntime: {self.rt_err[-3000:]}"


def check_session(pair: OsdpPair, verdict: str, reason: str):
    assert pair.panel.returncode == 0, pair.log()
    names = pair.names()
    summary = pair.events[-1]
    assert summary["event"] == "summary" and summary["results"] == [verdict], (summary, pair.log())
    order = [names.index(n) for n in ("online", "secure_channel", "pdid", "pdcap", "start", "prompt", "verdict",
                                      "session_end")]
    assert order == sorted(order), names
    pid = pair.first("pdid")
    assert (pid["vendor_code"], pid["model"], pid["serial_number"]) == (0xFACE00, 1, 4242)
    from edge import __version__

    assert pid["firmware_version"] == int.from_bytes(bytes(int(x) for x in __version__.split(".")[:3]), "big")
    assert pair.first("pdcap")["communication_security"][0] >= 1
    v = pair.first("verdict")
    assert v["verdict"] == verdict and v["reason_name"] == reason, v
    assert v["nonce_ok"] and v["secure"] and not v["late"]
    assert pair.first("prompt")["name"] == "LOOK_AT_CAMERA"
    printed = [json.loads(x) for x in pair.rt_out.splitlines() if x.startswith("{")]
    assert printed and printed[0]["verdict"] == verdict, pair.rt_out
    # the prompts and the verdict came back to the reader as LED/TEXT/buzzer commands
    assert "VERDICT %s sent to the panel" % verdict in pair.rt_err, pair.log()
    assert pair.first("pdcap")["reader_led_control"] == [1, 1]
    import re

    led = [int(m) for m in re.findall(r"panel LED/TEXT/buzzer commands (\d+)/", pair.rt_err)]
    assert led and led[-1] >= 1, pair.log()
    if verdict != "PASS":
        assert "card" not in names


SCENARIOS = {
    "FAIL": ("synthetic://?pattern=face&frames=3", "", "SPOOF_DETECTED"),
    "NO_FACE": ("synthetic://?pattern=black&frames=3", "", "NO_FACE_FOUND"),
    "TIMEOUT": ("synthetic://?pattern=face&frames=3", "[quality]\nmin_face_fraction = 0.85", "FACE_TOO_SMALL"),
    "FAULT": ("synthetic://?pattern=face&fail_after=1", "", "CAMERA_LOST"),
}


@pytest.mark.parametrize("verdict", list(SCENARIOS))
def test_session_verdict_reaches_the_panel(tmp_path, built_models_dir, verdict):
    source, extra, reason = SCENARIOS[verdict]
    pair = OsdpPair(tmp_path, built_models_dir, source, extra).finish()
    check_session(pair, verdict, reason)
    if verdict == "FAULT":
        # camera lost: the panel also gets a local status report with the tamper bit
        status = [e for e in pair.events if e["event"] == "status"]
        assert status and status[0]["tamper"] is True, pair.names()


@pytest.mark.skipif(not LIVE_FACE.is_file(), reason=f"no live face image in ../shared ({LIVE_FACE})")
def test_pass_with_card_read_for_card_only_panels(tmp_path, built_models_dir):
    pair = OsdpPair(tmp_path, built_models_dir, f"image://{LIVE_FACE}",
                    osdp_extra="card_on_pass = true\ncard_facility = 12\ncard_number = 3456").finish()
    check_session(pair, "PASS", "LIVE_CONFIRMED")
    card = pair.first("card")
    assert (card["bits"], card["facility"], card["number"]) == (26, 12, 3456)
    assert pair.names().index("card") > pair.names().index("verdict")


def test_service_mode_over_osdp(tmp_path, built_models_dir):
    """The production path (--service: privacy guard armed during the session, no core dumps): the
    libosdp refresh thread keeps talking to the panel during a session and nothing is refused."""
    source, extra, reason = SCENARIOS["FAIL"]
    pair = OsdpPair(tmp_path, built_models_dir, source, extra, run_args=("--service",)).finish()
    check_session(pair, "FAIL", reason)
    assert "privacy guard refused" not in pair.rt_err, pair.log()


def test_session_aborted_by_the_panel(tmp_path, built_models_dir):
    pair = OsdpPair(tmp_path, built_models_dir, "synthetic://?pattern=black",
                    "[decision]\ntimeout_ms = 20000\nno_face_ms = 20000",
                    panel_args=("--deadline-ms", "20000", "--abort-after-ms", "600")).finish()
    assert pair.panel.returncode == 0, pair.log()
    names = pair.names()
    assert names.index("prompt") < names.index("abort") < names.index("verdict"), names
    v = pair.first("verdict")
    assert (v["verdict"], v["reason_name"], v["nonce_ok"]) == ("FAULT", "ABORTED", True)
    assert v["latency_ms"] < 5000  # the camera was released at once, not at the 20 s budget
    assert "aborted by the panel" in pair.rt_err


@pytest.mark.realtime
@pytest.mark.skipif(not LIVE_FACE.is_file(), reason=f"no live face image in ../shared ({LIVE_FACE})")
def test_active_challenge_over_osdp_asks_the_order_the_panel_can_derive(tmp_path, built_models_dir):
    """Active mode behind a panel: the order is HMAC(SCBK, START nonce || "challenge"); the first
    action's prompt reaches the panel; a still photo never answers, so the verdict is FAIL."""
    from edge.challenge import ACTION_PROMPTS, challenge_seed, draw

    pair = OsdpPair(tmp_path, built_models_dir, f"image://{LIVE_FACE}?loop=1", mode="active",
                    camera_extra="freeze_frames = 300\nfreeze_s = 10.0", panel_args=("--deadline-ms", "15000")).finish(90)
    assert pair.panel.returncode == 0, pair.log()
    start = pair.first("start")
    order = draw(challenge_seed(bytes.fromhex(SCBK_HEX), bytes.fromhex(start["nonce"])), 2)
    codes = [e["code"] for e in pair.events if e["event"] == "prompt"]
    assert int(ACTION_PROMPTS[order[0]]) in codes, (order, codes, pair.log())
    v = pair.first("verdict")
    assert (v["verdict"], v["reason_name"], v["nonce_ok"]) == ("FAIL", "CHALLENGE_TIMEOUT", True), v
    assert "card" not in pair.names()
