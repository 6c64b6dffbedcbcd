"""Render the worked examples of PROTOCOL.md (``python -m firmware_bridge.examples``).

The document is the reference: tests/ parse the blocks back out of PROTOCOL.md
and check every byte against firmware_bridge.protocol, so a change to either
that is not made to both fails. Re-run this only for a deliberate change.
"""

from __future__ import annotations

import json

from firmware_bridge import protocol as P

KEY = bytes(range(32))  # 000102...1f: a TEST key, never deploy it
NONCE = bytes(range(0xA0, 0xB0))

EXAMPLES = [
    ("Controller boots: HELLO asking for a reply", P.DIR_CONTROLLER, 1, P.HELLO,
     {"flags": 1, "info": [["role", "controller"], ["board", "rp2040"], ["fw", "0.1.0"]]}),
    ("Runtime answers with its HELLO", P.DIR_RUNTIME, 1, P.HELLO,
     {"flags": 0, "info": [["role", "runtime"], ["board", "Raspberry Pi 5"], ["runtime", "0.1.0"]]}),
    ("Card presented: START session 7", P.DIR_CONTROLLER, 2, P.START,
     {"session_id": 7, "nonce": NONCE.hex(), "deadline_ms": 6000}),
    ("Runtime ACKs the START", P.DIR_RUNTIME, 2, P.ACK, {"acked_type": P.START, "acked_seq": 2, "session_id": 7}),
    ("PROMPT for the terminal's display", P.DIR_RUNTIME, 3, P.PROMPT,
     {"session_id": 7, "code": 1, "text": "Look at the camera"}),
    ("RESULT: PASS, bound to the nonce of session 7", P.DIR_RUNTIME, 4, P.RESULT,
     {"session_id": 7, "nonce": NONCE.hex(), "verdict": P.V_PASS, "reason": 1, "elapsed_ms": 842,
      "frames_used": 5, "frames_seen": 9}),
    ("Controller ACKs the RESULT", P.DIR_CONTROLLER, 3, P.ACK, {"acked_type": P.RESULT, "acked_seq": 4, "session_id": 7}),
    ("Runtime heartbeat while idle", P.DIR_RUNTIME, 5, P.HEARTBEAT, {"state": P.S_IDLE, "session_id": 0}),
    ("Controller gives up on session 8 (deadline)", P.DIR_CONTROLLER, 4, P.ABORT, {"session_id": 8, "reason": P.R_DEADLINE}),
    ("Runtime shutting down", P.DIR_RUNTIME, 6, P.FAULT, {"session_id": 0, "reason": P.R_SHUTDOWN, "text": "runtime stopping"}),
]


def _fields_for_pack(f: dict) -> dict:
    out = dict(f)
    if "nonce" in out:
        out["nonce"] = bytes.fromhex(out["nonce"])
    return out


def _spaced(b: bytes, group: int = 8) -> str:
    h = b.hex()
    return " ".join(h[i : i + 2 * group] for i in range(0, len(h), 2 * group))


def render() -> str:
    blocks = []
    for title, direction, seq, mtype, fields in EXAMPLES:
        codec = P.Codec(KEY, direction)
        payload = P.pack_fields(mtype, _fields_for_pack(fields))
        frame = codec.frame(mtype, payload, seq=seq)
        wire = P.cobs_encode(frame) + b"\x00"
        header = frame[: P.HEADER_LEN]
        mac = frame[len(frame) - P.TRAILER_LEN : len(frame) - 2]
        crc = frame[-2:]
        blocks.append(
            "\n".join(
                [
                    f"#### {title}",
                    "",
                    "```example",
                    f"dir:     {direction.decode()}",
                    f"type:    {P.TYPE_NAMES[mtype]}",
                    f"seq:     {seq}",
                    f"fields:  {json.dumps(fields)}",
                    f"header:  {_spaced(header, 1)}",
                    f"payload: {_spaced(payload)}",
                    f"mac:     {_spaced(mac)}",
                    f"crc:     {crc.hex()}",
                    f"wire:    {_spaced(wire)}",
                    "```",
                ]
            )
        )
    return "\n\n".join(blocks) + "\n"


if __name__ == "__main__":
    print(render())
