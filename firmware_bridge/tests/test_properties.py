"""Property tests (hypothesis): round trips for any content, and no input makes a parser raise."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge import protocol as P

from .helpers import KEY


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_cobs_round_trip_any_bytes(data):
    enc = P.cobs_encode(data)
    assert 0 not in enc and P.cobs_decode(enc) == data


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(sorted(P.TYPE_NAMES)), st.binary(max_size=P.MAX_PAYLOAD), st.integers(1, 2**32 - 1))
def test_frame_round_trip_any_payload(mtype, payload, seq):
    tx, rx = P.Codec(KEY, P.DIR_RUNTIME), P.Codec(KEY, P.DIR_CONTROLLER)
    assert P.handshake(tx, rx)
    raw = P.cobs_decode(tx.encode(mtype, payload, seq=seq)[:-1])
    # HELLO travels in clear; everything else is encrypted (same length, different bytes)
    if mtype == P.HELLO:
        assert raw[8 : 8 + len(payload)] == payload
    elif len(payload) >= 8:  # shorter ones could match the keystream by chance
        assert raw[8 : 8 + len(payload)] != payload
    m = rx.decode_frame(raw)
    # accepted exactly when the type may come from a runtime and the payload parses
    try:
        P.unpack_payload(mtype, payload)
        parses = True
    except P.ProtocolError:
        parses = False
    ok = mtype in (P.HELLO, P.PROMPT, P.RESULT, P.HEARTBEAT, P.ACK, P.FAULT) and parses
    assert (m is not None) == ok
    if m is not None:
        assert m.seq == (0 if mtype == P.HELLO else seq)
        # senders write protocol version 1 in HELLO and cap texts at MAX_TEXT; receivers are lenient
        lenient = mtype == P.HELLO or len(m.fields.get("text", "").encode()) > P.MAX_TEXT
        if not lenient:
            assert P.pack_fields(mtype, m.fields) == payload


@settings(max_examples=500, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_feed_never_raises(chunks):
    rx = P.Codec(KEY, P.DIR_CONTROLLER)
    for c in chunks:
        for m in rx.feed(c):
            assert m.type in P.TYPE_NAMES or m.type == P.KEYED
    assert sum(rx.stats.values()) >= 0
