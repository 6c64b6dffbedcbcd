"""The shared wire protocol: primitives, round trips, every rejection path and recovery."""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import struct
from pathlib import Path

import pytest

from firmware_bridge import protocol as P

from .helpers import KEY, keyed_codec

def test_runtime_uses_the_firmware_module():
    # one implementation for both ends: the runtime imports the firmware's protocol module
    from edge.bridge import keys, serial_link

    assert serial_link.P is P and keys.protocol is P


def test_codes_agree_with_edge_types():
    from edge.types import Prompt, Reason, VerdictKind

    for code, name in P.VERDICT_NAMES.items():
        assert VerdictKind[name].code == code
    assert (P.R_ABORTED, P.R_SHUTDOWN, P.R_CONTROLLER_LOST) == (Reason.ABORTED, Reason.SHUTDOWN, Reason.CONTROLLER_LOST)
    # controller-side reasons must not collide with the runtime's table
    assert not {P.R_RUNTIME_LOST, P.R_DEADLINE, P.R_BOOT} & {int(r) for r in Reason}
    assert max(len(p.text.encode()) for p in Prompt) <= P.MAX_TEXT


def test_crc16_ccitt_false_check_value():
    assert P.crc16(b"123456789") == 0x29B1
    assert P.crc16(b"") == 0xFFFF


@pytest.mark.parametrize("klen", [0, 1, 16, 32, 63, 64, 65, 200])
def test_hmac_matches_stdlib(klen):
    rng = random.Random(klen)
    for mlen in (0, 1, 55, 64, 300):
        key = bytes(rng.randrange(256) for _ in range(klen))
        msg = bytes(rng.randrange(256) for _ in range(mlen))
        assert P.hmac_sha256(key, msg) == hmac.new(key, msg, hashlib.sha256).digest()


def test_ct_equal():
    assert P.ct_equal(b"abc", b"abc")
    assert not P.ct_equal(b"abc", b"abd")
    assert not P.ct_equal(b"abc", b"ab")


@pytest.mark.parametrize("n", [0, 1, 2, 253, 254, 255, 256, 507, 508, 509, 700])
def test_cobs_round_trip(n):
    rng = random.Random(n)
    for zeros in (0.0, 0.1, 1.0):
        data = bytes(0 if rng.random() < zeros else rng.randrange(1, 256) for _ in range(n))
        enc = P.cobs_encode(data)
        assert 0 not in enc
        assert len(enc) <= n + n // 254 + 1
        assert P.cobs_decode(enc) == data


def test_cobs_decode_rejects_malformed():
    with pytest.raises(P.ProtocolError):
        P.cobs_decode(b"\x05ab")  # block overruns
    with pytest.raises(P.ProtocolError):
        P.cobs_decode(b"\x02a\x00")


def test_parse_key_formats():
    raw = bytes(range(32))
    assert P.parse_key(raw) == raw
    assert P.parse_key(raw.hex().encode()) == raw
    assert P.parse_key(raw.hex().upper().encode() + b"\n") == raw
    assert P.parse_key(b"  " + raw.hex().encode() + b"\r\n") == raw
    for bad in (b"", b"abc", raw.hex()[:62].encode(), raw + b"x", b"z" * 64, raw[:16].hex().encode()):
        with pytest.raises(P.ProtocolError):
            P.parse_key(bad)


MESSAGES = [
    (P.HELLO, {"flags": 1, "rand": b"r" * 16, "echo": bytes(16),
               "info": [("role", "runtime"), ("board", "Raspberry Pi 5"), ("models", "a,b/float32")]}),
    (P.START, {"session_id": 0xFFFFFFFF, "nonce": bytes(range(16)), "deadline_ms": 6000, "template": b""}),
    (P.START, {"session_id": 1, "nonce": bytes(range(16)), "deadline_ms": 1, "template": bytes(range(P.MAX_TEMPLATE))}),
    (P.PROMPT, {"session_id": 3, "code": 2, "text": "Move closer"}),
    (P.PROMPT, {"session_id": 3, "code": 9, "text": "Ünïcødé ✓"}),
    (P.RESULT, {"session_id": 9, "nonce": b"\x00" * 16, "verdict": P.V_FAIL, "reason": 2, "elapsed_ms": 1234,
                "frames_used": 5, "frames_seen": 40}),
    (P.HEARTBEAT, {"state": P.S_BUSY, "session_id": 4}),
    (P.ACK, {"acked_type": P.RESULT, "acked_seq": 77, "session_id": 9}),
    (P.ABORT, {"session_id": 4, "reason": P.R_DEADLINE}),
    (P.FAULT, {"session_id": 0, "reason": 32, "text": "camera lost"}),
]


@pytest.mark.parametrize("mtype,fields", MESSAGES, ids=[P.TYPE_NAMES[t] + str(i) for i, (t, _) in enumerate(MESSAGES)])
def test_round_trip_every_message(mtype, fields):
    sender_dir = P.DIR_CONTROLLER if mtype in (P.START, P.ABORT) else P.DIR_RUNTIME
    receiver_dir = P.DIR_RUNTIME if sender_dir == P.DIR_CONTROLLER else P.DIR_CONTROLLER
    tx, rx = P.Codec(KEY, sender_dir), P.Codec(KEY, receiver_dir)
    assert P.handshake(tx, rx)
    rx.stats = P.new_stats()
    wire = tx.encode(mtype, P.pack_fields(mtype, fields))
    assert wire.endswith(b"\x00") and wire.count(0) == 1
    # byte by byte: framing must not depend on read boundaries
    msgs = [m for b in wire for m in rx.feed(bytes([b]))]
    assert len(msgs) == 1
    m = msgs[0]
    assert m.type == mtype and m.seq == (0 if mtype == P.HELLO else 1)
    for k, v in fields.items():
        got = getattr(m, k)
        assert (list(got) if k == "info" else got) == (list(v) if k == "info" else v)
    assert rx.stats["ok"] == 1 and sum(rx.stats.values()) == 1


def test_long_text_is_truncated_on_a_character_boundary():
    p = P.pack_prompt(1, 1, "é" * 100)
    f = P.unpack_payload(P.PROMPT, p)
    assert f["text"] == "é" * (P.MAX_TEXT // 2)


def _pair():
    runtime, ctl = P.Codec(KEY, P.DIR_RUNTIME), P.Codec(KEY, P.DIR_CONTROLLER)
    assert P.handshake(ctl, runtime)
    runtime.stats.update(P.new_stats())
    ctl.stats.update(P.new_stats())
    return runtime, ctl


def _good(runtime, n=1):
    return runtime.encode(P.HEARTBEAT, P.pack_heartbeat(P.S_IDLE, n))


def _reframe(raw: bytes) -> bytes:
    """Fix the CRC of a tampered raw frame and COBS it, so it reaches the later checks."""
    body = raw[:-2]
    return P.cobs_encode(body + struct.pack(">H", P.crc16(body))) + b"\x00"


def _assert_rejected_then_recovers(rx, runtime, bad: bytes, counter: str):
    assert rx.feed(bad) == []
    assert rx.stats[counter] == 1, rx.stats
    assert rx.last_reject == counter
    nxt = rx.feed(_good(runtime, 99))
    assert len(nxt) == 1 and nxt[0].session_id == 99, f"link did not recover after {counter}"


def test_forged_mac_rejected_counted_and_link_recovers():
    runtime, ctl = _pair()
    raw = bytearray(runtime.frame(P.RESULT, P.pack_result(1, bytes(16), P.V_PASS, 1, 10)))
    raw[-3] ^= 0x01  # last MAC byte
    _assert_rejected_then_recovers(ctl, runtime, _reframe(bytes(raw)), "bad_mac")


def test_wrong_key_is_bad_mac():
    runtime, ctl = _pair()
    forger = keyed_codec(os.urandom(32), P.DIR_RUNTIME)
    _assert_rejected_then_recovers(ctl, runtime, forger.encode(P.RESULT, P.pack_result(1, bytes(16), 1, 1, 1)), "bad_mac")


def test_frame_reflected_to_its_sender_is_bad_mac():
    runtime, ctl = _pair()
    own = ctl.encode(P.HEARTBEAT, P.pack_heartbeat(0, 0))
    _assert_rejected_then_recovers(ctl, runtime, own, "bad_mac")


def test_tampered_payload_with_fixed_crc_is_bad_mac():
    runtime, ctl = _pair()
    raw = bytearray(runtime.frame(P.RESULT, P.pack_result(1, bytes(16), P.V_FAIL, 2, 10)))
    raw[P.HEADER_LEN + 4 + 16] = P.V_PASS  # FAIL -> PASS
    _assert_rejected_then_recovers(ctl, runtime, _reframe(bytes(raw)), "bad_mac")


def test_bad_crc():
    runtime, ctl = _pair()
    raw = bytearray(runtime.frame(P.HEARTBEAT, P.pack_heartbeat(0, 0)))
    raw[3] ^= 0x40
    _assert_rejected_then_recovers(ctl, runtime, P.cobs_encode(bytes(raw)) + b"\x00", "bad_crc")


def test_truncated_frames():
    runtime, ctl = _pair()
    _assert_rejected_then_recovers(ctl, runtime, P.cobs_encode(runtime.frame(P.HEARTBEAT, b"\x00" * 5)[:10]) + b"\x00",
                                   "truncated")
    raw = runtime.frame(P.HEARTBEAT, P.pack_heartbeat(0, 0))
    assert ctl.feed(P.cobs_encode(raw[:-3]) + b"\x00") == []
    assert ctl.stats["truncated"] == 2


def test_oversized_run_without_delimiter_then_resync():
    runtime, ctl = _pair()
    junk = bytes(random.Random(1).randrange(1, 256) for _ in range(5000))
    for i in range(0, len(junk), 97):  # in pieces, as a UART delivers it
        assert ctl.feed(junk[i : i + 97]) == []
    assert ctl.stats["oversized"] == 1
    # the junk's end and the next frame's start arrive together
    out = ctl.feed(b"\x00" + _good(runtime, 5))
    assert [m.session_id for m in out] == [5]


def test_oversized_length_field():
    runtime, ctl = _pair()
    body = struct.pack(">BBIH", 1, P.HEARTBEAT, 1, 300) + bytes(300 + 16)
    frame = body + struct.pack(">H", P.crc16(body))
    _assert_rejected_then_recovers(ctl, runtime, P.cobs_encode(frame) + b"\x00", "oversized")


def test_bad_length_garbage_version_unknown_type_direction_payload():
    runtime, ctl = _pair()
    good = runtime.frame(P.HEARTBEAT, P.pack_heartbeat(0, 0))
    _assert_rejected_then_recovers(ctl, runtime, P.cobs_encode(good + b"\x01\x02") + b"\x00", "bad_length")

    runtime, ctl = _pair()
    _assert_rejected_then_recovers(ctl, runtime, b"\x07\x01\x02\x00", "garbage")

    runtime, ctl = _pair()
    raw = bytearray(good)
    raw[0] = 3
    # a version-3 frame is refused before its MAC is looked at
    _assert_rejected_then_recovers(ctl, runtime, _reframe(bytes(raw)), "bad_version")

    runtime, ctl = _pair()
    raw[0] = 1
    # a v1 frame (old firmware) gets its own counter, so the runtime can say "update the controller"
    _assert_rejected_then_recovers(ctl, runtime, _reframe(bytes(raw)), "old_version")

    runtime, ctl = _pair()
    _assert_rejected_then_recovers(ctl, runtime, runtime.encode(0x55, b""), "unknown_type")

    runtime, ctl = _pair()
    # START comes only from the controller: a runtime-signed START is refused
    _assert_rejected_then_recovers(ctl, runtime, runtime.encode(P.START, P.pack_start(1, bytes(16))), "wrong_direction")

    runtime, ctl = _pair()
    _assert_rejected_then_recovers(ctl, runtime, runtime.encode(P.RESULT, b"\x00" * 7), "bad_payload")


def test_replayed_frame_is_rejected_and_link_recovers():
    runtime, ctl = _pair()
    w1 = _good(runtime, 1)
    assert len(ctl.feed(w1)) == 1
    _assert_rejected_then_recovers(ctl, runtime, w1, "replay")


def test_restarted_peer_gets_a_new_key_and_sequence_from_one():
    runtime, ctl = _pair()
    recorded = [_good(runtime, i) for i in range(1, 6)]
    for w in recorded:
        ctl.feed(w)
    restarted = P.Codec(KEY, P.DIR_RUNTIME)
    assert P.handshake(restarted, ctl)
    assert ctl.epoch == 2 and restarted.epoch == 1
    out = ctl.feed(_good(restarted, 42))
    assert [(m.name, m.seq) for m in out] == [("HEARTBEAT", 1)]
    # nothing recorded under the old key verifies any more (after the peer's first new-key frame)
    assert ctl.feed(b"".join(recorded)) == [] and ctl.stats["bad_mac"] == 5


def test_sequence_never_wraps_under_one_key():
    runtime, ctl = _pair()
    runtime.tx_seq = 0xFFFFFFFE
    assert [m.seq for m in ctl.feed(_good(runtime))] == [0xFFFFFFFF]
    with pytest.raises(P.ProtocolError, match="re-handshaking"):
        _good(runtime)
    assert not runtime.keyed


def test_frames_split_and_glued_arbitrarily():
    runtime, ctl = _pair()
    stream = b"".join(_good(runtime, i) for i in range(50))
    rng = random.Random(7)
    got = []
    i = 0
    while i < len(stream):
        n = rng.randrange(1, 40)
        got += ctl.feed(stream[i : i + n])
        i += n
    assert [m.session_id for m in got] == list(range(50))


def test_payload_too_large_to_send():
    runtime, _ = _pair()
    with pytest.raises(P.ProtocolError):
        runtime.encode(P.FAULT, bytes(P.MAX_PAYLOAD + 1))


# ---------------------------------------------------------------- v2 handshake


def test_simultaneous_boot_hellos_converge_on_one_key():
    a, b = P.Codec(KEY, P.DIR_CONTROLLER), P.Codec(KEY, P.DIR_RUNTIME)
    wa, wb = a.hello(), b.hello()  # both start at once; the HELLOs cross on the wire
    a.feed(wb)
    b.feed(wa)
    for _ in range(6):
        oa, ob = a.take_outbox(), b.take_outbox()
        if not oa and not ob:
            break
        b.feed(oa)
        a.feed(ob)
    assert a.keyed and b.keyed
    assert b.feed(a.encode(P.HEARTBEAT, P.pack_heartbeat(0, 1)))[-1].session_id == 1
    assert a.feed(b.encode(P.HEARTBEAT, P.pack_heartbeat(0, 2)))[-1].session_id == 2


def test_replayed_hello_never_reinstalls_an_old_key():
    ctl, rt = P.Codec(KEY, P.DIR_CONTROLLER), P.Codec(KEY, P.DIR_RUNTIME)
    boot_hello = ctl.hello()
    assert P.handshake(ctl, rt)
    recorded = ctl.encode(P.START, P.pack_start(1, b"n" * 16, 5000))
    assert [m.name for m in rt.feed(recorded)] == ["START"]
    # the attacker replays the controller's boot HELLO, then the START
    out = rt.feed(boot_hello)
    assert [m.name for m in out] == ["HELLO"] and rt.epoch == 1  # only an answer is queued: no new key
    assert rt.feed(recorded) == [] and rt.stats["replay"] == 1
    # the real controller answers the runtime's answer: a new key with fresh randoms...
    ctl.feed(rt.take_outbox())
    rt.feed(ctl.take_outbox())
    ctl.feed(rt.take_outbox())  # the runtime's confirmation
    assert ctl.epoch == 2 and rt.epoch == 2
    rt.feed(ctl.encode(P.HEARTBEAT, P.pack_heartbeat(0, 0)))
    # ...under which nothing recorded verifies
    assert rt.feed(recorded) == [] and rt.stats["bad_mac"] == 1


def test_confirmation_lost_the_first_keyed_frame_confirms():
    ctl, rt = P.Codec(KEY, P.DIR_CONTROLLER), P.Codec(KEY, P.DIR_RUNTIME)
    rt.feed(ctl.hello())
    ctl.feed(rt.take_outbox())
    ctl.take_outbox()  # the confirmation HELLO is lost
    assert ctl.keyed and not rt.keyed
    out = rt.feed(ctl.encode(P.HEARTBEAT, P.pack_heartbeat(0, 7)))
    assert [m.name for m in out] == ["KEYED", "HEARTBEAT"] and rt.keyed


def test_payloads_are_encrypted_on_the_wire():
    ctl, rt = _pair()[::-1]
    template = b"BIOMETRIC-TEMPLATE-" * 7
    wire = ctl.encode(P.START, P.pack_start(3, b"n" * 16, 5000, template))
    assert b"BIOMETRIC" not in P.cobs_decode(wire[:-1]) and b"n" * 16 not in P.cobs_decode(wire[:-1])
    m = rt.feed(wire)[0]
    assert m.template == template and "BIOMETRIC" not in repr(m)
    with pytest.raises(P.ProtocolError):
        P.pack_start(3, b"n" * 16, 5000, bytes(P.MAX_TEMPLATE + 1))


def test_key_file_contents():
    assert P.parse_key(bytes(range(100, 132))) == bytes(range(100, 132))
    for bad in (b"correct horse battery staple 123", b"Z" * 32, b"A" * 32):
        with pytest.raises(P.ProtocolError, match="keygen"):
            P.parse_key(bad)
