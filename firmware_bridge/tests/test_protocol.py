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
