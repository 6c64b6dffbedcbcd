"""Fuzz both parsers (controller state machine, runtime serial bridge) with >= 10^5 frames.

Seeded, so a failure reproduces. Frames are: random bytes; valid frames with
bit flips, insertions, deletions and truncation; and *authentic* frames (right
key and direction) with random payloads and random field values, which is
what a key holder with a bug, or the fuzzer, can send. Nothing may raise, the
controller's relay must never be energised, and afterwards both ends still
accept a good frame.
"""

from __future__ import annotations

import os
import random
import time

from edge.bridge.serial_link import SerialBridge
from firmware_bridge import protocol as P

from .fakes import NullSerial
from .helpers import KEY, Rig, keyed_codec

# per parser; EDGE_FUZZ_FRAMES=1000000 for the once-per-release run (issue 12: 10^6 into each parser)
FRAMES_PER_SIDE = int(os.environ.get("EDGE_FUZZ_FRAMES", "100000"))


_POOL = random.Random(5)
TEXT_POOL = "".join(chr(_POOL.choice([_POOL.randrange(32, 127), _POOL.randrange(0x80, 0x3000)])) for _ in range(4096))


def _random_fields(rng: random.Random, mtype: int) -> dict:
    sid = rng.choice([0, 1, 2, rng.randrange(1 << 32)])
    nonce = rng.randbytes(16)
    i = rng.randrange(len(TEXT_POOL) - 80)
    text = TEXT_POOL[i : i + rng.randrange(0, 80)]
    return {
        "session_id": sid,
        "nonce": nonce,
        "deadline_ms": rng.choice([0, 1, 5000, rng.randrange(1 << 32)]),
        "code": rng.randrange(256),
        "text": text,
        "verdict": rng.randrange(256),
        "reason": rng.randrange(256),
        "elapsed_ms": rng.randrange(1 << 32),
        "frames_used": rng.randrange(1 << 16),
        "frames_seen": rng.randrange(1 << 16),
        "state": rng.randrange(256),
        "acked_type": rng.randrange(256),
        "acked_seq": rng.randrange(1 << 32),
        "flags": rng.randrange(256),
        "info": [(text[:10], text[10:30]) for _ in range(rng.randrange(0, 4))],
        # HELLOs with random randoms start handshakes that can never complete (no peer holds them)
        "rand": rng.randbytes(16),
        "echo": rng.choice([bytes(16), rng.randbytes(16)]),
        "template": rng.randbytes(rng.choice([0, 16, 140, P.MAX_TEMPLATE])),
    }


def _mutate(rng: random.Random, wire: bytes) -> bytes:
    b = bytearray(wire)
    for _ in range(rng.randrange(1, 4)):
        op = rng.randrange(5)
        if op == 0 and b:
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1:
            b.insert(rng.randrange(len(b) + 1), rng.randrange(256))
        elif op == 2 and b:
            del b[rng.randrange(len(b))]
        elif op == 3 and b:
            del b[rng.randrange(len(b)) :]
        else:
            i = rng.randrange(len(b) + 1)
            b[i:i] = b[: rng.randrange(len(b) + 1)]
    return bytes(b)


def _frames(rng: random.Random, signer: P.Codec, n: int):
    """Yield n wire chunks of mixed kinds from the given signer's direction."""
    types = list(P.TYPE_NAMES) + [0, 9, 0x7F, 0xFF]
    forgers = [keyed_codec(bytes(32), signer.direction),
               keyed_codec(KEY, P.DIR_RUNTIME if signer.direction == P.DIR_CONTROLLER else P.DIR_CONTROLLER)]
    for i in range(n):
        kind = i % 5
        if kind == 4:  # wrong key, or the right key with the other end's direction (a reflection)
            mtype = rng.choice(list(P.TYPE_NAMES))
            yield rng.choice(forgers).encode(mtype, P.pack_fields(mtype, _random_fields(rng, mtype))[: P.MAX_PAYLOAD])
            continue
        if kind == 0:
            yield rng.randbytes(rng.randrange(0, 300))
        elif kind == 1:
            yield _mutate(rng, signer.encode(P.HEARTBEAT if i % 3 else P.RESULT, P.pack_result(1, bytes(16), 1, 1, 5)))
        elif kind == 2:
            payload = rng.randbytes(rng.randrange(0, 60))
            yield signer.encode(rng.choice(types), payload)
        else:
            mtype = rng.choice(list(P.TYPE_NAMES))
            try:
                payload = P.pack_fields(mtype, _random_fields(rng, mtype))
            except P.ProtocolError:
                payload = b""
            if len(payload) > P.MAX_PAYLOAD:
                payload = payload[: P.MAX_PAYLOAD]
            seq = rng.choice([None, None, None, 0, rng.randrange(1 << 32)])
            yield signer.encode(mtype, payload, seq=seq)


def test_fuzz_controller_parser_and_state_machine():
    rng = random.Random(20261123)
    rig = Rig()
    rig.link_up()
    signer = rig.runtime  # authentic runtime frames
    t0 = time.perf_counter()
    n = 0
    batch = []
    for chunk in _frames(rng, signer, FRAMES_PER_SIDE):
        batch.append(chunk)
        n += 1
        if len(batch) == 8:
            rig.raw(b"".join(batch))
            batch.clear()
            rig.ctl.poll()
            rig.tx.clear()
            if n % 800 == 0:
                rig.clock.advance(rng.randrange(0, 400))
                rig.send(P.HEARTBEAT, P.pack_heartbeat(P.S_IDLE, 0))
                rig.ctl.poll()
                rig.ctl.press()  # so RESULTs meet a running session too
    elapsed = time.perf_counter() - t0
    assert n == FRAMES_PER_SIDE
    assert not any(on for _, on in rig.board.relay_log), "fuzz energised the relay"
    st = rig.stats()
    rejected = sum(v for k, v in st.items() if k != "ok")
    assert st["ok"] > 1000 and rejected > 10_000 and st["bad_mac"] > 5000
    # still alive: a clean frame from a restarted runtime is accepted
    fresh = P.Codec(KEY, P.DIR_RUNTIME)
    rig.runtime = fresh
    rig.raw(fresh.hello())
    rig.poll()
    rig.poll()
    assert fresh.keyed
    before = rig.stats()["ok"]
    rig.send(P.HEARTBEAT, P.pack_heartbeat(0, 0))
    rig.ctl.poll()
    assert rig.stats()["ok"] == before + 1
    print(f"\ncontroller fuzz: {n} frames in {elapsed:.2f} s; counters {st}")


def _keyed_with_bridge(codec: P.Codec, bridge: SerialBridge, ser: NullSerial) -> P.Codec:
    """Complete the handshake between a controller codec and the bridge over the null port."""
    for _ in range(6):
        data = bytes(ser.written)
        ser.written.clear()
        codec.feed(data)
        out = codec.take_outbox()
        if out:
            bridge.on_bytes(out)
        if codec.keyed and bridge._codec.keyed and not out:
            break
        if not data and not out:
            bridge.on_bytes(codec.hello())
    assert codec.keyed and bridge._codec.keyed
    ser.written.clear()
    return codec


def test_fuzz_runtime_serial_bridge_parser():
    rng = random.Random(1123)
    ser = NullSerial()
    bridge = SerialBridge(ser, KEY, heartbeat_interval_s=0.05, heartbeat_timeout_s=10.0, result_retry_ms=10)
    signer = _keyed_with_bridge(P.Codec(KEY, P.DIR_CONTROLLER), bridge, ser)  # authentic controller frames
    t0 = time.perf_counter()
    n = 0
    batch = []
    try:
        for chunk in _frames(rng, signer, FRAMES_PER_SIDE):
            batch.append(chunk)
            n += 1
            if len(batch) == 8:
                bridge.on_bytes(b"".join(batch))
                batch.clear()
                req = bridge.wait(0)
                if req is not None:
                    assert req.origin == "serial" and len(req.nonce) == 16
        elapsed = time.perf_counter() - t0
        st = bridge.stats
        assert st["ok"] > 1000 and sum(v for k, v in st.items() if k != "ok") > 10_000
        fresh = P.Codec(KEY, P.DIR_CONTROLLER)
        bridge.on_bytes(fresh.hello())
        _keyed_with_bridge(fresh, bridge, ser)
        bridge.on_bytes(fresh.encode(P.START, P.pack_start(4242, b"n" * 16, 0)))
        req = bridge.wait(1.0)
        assert req is not None and req.session_id == 4242
        assert bridge._thread.is_alive()
        print(f"\nruntime fuzz: {n} frames in {elapsed:.2f} s; counters {st}")
    finally:
        bridge.close()
