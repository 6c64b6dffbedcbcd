"""The controller state machine (the firmware's logic) on an in-memory board with a fake clock."""

from __future__ import annotations

import pytest

from firmware_bridge import protocol as P
from firmware_bridge.controller import DOWN, IDLE, SESSION

from .helpers import keyed_codec, KEY, Rig, random_nonce, result_payload


def _relay_ons(rig):
    return [t for t, on in rig.board.relay_log if on]


def test_boot_relay_off_hello_and_down():
    rig = Rig()
    out = rig.poll()
    assert rig.board.relay_log == [(0.0, False)]
    assert [m.name for m in out] == ["HELLO"]
    assert out[0].flags & P.HELLO_REPLY
    assert rig.ctl.state == DOWN
    assert rig.ctl.press() is False  # no runtime: refused, not queued
    assert "trigger_refused" in rig.names()


def test_pass_pulses_relay_for_pulse_ms_then_off():
    rig = Rig(pulse_ms=1500)
    rig.link_up()
    assert rig.ctl.state == IDLE
    start = rig.start_session()
    assert rig.ctl.state == SESSION and len(start.nonce) == 16 and start.deadline_ms == 5000
    rig.send(P.ACK, P.pack_ack(P.START, start.seq, start.session_id))
    rig.send(P.PROMPT, P.pack_prompt(start.session_id, 1, "Look at the camera"))
    rig.poll(100)
    rig.send(P.RESULT, result_payload(start))
    out = rig.poll()
    acks = [m for m in out if m.type == P.ACK]
    assert acks and acks[0].acked_type == P.RESULT and acks[0].session_id == start.session_id
    assert rig.board.relay is True
    t_on = _relay_ons(rig)[0]
    rig.poll(1490)
    assert rig.board.relay is True
    rig.poll(20)
    assert rig.board.relay is False
    t_off = rig.board.relay_log[-1][0]
    assert t_off - t_on == pytest.approx(1.5, abs=0.011)
    names = rig.names()
    for n in ("start", "start_acked", "prompt", "result", "session_end", "relay"):
        assert n in names
    assert rig.ctl.results == ["PASS"]


@pytest.mark.parametrize("verdict", [P.V_FAIL, P.V_NO_FACE, P.V_TIMEOUT, P.V_FAULT, 99])
def test_anything_but_pass_leaves_relay_off(verdict):
    rig = Rig()
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start, verdict=verdict))
    out = rig.poll(2000)
    assert any(m.type == P.ACK for m in out)
    assert _relay_ons(rig) == []
    assert rig.ctl.state == IDLE
    assert rig.ctl.results == [P.VERDICT_NAMES.get(verdict, "FAIL")]


def test_no_result_by_deadline_is_fail_and_abort_is_sent():
    rig = Rig(session_timeout_ms=3000)
    rig.link_up()
    start = rig.start_session()
    for _ in range(40):  # the runtime keeps heartbeating but never answers
        rig.send(P.HEARTBEAT, P.pack_heartbeat(P.S_BUSY, start.session_id))
        rig.poll(100)
    assert rig.ctl.results == ["FAIL"]
    aborts = [m for m in rig.received if m.type == P.ABORT]
    assert aborts and aborts[0].session_id == start.session_id and aborts[0].reason == P.R_DEADLINE
    # a PASS arriving after the deadline is too late: counted, not ACKed, relay stays off
    rig.send(P.RESULT, result_payload(start))
    out = rig.poll(10)
    assert not any(m.type == P.ACK for m in out)
    assert rig.stats()["stale_result"] == 1
    assert _relay_ons(rig) == []


def test_start_is_repeated_until_acked():
    rig = Rig(start_retry_ms=300, session_timeout_ms=5000)
    rig.link_up()
    start = rig.start_session()
    rig.poll(950)
    starts = [m for m in rig.received if m.type == P.START]
    assert len(starts) == 4  # t=0, 300, 600, 900
    assert {(m.session_id, m.nonce) for m in starts} == {(start.session_id, start.nonce)}
    assert len({m.seq for m in starts}) == 4  # fresh sequence numbers: not replays
    rig.send(P.ACK, P.pack_ack(P.START, starts[-1].seq, start.session_id))
    rig.poll(1000)
    assert len([m for m in rig.received if m.type == P.START]) == 4


def test_replayed_result_from_earlier_session_is_rejected():
    rig = Rig()
    rig.link_up()
    s1 = rig.start_session()
    old_pass = rig.send(P.RESULT, result_payload(s1))  # recorded by an attacker
    rig.poll(1500)
    assert rig.ctl.results == ["PASS"]
    s2 = rig.start_session()
    assert s2.nonce != s1.nonce
    rig.raw(old_pass)  # verbatim replay: stale sequence number
    rig.poll(10)
    assert rig.stats()["replay"] == 1
    # re-sent by a runtime that kept the old verdict (fresh seq, old session and nonce)
    rig.send(P.RESULT, result_payload(s1))
    rig.poll(10)
    assert rig.stats()["stale_result"] + rig.stats()["duplicate"] == 1
    assert len(_relay_ons(rig)) == 1 and rig.ctl.state == SESSION
    # the link recovers: the genuine result for session 2 is accepted
    rig.send(P.RESULT, result_payload(s2, verdict=P.V_FAIL, reason=2))
    rig.poll(10)
    assert rig.ctl.results == ["PASS", "FAIL"]


def test_wrong_nonce_is_rejected_and_session_still_completes():
    rig = Rig()
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start, nonce=random_nonce()))
    rig.poll(10)
    assert rig.stats()["wrong_nonce"] == 1
    assert rig.ctl.state == SESSION and _relay_ons(rig) == []
    rig.send(P.RESULT, result_payload(start, session_id=start.session_id + 5))
    rig.poll(10)
    assert rig.stats()["stale_result"] == 1
    rig.send(P.RESULT, result_payload(start))
    rig.poll(10)
    assert rig.ctl.results == ["PASS"] and len(_relay_ons(rig)) == 1


def test_forged_result_never_energises_relay():
    rig = Rig()
    rig.link_up()
    start = rig.start_session()
    forger = keyed_codec(bytes(32), P.DIR_RUNTIME)
    rig.raw(forger.encode(P.RESULT, result_payload(start)))
    rig.poll(10)
    assert rig.stats()["bad_mac"] == 1 and _relay_ons(rig) == []
    assert any(n == "rejected" and f["last"] == "bad_mac" for n, f in rig.events)
    rig.send(P.RESULT, result_payload(start, verdict=P.V_FAIL))
    rig.poll(10)
    assert rig.ctl.results == ["FAIL"]


def test_duplicate_result_after_lost_ack_is_reacked_but_acts_once():
    rig = Rig(pulse_ms=500)
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start))
    rig.poll(600)
    rig.send(P.RESULT, result_payload(start))  # our ACK was lost; the runtime repeats
    out = rig.poll(600)
    assert [m.acked_type for m in out if m.type == P.ACK] == [P.RESULT]
    assert rig.stats()["duplicate"] == 1
    assert len(_relay_ons(rig)) == 1 and rig.ctl.results == ["PASS"]


def test_runtime_dies_mid_session_fault_after_heartbeat_timeout():
    rig = Rig(heartbeat_timeout_ms=2000, session_timeout_ms=10000)
    rig.link_up()
    start = rig.start_session()
    rig.send(P.HEARTBEAT, P.pack_heartbeat(P.S_BUSY, start.session_id))
    rig.auto_answer = False  # dead: its HELLOs are no longer answered either
    rig.poll(1900)
    assert rig.ctl.state == SESSION
    rig.poll(200)  # 2.1 s of silence
    assert rig.ctl.state == DOWN
    assert ("fault", "runtime_lost") in [(n, f.get("why")) for n, f in rig.events]
    assert rig.ctl.results == ["FAULT"]
    faults = [m for m in rig.received if m.type == P.FAULT]
    assert faults and faults[-1].reason == P.R_RUNTIME_LOST
    # a PASS that arrives now (a stuck buffer, a replay) changes nothing
    rig.send(P.RESULT, result_payload(start))
    rig.poll(100)
    assert _relay_ons(rig) == [] and rig.board.relay is False
    assert rig.ctl.press() is False
    # the runtime comes back: sessions work again
    rig.auto_answer = True
    rig.poll(1000)
    rig.link_up()
    assert rig.ctl.state == IDLE


def test_heartbeat_silence_cuts_a_running_pulse():
    rig = Rig(pulse_ms=5000, heartbeat_timeout_ms=1000)
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start))
    rig.poll(10)
    assert rig.board.relay is True
    rig.poll(1100)
    assert rig.board.relay is False and rig.ctl.state == DOWN


def test_runtime_fault_ends_session_and_cuts_relay():
    rig = Rig(pulse_ms=5000)
    rig.link_up()
    s1 = rig.start_session()
    rig.send(P.RESULT, result_payload(s1))
    rig.poll(10)
    assert rig.board.relay is True
    rig.send(P.FAULT, P.pack_fault(0, 32, "camera lost"))
    rig.poll(10)
    assert rig.board.relay is False and rig.ctl.state == DOWN
    rig.send(P.HEARTBEAT, P.pack_heartbeat(P.S_IDLE, 0))
    rig.poll(10)
    assert rig.ctl.state == IDLE
    s2 = rig.start_session()
    rig.send(P.FAULT, P.pack_fault(s2.session_id, 34, "model error"))
    rig.poll(10)
    assert rig.ctl.results == ["PASS", "FAULT"]


def test_runtime_restart_mid_session_fails_it():
    rig = Rig()
    rig.link_up()
    rig.start_session()
    restarted = P.Codec(KEY, P.DIR_RUNTIME, [("role", "runtime")])
    rig.runtime = restarted
    rig.raw(restarted.hello())  # HELLO(flags = REPLY | BOOT)
    out = rig.poll(10) + rig.poll(10)
    assert rig.ctl.results == ["FAULT"] and rig.ctl.state == IDLE
    assert restarted.keyed and rig.ctl.codec.epoch == 2
    assert ("keyed", True) in [(n, f.get("boot")) for n, f in rig.events]
    assert any(m.type == P.HELLO and m.flags & P.HELLO_REPLY for m in out)


def test_trigger_input_is_debounced_and_edge_triggered():
    rig = Rig(debounce_ms=30)
    rig.link_up()
    rig.board.trigger = True
    rig.poll(20)
    assert rig.ctl.sessions_started == 0  # bounce shorter than the debounce time
    rig.board.trigger = False
    rig.poll(10)
    rig.board.trigger = True
    rig.poll(200)  # held: one session, not one per poll
    assert rig.ctl.sessions_started == 1
    rig.board.trigger = False
    rig.poll(50)
    assert rig.ctl.sessions_started == 1


def test_trigger_ignored_while_busy():
    rig = Rig()
    rig.link_up()
    rig.start_session()
    assert rig.ctl.press() is False
    assert rig.ctl.sessions_started == 1


def test_controller_sends_heartbeats():
    rig = Rig(heartbeat_interval_ms=500)
    rig.link_up()
    rig.poll(2600)
    hbs = [m for m in rig.received if m.type == P.HEARTBEAT]
    assert len(hbs) == 5


def test_reboot_starts_with_relay_off():
    rig = Rig()
    rig.link_up()
    start = rig.start_session()
    rig.send(P.RESULT, result_payload(start))
    rig.poll(10)
    assert rig.board.relay is True
    # power cycle: a new controller on the same board
    rig2 = Rig()
    assert rig2.board.relay_log == [(0.0, False)]
    assert rig2.ctl.state == DOWN


def test_rehandshake_without_boot_keeps_the_session():
    """A re-key (lost frames, a replayed HELLO) is not a restart: the session goes on under the new key."""
    rig = Rig()
    rig.link_up()
    start = rig.start_session()
    rig.raw(rig.runtime.hello())  # the runtime re-handshakes (no BOOT: it has held a key)
    rig.poll(10)
    rig.poll(10)
    assert rig.ctl.codec.epoch == 2 and rig.runtime.epoch == 2 and rig.ctl.state == SESSION
    assert ("keyed", False) in [(n, f.get("boot")) for n, f in rig.events]
    rig.send(P.RESULT, result_payload(start))
    rig.poll(10)
    assert rig.ctl.results == ["PASS"] and len(_relay_ons(rig)) == 1


def test_v1_frame_is_refused_and_counted():
    rig = Rig()
    rig.link_up()
    raw = bytearray(rig.runtime.frame(P.HEARTBEAT, P.pack_heartbeat(0, 0)))
    raw[0] = 1
    body = bytes(raw[:-2])
    rig.raw(P.cobs_encode(body + P.crc16(body).to_bytes(2, "big")) + b"\x00")
    rig.poll(10)
    assert rig.stats()["old_version"] == 1 and rig.stats()["bad_version"] == 0
