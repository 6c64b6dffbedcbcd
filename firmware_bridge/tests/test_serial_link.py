"""The runtime's SerialBridge over real pty pairs: against the controller state machine, and
against a scripted controller for the delivery rules."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.bridge.serial_link import SerialBridge
from edge.errors import BridgeError
from edge.types import Prompt, Reason, Verdict, VerdictKind
from firmware_bridge import protocol as P
from firmware_bridge.controller import DOWN, IDLE, Controller, ControllerConfig
from firmware_bridge.sim import SimBoard

from .fakes import ControllerThread, pty_pair
from .helpers import KEY, keyed_codec, until as _until

ROOT = Path(__file__).resolve().parents[2]



def _verdict(kind=VerdictKind.PASS, sid=1):
    reason = Reason.LIVE_CONFIRMED if kind is VerdictKind.PASS else Reason.SPOOF_DETECTED
    return Verdict(kind, reason, 3, 7, 420, sid)


class Scripted:
    """A controller played by the test: its own codec on the pty master."""

    def __init__(self, master):
        self.master = master
        self.codec = P.Codec(KEY, P.DIR_CONTROLLER, [("role", "controller")])
        self.inbox: list[P.Message] = []

    def send(self, mtype, payload):
        self.master.write(self.codec.encode(mtype, payload))

    def pump(self):
        data = self.master.read()
        if data:
            self.inbox.extend(self.codec.feed(data))
            out = self.codec.take_outbox()
            if out:
                self.master.write(out)
        return self.inbox

    def handshake(self, bridge, timeout=3.0):
        self.master.write(self.codec.hello())
        assert _until(lambda: self.pump() is not None and self.codec.keyed and bridge._codec.keyed, timeout)
        self.send(P.HEARTBEAT, P.pack_heartbeat(P.S_IDLE, 0))
        assert _until(lambda: bridge.link_up, timeout)

    def of(self, mtype):
        self.pump()
        return [m for m in self.inbox if m.type == mtype]


@pytest.fixture
def scripted():
    with pty_pair() as (master, path):
        ctl = Scripted(master)
        bridge = SerialBridge(path, KEY, heartbeat_interval_s=0.1, heartbeat_timeout_s=0.6, result_retry_ms=50,
                              result_timeout_ms=1000, device_info=(("role", "runtime"), ("board", "test")))
        try:
            ctl.handshake(bridge)
            yield ctl, bridge
        finally:
            bridge.close()


def test_full_session_against_controller_state_machine():
    with pty_pair() as (master, path):
        events = []
        board = SimBoard(master.read, master.write)
        ctl = Controller(board, KEY, ControllerConfig(pulse_ms=300, heartbeat_interval_ms=100, heartbeat_timeout_ms=1000),
                         on_event=lambda n, f: events.append((n, f)))
        with ControllerThread(ctl) as ct:
            bridge = SerialBridge(path, KEY, heartbeat_interval_s=0.1, heartbeat_timeout_s=1.0,
                                  device_info=(("role", "runtime"), ("board", "pytest")))
            try:
                assert _until(lambda: ctl.state == IDLE and bridge.link_up)
                assert bridge.controller_info.get("role") == "controller"
                assert ct.call(ctl.press)
                req = bridge.wait(3.0)
                assert req is not None and req.origin == "serial" and len(req.nonce) == 16
                assert req.deadline_ms == ctl.cfg.session_timeout_ms
                bridge.prompt(req, Prompt.LOOK_AT_CAMERA)
                bridge.prompt(req, Prompt.HOLD_STILL)
                assert bridge.result(req, _verdict(sid=req.session_id)) is True
                assert _until(lambda: len(board.relay_log) >= 3)  # boot off, on, off
                on, off = board.relay_log[1], board.relay_log[2]
                assert on[1] is True and off[1] is False
                assert 0.25 <= off[0] - on[0] <= 2.0
                prompts = [f["text"] for n, f in events if n == "prompt"]
                assert prompts == ["Look at the camera", "Hold still"]
                hello = [f for n, f in events if n == "hello"][0]
                assert hello["info"]["board"] == "pytest"
                # a FAIL is delivered and ACKed too, and leaves the relay alone
                assert ct.call(ctl.press)
                req2 = bridge.wait(3.0)
                assert bridge.result(req2, _verdict(VerdictKind.FAIL, req2.session_id)) is True
                time.sleep(0.1)
                assert len([1 for _, on in board.relay_log if on]) == 1
                assert ctl.results == ["PASS", "FAIL"]
            finally:
                bridge.close()
            # close() sent FAULT(SHUTDOWN): the controller is DOWN without waiting for the timeout
            assert _until(lambda: ctl.state == DOWN, 1.0)
        st = ctl.codec.stats
        assert sum(v for k, v in st.items() if k != "ok") == 0, st


def test_result_repeated_until_ack(scripted):
    ctl, bridge = scripted
    nonce = bytes(range(16))
    ctl.send(P.START, P.pack_start(5, nonce, 5000))
    req = bridge.wait(2.0)
    assert req.session_id == 5 and req.nonce == nonce
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("acked", bridge.result(req, _verdict(sid=5))))
    t.start()
    assert _until(lambda: len(ctl.of(P.RESULT)) >= 3, 3.0)  # ACKs "lost": it keeps repeating
    assert t.is_alive()
    results = ctl.of(P.RESULT)
    assert {(m.session_id, m.nonce, m.verdict) for m in results} == {(5, nonce, P.V_PASS)}
    assert len({m.seq for m in results}) == len(results)
    ctl.send(P.ACK, P.pack_ack(P.RESULT, results[-1].seq, 5))
    t.join(2.0)
    assert out["acked"] is True
    n = len(ctl.of(P.RESULT))
    time.sleep(0.2)
    assert len(ctl.of(P.RESULT)) == n  # no more repeats after the ACK
    # the START was ACKed, the HELLO answered with our device info
    assert any(m.acked_type == P.START and m.session_id == 5 for m in ctl.of(P.ACK))
    hellos = ctl.of(P.HELLO)
    assert hellos[0].flags & P.HELLO_REPLY and hellos[0].flags & P.HELLO_BOOT
    assert dict(hellos[-1].info)["board"] == "test"


def test_result_gives_up_at_the_deadline(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(6, b"x" * 16, 400))
    req = bridge.wait(2.0)
    t0 = time.monotonic()
    assert bridge.result(req, _verdict(sid=6)) is False
    assert time.monotonic() - t0 < 3.0
    assert len(ctl.of(P.RESULT)) >= 2


def test_repeated_start_is_one_session_and_abort_cancels(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(7, b"n" * 16, 5000))
    ctl.send(P.START, P.pack_start(7, b"n" * 16, 5000))  # our ACK was "lost"; the controller repeats
    req = bridge.wait(2.0)
    assert req.session_id == 7
    assert bridge.wait(0.2) is None
    assert _until(lambda: len([m for m in ctl.of(P.ACK) if m.acked_type == P.START]) == 2)
    assert not req.cancel.is_set()
    ctl.send(P.ABORT, P.pack_abort(7, P.R_DEADLINE))
    assert req.cancel.wait(2.0)
    # the controller gave up on it: no RESULT is sent
    assert bridge.result(req, _verdict(sid=7)) is False
    assert ctl.of(P.RESULT) == []


def test_newer_start_supersedes_running_session(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(8, b"a" * 16, 5000))
    r1 = bridge.wait(2.0)
    ctl.send(P.START, P.pack_start(9, b"b" * 16, 5000))
    r2 = bridge.wait(2.0)
    assert r2.session_id == 9 and r1.cancel.wait(1.0) and not r2.cancel.is_set()


def test_controller_silence_cancels_the_session(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(10, b"s" * 16, 30000))
    req = bridge.wait(2.0)
    assert bridge.link_up
    assert req.cancel.wait(3.0)  # heartbeat_timeout_s = 0.6 and the scripted controller is silent
    assert not bridge.link_up


def test_runtime_sends_heartbeats_and_prompts_only_for_current_session(scripted):
    ctl, bridge = scripted
    time.sleep(0.35)
    assert len(ctl.of(P.HEARTBEAT)) >= 2
    ctl.send(P.START, P.pack_start(11, b"p" * 16, 5000))
    req = bridge.wait(2.0)
    assert _until(lambda: any(m.state == P.S_BUSY and m.session_id == 11 for m in ctl.of(P.HEARTBEAT)))
    bridge.prompt(req, Prompt.MOVE_CLOSER)
    from edge.bridge.base import SessionRequest

    bridge.prompt(SessionRequest(99, origin="local"), Prompt.MOVE_BACK)  # not a serial session: ignored
    assert _until(lambda: [m.code for m in ctl.of(P.PROMPT)] == [int(Prompt.MOVE_CLOSER)])


def test_forged_and_replayed_frames_are_counted_and_link_recovers(scripted):
    ctl, bridge = scripted
    forger = keyed_codec(bytes(32), P.DIR_CONTROLLER)
    ctl.master.write(forger.encode(P.START, P.pack_start(1, b"f" * 16, 0)))
    wire = ctl.codec.encode(P.START, P.pack_start(2, b"g" * 16, 0))
    ctl.master.write(wire)
    assert bridge.wait(2.0).session_id == 2
    ctl.master.write(wire)  # replay
    ctl.master.write(b"\x11\x22\x33" * 40 + b"\x00")  # garbage
    ctl.send(P.START, P.pack_start(3, b"h" * 16, 0))
    assert bridge.wait(2.0).session_id == 3
    st = bridge.stats
    assert st["bad_mac"] == 1 and st["replay"] == 1 and st["garbage"] + st["truncated"] >= 1


def test_loop_url_hears_only_itself_and_rejects_it():
    bridge = SerialBridge("loop://", KEY, heartbeat_interval_s=0.05, heartbeat_timeout_s=0.5)
    try:
        assert _until(lambda: bridge.stats["bad_mac"] >= 2, 5.0)  # its own HELLOs, reflected
        assert bridge.stats["ok"] == 0 and bridge.wait(0.05) is None
    finally:
        bridge.close()


def test_missing_port_is_a_clear_bridge_error():
    with pytest.raises(BridgeError, match="/dev/ttyNOPE0.*serial.port"):
        SerialBridge("/dev/ttyNOPE0", KEY)


def test_close_is_idempotent_and_unblocks_a_pending_result(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(12, b"c" * 16, 20000))
    req = bridge.wait(2.0)
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", bridge.result(req, _verdict(sid=12))))
    t.start()
    time.sleep(0.1)
    bridge.close()
    bridge.close()
    t.join(2.0)
    assert not t.is_alive() and out["r"] is False
    faults = ctl.of(P.FAULT)
    assert faults and faults[-1].reason == int(Reason.SHUTDOWN)


RUNTIME_SCRIPT = """
import sys, time
from edge.bridge.serial_link import SerialBridge
b = SerialBridge(sys.argv[1], bytes(range(32)), heartbeat_interval_s=0.1, heartbeat_timeout_s=1.0)
req = b.wait(10)
print("session", req.session_id, flush=True)
time.sleep(60)  # busy "evaluating" when it is killed
"""


def test_runtime_process_killed_mid_session_controller_faults_relay_off():
    with pty_pair() as (master, path):
        events = []
        board = SimBoard(master.read, master.write)
        ctl = Controller(board, KEY, ControllerConfig(heartbeat_interval_ms=100, heartbeat_timeout_ms=800,
                                                      session_timeout_ms=20000),
                         on_event=lambda n, f: events.append((n, time.monotonic(), f)))
        with ControllerThread(ctl) as ct:
            proc = subprocess.Popen([sys.executable, "-c", RUNTIME_SCRIPT, path], stdout=subprocess.PIPE, text=True,
                                    cwd=ROOT)
            try:
                assert _until(lambda: ctl.state == IDLE, 10.0), "runtime never came up"
                assert ct.call(ctl.press)
                assert proc.stdout.readline().startswith("session")
                proc.kill()  # SIGKILL: no FAULT, no goodbye
                t_kill = time.monotonic()
                proc.wait(5)
                assert _until(lambda: ctl.state == DOWN, 5.0)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            fault = [(t, f) for n, t, f in events if n == "fault"]
            assert fault and fault[0][1]["why"] == "runtime_lost"
            assert 0.5 <= fault[0][0] - t_kill <= 4.0
            assert ctl.results == ["FAULT"]
            assert not any(on for _, on in board.relay_log)
            assert ct.call(ctl.press) is False  # and refuses new sessions while the runtime is gone


def test_runtime_cancels_a_session_past_the_controllers_deadline(scripted):
    ctl, bridge = scripted
    ctl.send(P.START, P.pack_start(13, b"d" * 16, 300))
    req = bridge.wait(2.0)
    for _ in range(10):  # keep the link alive: only the deadline may end it
        ctl.send(P.HEARTBEAT, P.pack_heartbeat(P.S_BUSY, 13))
        if req.cancel.wait(0.1):
            break
    assert req.cancel.is_set() and bridge.link_up
    assert bridge.result(req, _verdict(sid=13)) is False and ctl.of(P.RESULT) == []


def test_line_hangup_fails_loudly():
    import tty

    m, s = os.openpty()
    tty.setraw(s)
    bridge = SerialBridge(os.ttyname(s), KEY, heartbeat_interval_s=0.05, heartbeat_timeout_s=1.0)
    try:
        os.close(s)
        os.close(m)  # the USB adapter is unplugged
        with pytest.raises(BridgeError, match="serial link"):
            end = time.monotonic() + 5
            while time.monotonic() < end:
                bridge.wait(0.1)
    finally:
        bridge.close()
