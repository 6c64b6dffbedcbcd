"""Render the worked examples of PROTOCOL.md (``python -m firmware_bridge.examples``).

The document is the reference: tests/ parse the blocks back out of PROTOCOL.md
and check every byte against firmware_bridge.protocol (and against hashlib/hmac
directly), so a change to either that is not made to both fails. Re-run this
only for a deliberate change.

The handshake below is a real one between two Codecs whose random sources are
fixed, so the derived keys and every later byte are reproducible.
"""

from __future__ import annotations

import json

from firmware_bridge import protocol as P

KEY = bytes(range(32))  # 000102...1f: a TEST key, never deploy it
NONCE = bytes(range(0xA0, 0xB0))
RAND_C = bytes(range(0xC0, 0xD0))  # the controller's handshake random (its TRNG, here fixed)
RAND_R = bytes(range(0xE0, 0xF0))  # the runtime's
TEMPLATE = bytes(range(0x10, 0x30))  # a 32-byte stand-in for the 1:1 template (real ones are ~140)
C_INFO = [("role", "controller"), ("board", "rp2040"), ("fw", "0.2.0")]
R_INFO = [("role", "runtime"), ("board", "Raspberry Pi 5"), ("runtime", "0.2.0")]

# (title, sender, seq, type, fields) for the frames after the handshake
KEYED_EXAMPLES = [
    ("Card presented: START session 7 with a 1:1 template", P.DIR_CONTROLLER, 1, P.START,
     {"session_id": 7, "nonce": NONCE.hex(), "deadline_ms": 6000, "template": TEMPLATE.hex()}),
    ("Runtime ACKs the START", P.DIR_RUNTIME, 1, P.ACK, {"acked_type": P.START, "acked_seq": 1, "session_id": 7}),
    ("PROMPT for the terminal's display (a challenge action)", P.DIR_RUNTIME, 2, P.PROMPT,
     {"session_id": 7, "code": 11, "text": "Blink"}),
    ("RESULT: PASS, bound to the nonce of session 7", P.DIR_RUNTIME, 3, P.RESULT,
     {"session_id": 7, "nonce": NONCE.hex(), "verdict": P.V_PASS, "reason": 1, "elapsed_ms": 842,
      "frames_used": 5, "frames_seen": 9}),
    ("Controller ACKs the RESULT", P.DIR_CONTROLLER, 2, P.ACK, {"acked_type": P.RESULT, "acked_seq": 3, "session_id": 7}),
    ("Runtime heartbeat while idle", P.DIR_RUNTIME, 4, P.HEARTBEAT, {"state": P.S_IDLE, "session_id": 0}),
    ("Controller gives up on session 8 (deadline)", P.DIR_CONTROLLER, 3, P.ABORT, {"session_id": 8, "reason": P.R_DEADLINE}),
    ("Runtime shutting down", P.DIR_RUNTIME, 5, P.FAULT, {"session_id": 0, "reason": P.R_SHUTDOWN, "text": "runtime stopping"}),
]

HEX_FIELDS = ("nonce", "template", "rand", "echo")


def fields_for_pack(f: dict) -> dict:
    out = dict(f)
    for k in HEX_FIELDS:
        if k in out:
            out[k] = bytes.fromhex(out[k])
    if "info" in out:
        out["info"] = [tuple(p) for p in out["info"]]
    return out


def _fixed(value: bytes):
    def rnd(n, _calls=[0]):  # noqa: B006 - a counter per source
        _calls[0] += 1
        # the first draw is the handshake random; later ones (the next handshake's) just differ
        return value if _calls[0] == 1 else bytes((b + _calls[0]) & 0xFF or 1 for b in value)

    return rnd


def paired_codecs():
    """(controller codec, runtime codec, [(title, sender, wire)] of the three handshake HELLOs)."""
    ctl = P.Codec(KEY, P.DIR_CONTROLLER, C_INFO, _fixed(RAND_C))
    rt = P.Codec(KEY, P.DIR_RUNTIME, R_INFO, _fixed(RAND_R))
    hello_c = ctl.hello()
    rt.feed(hello_c)
    hello_r = rt.take_outbox()
    ctl.feed(hello_r)
    confirm = ctl.take_outbox()
    rt.feed(confirm)
    assert ctl.keyed and rt.keyed and not rt.take_outbox()
    return ctl, rt, [
        ("Controller boots: HELLO with its random, asking for an answer", P.DIR_CONTROLLER, hello_c),
        ("Runtime answers: its random, the controller's echoed", P.DIR_RUNTIME, hello_r),
        ("Controller confirms: both randoms known, link key in force", P.DIR_CONTROLLER, confirm),
    ]


def _spaced(b: bytes, group: int = 8) -> str:
    h = b.hex()
    return " ".join(h[i : i + 2 * group] for i in range(0, len(h), 2 * group))


def _json_fields(m: P.Message) -> dict:
    out = {}
    for k, v in m.fields.items():
        if k == "proto":
            continue
        out[k] = v.hex() if isinstance(v, bytes) else ([list(p) for p in v] if k == "info" else v)
    return out


def _block(title: str, direction: bytes, mtype: int, seq: int, fields: dict, frame: bytes, plain: bytes) -> str:
    wire = P.cobs_encode(frame) + b"\x00"
    n = len(frame)
    lines = [
        f"#### {title}",
        "",
        "```example",
        f"dir:     {direction.decode()}",
        f"type:    {P.TYPE_NAMES[mtype]}",
        f"seq:     {seq}",
        f"fields:  {json.dumps(fields)}",
        f"header:  {_spaced(frame[: P.HEADER_LEN], 1)}",
        f"payload: {_spaced(plain)}",
    ]
    if mtype != P.HELLO:
        lines.append(f"cipher:  {_spaced(frame[P.HEADER_LEN : n - P.TRAILER_LEN])}")
    lines += [
        f"mac:     {_spaced(frame[n - P.TRAILER_LEN : n - 2])}",
        f"crc:     {frame[-2:].hex()}",
        f"wire:    {_spaced(wire)}",
        "```",
    ]
    return "\n".join(lines)


def render() -> str:
    ctl, rt, hellos = paired_codecs()
    blocks = []
    for title, direction, wire in hellos:
        frame = P.cobs_decode(wire[:-1])
        receiver = P.Codec(KEY, P.DIR_RUNTIME if direction == P.DIR_CONTROLLER else P.DIR_CONTROLLER)
        m = receiver.decode_frame(frame)
        blocks.append(_block(title, direction, P.HELLO, 0, _json_fields(m), frame, frame[P.HEADER_LEN : -P.TRAILER_LEN]))
    keys = P.derive_keys(KEY, RAND_C, RAND_R)
    blocks.append("\n".join([
        "#### The link key of this handshake",
        "",
        "```keys",
        f"rand_C:  {_spaced(RAND_C)}",
        f"rand_R:  {_spaced(RAND_R)}",
        f"K_hello: {_spaced(P.hmac_sha256(KEY, P.LABEL_HELLO))}",
        f"PRK:     {_spaced(P.hmac_sha256(KEY, P.LABEL_KEY + RAND_C + RAND_R))}",
        f"macC:    {_spaced(keys['macC'])}",
        f"macR:    {_spaced(keys['macR'])}",
        f"encC:    {_spaced(keys['encC'])}",
        f"encR:    {_spaced(keys['encR'])}",
        "```",
    ]))
    for title, direction, seq, mtype, fields in KEYED_EXAMPLES:
        codec = ctl if direction == P.DIR_CONTROLLER else rt
        plain = P.pack_fields(mtype, fields_for_pack(fields))
        frame = codec.frame(mtype, plain, seq=seq)
        blocks.append(_block(title, direction, mtype, seq, fields, frame, plain))
    return "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    print(render())
