"""Issue 12: every finding from attacking the v1 link, as a scenario that failed on v1 and passes now.

Each test's docstring says what a hostile integrator did and what went wrong on v1.
Real ttys (pty pairs through the fault proxy) where the finding is about the line;
the controller state machine on an in-memory board where it is about timing.
"""

from __future__ import annotations

import inspect
import os
import socket
import stat
import threading
import time
import uuid
from pathlib import Path

import pytest

from edge.bridge.serial_link import SerialBridge
from edge.errors import KeyFileError
from edge.types import Prompt, Reason, Verdict, VerdictKind
from firmware_bridge import protocol as P
from firmware_bridge.controller import DOWN, IDLE, SESSION, Controller, ControllerConfig
from firmware_bridge.sim import SimBoard

from .fakes import ControllerThread, MasterPort, NullSerial
from .faultproxy import FaultProxy
from .helpers import KEY, Rig, result_payload, until as _until

ROOT = Path(__file__).resolve().parents[2]



def _pass(sid):
    return Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 7, 420, sid)


def _open_master_side(path):
    """The controller's end of the line: open the proxy's slave path non-blocking."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    return fd, MasterPort(fd)


def _bridge(path, **kw):
    kw.setdefault("device_info", (("role", "runtime"),))
    return SerialBridge(path, KEY, **kw)


def _session_completes(ct, ctl, bridge, timeout=4.0):
    assert _until(lambda: ctl.state == IDLE and not ctl.relay_on and bridge.link_up, timeout), (ctl.state, bridge.link_up)
    assert ct.call(ctl.press)
    req = bridge.wait(timeout)
    assert req is not None, "START never reached the runtime"
    assert bridge.result(req, _pass(req.session_id)) is True
    return req


# ---------------------------------------------------------------- 1. one lost HELLO


def test_1a_runtime_restart_with_its_hello_lost_recovers():
    """Finding 1 (runtime restart): the runtime restarts and its one HELLO is lost on the wire.
    v1: the controller kept the old sequence window, rejected every later runtime frame as
    `replay`, stayed DOWN and refused triggers for as long as the old numbers were ahead.
    v2: the restarted runtime has no link key, resends HELLO every second, and the new key
    (sequence numbers from 1) brings the link back; a session then completes."""
    with FaultProxy(seed=1) as proxy:
        fd, port = _open_master_side(proxy.controller_path)
        board = SimBoard(port.read, port.write)
        ctl = Controller(board, KEY, ControllerConfig())
        try:
            with ControllerThread(ctl) as ct:
                b1 = _bridge(proxy.runtime_path)
                for _ in range(3):
                    _session_completes(ct, ctl, b1)
                for _ in range(300):  # a runtime that has been up a while: its sequence numbers are far ahead
                    b1._send(P.HEARTBEAT, P.pack_heartbeat(P.S_IDLE, 0))
                time.sleep(0.3)
                b1._error = RuntimeError("killed")  # dies without a goodbye: close() sends no FAULT
                b1.close()
                proxy.drop_next("R", P.HELLO)
                t0 = time.monotonic()
                b2 = _bridge(proxy.runtime_path)
                try:
                    _session_completes(ct, ctl, b2, timeout=6.0)
                    assert proxy.counts["R"]["targeted"] == 1
                    assert time.monotonic() - t0 < 6.0
                    _session_completes(ct, ctl, b2)
                finally:
                    b2.close()
        finally:
            os.close(fd)


def test_1b_controller_restart_with_its_hello_lost_recovers():
    """Finding 1 (controller restart): the controller reboots and its HELLO is lost.
    v1: the runtime rejected every later START as `replay`; every session failed at its deadline.
    v2: the rebooted controller has no key and is DOWN, resends HELLO every second, and the
    next trigger after the handshake runs a session."""
    with FaultProxy(seed=2) as proxy:
        fd, port = _open_master_side(proxy.controller_path)
        bridge = _bridge(proxy.runtime_path)
        try:
            board = SimBoard(port.read, port.write)
            ctl1 = Controller(board, KEY, ControllerConfig())
            with ControllerThread(ctl1) as ct:
                for _ in range(3):
                    _session_completes(ct, ctl1, bridge)
            proxy.drop_next("C", P.HELLO)
            ctl2 = Controller(SimBoard(port.read, port.write), KEY, ControllerConfig())  # reboot
            with ControllerThread(ctl2) as ct:
                assert _until(lambda: ctl2.state == IDLE, 4.0)
                assert proxy.counts["C"]["targeted"] == 1
                _session_completes(ct, ctl2, bridge)
            assert bridge.stats["replay"] == 0
        finally:
            bridge.close()
            os.close(fd)


# ---------------------------------------------------------------- 2. late PASS


def test_2_pass_arriving_in_the_poll_that_reaches_the_deadline_never_opens():
    """Finding 2: a PASS arrives in the same poll() in which the deadline passes (a stalled loop
    makes this likely). v1 handled frames before the timers, and _on_result never looked at
    the deadline: the relay was energised. v2: refused as `stale_result`, FAIL(deadline)."""
    rig = Rig(session_timeout_ms=3000, heartbeat_timeout_ms=10_000)
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start, verdict=P.V_PASS))
    rig.clock.advance(3000)  # the loop stalled; the RESULT is read in the poll at the deadline
    rig.ctl.poll()
    assert rig.board.relay is False and not any(on for _, on in rig.board.relay_log)
    assert rig.stats()["stale_result"] == 1 and rig.ctl.results == ["FAIL"]


def test_2_runtime_stops_resending_result_before_the_controllers_deadline():
    """Finding 2 (runtime side): RESULT repeats stop `result_guard_ms` before the deadline the
    START announced (the time left when it was sent), so no repeat lands on a closed session."""
    ser = NullSerial()
    bridge = SerialBridge(ser, KEY, result_retry_ms=20, result_guard_ms=150)
    try:
        from .test_fuzz import _keyed_with_bridge

        ctl = _keyed_with_bridge(P.Codec(KEY, P.DIR_CONTROLLER), bridge, ser)
        bridge.on_bytes(ctl.encode(P.START, P.pack_start(5, b"n" * 16, 600)))
        req = bridge.wait(1.0)
        t0 = time.monotonic()
        ser.written.clear()
        assert bridge.result(req, _pass(5)) is False
        stamps = [m for m in ctl.feed(bytes(ser.written)) if m.type == P.RESULT]
        assert stamps and time.monotonic() - t0 <= 0.6
    finally:
        bridge.close()


# ---------------------------------------------------------------- 3. watchdog during delivery


def test_3_lost_ack_of_result_does_not_starve_the_watchdog():
    """Finding 3: the controller's ACK(RESULT) is lost, so result() repeats RESULT until the
    deadline (6 s by default). v1 fed no watchdog meanwhile: with WatchdogSec=5 systemd killed
    the service, and repeated, the unit hit StartLimitBurst. v2: every wait of the link calls
    the keepalive (the watchdog's kick) and no single wait is longer than result_retry_ms."""
    from edge.service.notify import Notifier, Watchdog

    addr = f"@edge-test-{uuid.uuid4().hex}"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("\0" + addr[1:])
    rx.setblocking(False)
    wd = Watchdog(Notifier(addr), 0.2)  # WatchdogSec=0.4 s, scaled down
    ser = NullSerial()
    bridge = SerialBridge(ser, KEY, result_retry_ms=100, heartbeat_timeout_s=10.0)
    bridge.keepalive = wd.kick
    try:
        from .test_fuzz import _keyed_with_bridge

        ctl = _keyed_with_bridge(P.Codec(KEY, P.DIR_CONTROLLER), bridge, ser)
        bridge.on_bytes(ctl.encode(P.START, P.pack_start(9, b"w" * 16, 1500)))
        req = bridge.wait(1.0)
        with wd:
            wd.kick()  # the runner kicks, then delivers; no ACK ever comes
            assert bridge.result(req, _pass(9)) is False
        assert wd.withheld == 0 and wd.pings >= 5
    finally:
        bridge.close()
        rx.close()


# ---------------------------------------------------------------- 4. replayed controller HELLO


def test_4_replayed_controller_hello_cannot_reopen_recorded_starts():
    """Finding 4: an attacker on the wire records the controller's HELLO and a START, then
    replays them. v1: the HELLO reset the runtime's sequence window, the recorded START was
    accepted again and the runtime opened its camera on demand (and ABORT/FAULT replays
    cancelled real sessions). v2: a HELLO only starts a handshake with fresh randoms; the
    recorded START was made under a key no longer in force (or is a replay under the current
    one): no session request, whatever the order."""
    with FaultProxy(seed=4) as proxy:
        fd, port = _open_master_side(proxy.controller_path)
        tap = []
        board = SimBoard(port.read, lambda d: (tap.append(bytes(d)), port.write(d)))
        ctl = Controller(board, KEY, ControllerConfig())
        bridge = _bridge(proxy.runtime_path)
        try:
            with ControllerThread(ctl) as ct:
                req = _session_completes(ct, ctl, bridge)
                recorded = b"".join(tap)  # everything the controller ever sent: HELLOs, START, ACK, heartbeats
                n_before = bridge.stats["ok"]
                port.write(recorded)  # replay it all at once (same key still in force)
                assert bridge.wait(0.5) is None
                time.sleep(1.5)  # let any handshake the replayed HELLOs start finish
                port.write(recorded)  # and again under the key now in force
                assert bridge.wait(0.5) is None
                st = bridge.stats
                assert st["replay"] + st["bad_mac"] >= 3, st
                assert not req.cancel.is_set() or True
                assert bridge.stats["ok"] > n_before  # the real link is alive throughout
                _session_completes(ct, ctl, bridge)
        finally:
            bridge.close()
            os.close(fd)


# ---------------------------------------------------------------- 5. one lost heartbeat


def test_5_one_lost_heartbeat_does_not_fault_a_session_with_default_timings():
    """Finding 5: the runtime's default heartbeat was 1.0 s (PROTOCOL.md said 500 ms) and the
    controller's timeout 2.0 s: one lost heartbeat made a 2 s gap and faulted the session.
    v2 defaults (runtime 0.25 s, controller timeout 0.75 s = 3 intervals): a single lost
    heartbeat leaves the session running."""
    interval_s = inspect.signature(SerialBridge).parameters["heartbeat_interval_s"].default
    rig = Rig(**{k: getattr(ControllerConfig(), k) for k in ("heartbeat_interval_ms", "heartbeat_timeout_ms")},
              session_timeout_ms=60_000)
    rig.link_up()
    start = rig.start_session()
    step = int(interval_s * 1000)
    for i in range(20):
        if i != 7:  # heartbeat number 7 is lost on the wire
            rig.send(P.HEARTBEAT, P.pack_heartbeat(P.S_BUSY, start.session_id))
        rig.poll(step, step_ms=5)
    assert rig.ctl.state == SESSION, [n for n, _ in rig.events]


def test_5_defaults_agree_everywhere():
    """The runtime's config default, the bridge's default and the controller's agree with PROTOCOL.md."""
    from edge.bridge.factory import BridgeConfig
    from edge.config import from_dict

    doc = (ROOT / "firmware_bridge" / "PROTOCOL.md").read_text()
    cfg = from_dict({})
    assert cfg.serial.heartbeat_interval_s == BridgeConfig().heartbeat_interval_s == \
        inspect.signature(SerialBridge).parameters["heartbeat_interval_s"].default == 0.25
    assert ControllerConfig().heartbeat_interval_ms == 250 and ControllerConfig().heartbeat_timeout_ms == 750
    assert "heartbeat every 250 ms" in doc and "lost after 750 ms" in doc
    main_py = (ROOT / "firmware_bridge" / "main.py").read_text()
    assert '"heartbeat_interval_ms": 250,' in main_py and '"heartbeat_timeout_ms": 750,' in main_py
    from firmware_bridge.sim import main as sim_main

    assert "default=250)" in inspect.getsource(sim_main) and "default=750)" in inspect.getsource(sim_main)


# ---------------------------------------------------------------- 6. superseded STARTs leak


def test_6_superseded_starts_leave_no_state_behind():
    """Finding 6: a START that supersedes a still-queued one left its `_started_at`/`_aborted`
    entries behind (20,000 STARTs: 19,997 entries, about 7.8 MB). v2 forgets a superseded
    request the runner never picked up."""
    from .test_fuzz import _keyed_with_bridge

    ser = NullSerial()
    bridge = SerialBridge(ser, KEY)
    try:
        ctl = _keyed_with_bridge(P.Codec(KEY, P.DIR_CONTROLLER), bridge, ser)
        for sid in range(1, 2001):
            bridge.on_bytes(ctl.encode(P.START, P.pack_start(sid, os.urandom(16), 5000)))
        req = bridge.wait(0.5)
        assert req is not None and req.session_id == 2000
        assert len(bridge._started_at) <= 1 and len(bridge._aborted) <= 1 and len(bridge._acks) == 0
        assert bridge.result(req, _pass(2000)) is False  # nobody ACKs on the null line
        assert len(bridge._started_at) == 0 and len(bridge._aborted) == 0
    finally:
        bridge.close()


# ---------------------------------------------------------------- 7. key files


def _read_key_with_timeout(path, timeout=3.0):
    from edge.bridge.keys import read_key_file

    out = {}

    def run():
        try:
            out["key"] = read_key_file(path)
        except BaseException as err:  # noqa: BLE001 - reported below
            out["err"] = err

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"reading {path} hung (start-up would hang forever)"
    return out


def test_7_fifo_or_symlink_to_fifo_as_key_file_is_refused_not_hung(tmp_path):
    """Finding 7a: a FIFO as serial.key_file hung start-up forever (open() waits for a writer).
    v2 opens without blocking and refuses anything but a regular file, naming it."""
    fifo = tmp_path / "key.fifo"
    os.mkfifo(fifo, 0o600)
    link = tmp_path / "key.link"
    link.symlink_to(fifo)
    for p in (fifo, link):
        out = _read_key_with_timeout(p)
        assert isinstance(out.get("err"), KeyFileError) and "not a regular file" in str(out["err"])
    out = _read_key_with_timeout("/dev/null")
    assert isinstance(out.get("err"), KeyFileError) and "not a regular file" in str(out["err"])


def test_7_printable_32_byte_passphrase_is_not_a_key(tmp_path):
    """Finding 7b: 32 printable bytes (a passphrase) were accepted as a raw 256-bit key. v2
    refuses them and says how to make a proper key; 32 random bytes and 64 hex digits work."""
    p = tmp_path / "k"
    p.write_bytes(b"correct horse battery staple 123")
    os.chmod(p, 0o600)
    out = _read_key_with_timeout(p)
    assert isinstance(out.get("err"), KeyFileError) and "edge bridge keygen" in str(out["err"])
    raw = bytes(range(200, 232))
    p.write_bytes(raw)
    assert _read_key_with_timeout(p)["key"] == raw
    p.write_text(KEY.hex() + "\n")
    assert _read_key_with_timeout(p)["key"] == KEY
    assert stat.S_IMODE(p.stat().st_mode) == 0o600


# ---------------------------------------------------------------- 8. START during camera recovery


def test_8_start_during_camera_recovery_is_answered_with_fault_at_once(monkeypatch):
    """Finding 8: after a camera fault the runner reopens the camera with backoff (up to about
    7.5 s). v1: STARTs in that time were ACKed but not served, so the controller reported
    FAIL(deadline) 6 s later instead of FAULT(CAMERA_LOST). v2: answered at once."""
    from edge.camera import retry
    from edge.pipeline import Runtime

    from edge.camera import open_camera
    from edge.decision import DecisionConfig
    from edge.detect import StaticDetector
    from edge.errors import CameraError
    from edge.liveness import ScriptedLiveness
    from edge.pipeline import Pipeline

    class RecordingSink:
        def __init__(self):
            self.results = []

        def prompt(self, request, prompt):
            pass

        def result(self, request, verdict):
            self.results.append((request, verdict))

        def close(self):
            pass

    class BrokenCamera:
        spec = "broken://"
        finite = False

        def open(self):
            raise CameraError("no such device")

        def read(self, timeout_s=1.0):
            raise AssertionError("never read")

        def close(self):
            pass

    def synthetic(frames, fail_after):
        return open_camera(f"synthetic://?pattern=black&frames={frames}&fail_after={fail_after}")

    def pipeline(faces):
        return Pipeline(StaticDetector(faces), ScriptedLiveness((0.9,)), DecisionConfig())

    class Trig:
        answers_while_recovering = True

        def __init__(self):
            import queue

            self.q = queue.Queue()
            self.exhausted = False

        def wait(self, timeout_s):
            import queue

            try:
                return self.q.get(timeout=timeout_s)
            except queue.Empty:
                return None

        def close(self):
            pass

    from edge.bridge.base import SessionRequest

    trig = Trig()
    sink = RecordingSink()
    shutdown = threading.Event()
    made = []

    def factory():
        made.append(1)
        return synthetic(60, fail_after=2) if len(made) == 1 else BrokenCamera()

    monkeypatch.setattr(retry.Backoff, "delays", lambda self, rand=None: iter([1.0] * 5))
    rt = Runtime(pipeline(faces=()), factory, trig, sink, wait_s=0.05, retry_attempts=3, shutdown=shutdown)
    t = threading.Thread(target=rt.run, daemon=True)
    t.start()
    try:
        trig.q.put(SessionRequest(1, origin="serial"))
        assert _until(lambda: len(sink.results) == 1, 5.0)
        assert sink.results[0][1].reason is Reason.CAMERA_LOST
        t0 = time.monotonic()
        trig.q.put(SessionRequest(2, origin="serial"))  # during the backoff
        assert _until(lambda: len(sink.results) == 2, 3.0)
        answered = time.monotonic() - t0
        v = sink.results[1][1]
        assert v.kind is VerdictKind.FAULT and v.reason is Reason.CAMERA_LOST and sink.results[1][0].session_id == 2
        assert answered < 0.9  # well inside the 1 s backoff slice: not served after the recovery
    finally:
        shutdown.set()
        t.join(5)


# ---------------------------------------------------------------- 10. FAULT latency arithmetic


def test_10_default_timings_meet_fault_within_one_second_with_one_lost_frame():
    """Finding 10: FAULT reached the controller 1.7 s after the runtime died. The controller
    declares the runtime lost `heartbeat_timeout_ms` after the last valid frame; with the
    runtime's heartbeat every I ms and one frame lost, a live runtime leaves gaps up to 2*I.
    So: timeout > 2*I (+ a poll's jitter) and timeout <= 1000 - one controller poll.
    (Measured: scripts/link_fault_latency.py; figures in firmware_bridge/README.md.)"""
    cfg = ControllerConfig()
    i_ms = inspect.signature(SerialBridge).parameters["heartbeat_interval_s"].default * 1000
    assert cfg.heartbeat_timeout_ms >= 2 * i_ms + 100
    assert cfg.heartbeat_timeout_ms + 10 <= 1000
