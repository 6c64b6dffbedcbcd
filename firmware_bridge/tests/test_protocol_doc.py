"""The worked examples in PROTOCOL.md, parsed out of the document and checked byte by byte:
against protocol.py, and independently against Python's hmac/hashlib (key schedule, keystream,
MAC), in both directions."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from firmware_bridge import examples
from firmware_bridge import protocol as P

DOC = Path(__file__).resolve().parents[1] / "PROTOCOL.md"
TYPES = {name: code for code, name in P.TYPE_NAMES.items()}


def _kv(block: str) -> dict:
    out = {}
    for line in block.strip().splitlines():
        k, v = line.split(":", 1)
        out[k.strip()] = v.strip()
    return out


def _blocks():
    text = DOC.read_text(encoding="utf-8")
    key = re.search(r"test\*\* key `([0-9a-f]{64})`", text)
    assert key, "PROTOCOL.md must state the test key"
    ex = [_kv(m.group(1)) for m in re.finditer(r"```example\n(.*?)```", text, re.S)]
    keys = [_kv(m.group(1)) for m in re.finditer(r"```keys\n(.*?)```", text, re.S)]
    assert len(keys) == 1, "PROTOCOL.md must show the derived keys once"
    return bytes.fromhex(key.group(1)), ex, keys[0]


KEY, BLOCKS, KEYS = _blocks()


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _hm(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _ids():
    return [f"{b['type']}-{b['dir']}{b['seq']}" + ("-" + str(i) if b["type"] == "HELLO" else "")
            for i, b in enumerate(BLOCKS)]


def test_document_has_an_example_of_every_message_type_and_the_handshake():
    assert {b["type"] for b in BLOCKS} == set(TYPES)
    assert [b["type"] for b in BLOCKS[:3]] == ["HELLO"] * 3


def test_derived_keys_from_their_definitions():
    rc, rr = _hex(KEYS["rand_C"]), _hex(KEYS["rand_R"])
    assert _hm(KEY, b"edge-link v2 hello") == _hex(KEYS["K_hello"])
    prk = _hm(KEY, b"edge-link v2 key" + rc + rr)
    assert prk == _hex(KEYS["PRK"])
    for name in ("macC", "macR", "encC", "encR"):
        assert _hm(prk, name.encode()) == _hex(KEYS[name]), name
    assert P.derive_keys(KEY, rc, rr) == {n: _hex(KEYS[n]) for n in ("macC", "macR", "encC", "encR")}


def _keystream(enc_key: bytes, seq: int, n: int) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += _hm(enc_key, seq.to_bytes(4, "big") + bytes([i]))
        i += 1
    return out[:n]


@pytest.mark.parametrize("ex", BLOCKS, ids=_ids())
def test_worked_example_bytes_from_their_definitions(ex):
    direction = ex["dir"].encode()
    mtype = TYPES[ex["type"]]
    fields = examples.fields_for_pack(json.loads(ex["fields"]))
    plain = P.pack_fields(mtype, fields)
    assert plain == _hex(ex["payload"])
    header = _hex(ex["header"])
    seq = int(ex["seq"])
    assert header == bytes([P.PROTOCOL_VERSION, mtype]) + seq.to_bytes(4, "big") + len(plain).to_bytes(2, "big")
    if mtype == P.HELLO:
        body = plain
        mac = _hm(_hex(KEYS["K_hello"]), direction + header + body)[:16]
    else:
        d = ex["dir"]
        body = bytes(a ^ b for a, b in zip(plain, _keystream(_hex(KEYS["enc" + d]), seq, len(plain))))
        assert body == _hex(ex["cipher"])
        mac = _hm(_hex(KEYS["mac" + d]), direction + header + body)[:16]
    assert mac == _hex(ex["mac"])
    assert P.crc16(header + body + mac) == int(ex["crc"], 16)
    assert P.cobs_encode(header + body + mac + bytes.fromhex(ex["crc"])) + b"\x00" == _hex(ex["wire"])


def test_handshake_and_frames_are_what_protocol_py_produces():
    ctl, rt, hellos = examples.paired_codecs()
    assert [w for _, _, w in hellos] == [_hex(b["wire"]) for b in BLOCKS[:3]]
    for ex in BLOCKS[3:]:
        codec = ctl if ex["dir"] == "C" else rt
        mtype = TYPES[ex["type"]]
        payload = P.pack_fields(mtype, examples.fields_for_pack(json.loads(ex["fields"])))
        assert codec.encode(mtype, payload, seq=int(ex["seq"])) == _hex(ex["wire"])


def test_worked_examples_decode_to_their_fields():
    ctl, rt, _ = examples.paired_codecs()
    for ex in BLOCKS[3:]:
        receiver = rt if ex["dir"] == "C" else ctl
        msgs = receiver.feed(_hex(ex["wire"]))
        assert len(msgs) == 1, receiver.stats
        m = msgs[0]
        assert m.name == ex["type"] and m.seq == int(ex["seq"])
        for k, v in examples.fields_for_pack(json.loads(ex["fields"])).items():
            assert getattr(m, k) == v
    # the handshake HELLOs decode too (a fresh receiver: they only start a handshake there)
    for ex in BLOCKS[:3]:
        rx = P.Codec(KEY, P.DIR_RUNTIME if ex["dir"] == "C" else P.DIR_CONTROLLER)
        m = [m for m in rx.feed(_hex(ex["wire"])) if m.type == P.HELLO][0]
        f = json.loads(ex["fields"])
        assert m.flags == f["flags"] and m.rand.hex() == f["rand"] and m.echo.hex() == f["echo"]


def test_stated_test_vectors():
    text = DOC.read_text(encoding="utf-8")
    assert "crc16(b\"123456789\") = 29b1" in text and P.crc16(b"123456789") == 0x29B1
    m = re.search(r"HMAC-SHA256\(key=000102\.\.\.1f, \"\"\)` = `([0-9a-f]{64})`", text)
    assert m and P.hmac_sha256(KEY, b"").hex() == m.group(1)


def test_documented_limits_match_the_code():
    text = DOC.read_text(encoding="utf-8")
    assert P.MAX_PAYLOAD == 200 and "payload <= 200 bytes" in text
    assert P.MAX_FRAME == 226 and "<= 226 bytes" in text
    assert P.MAX_ENCODED == 227 and "<= 227 bytes" in text
    assert P.MAX_TEMPLATE == 175 and "`tlen` <= 175" in text and "MAX_TEMPLATE` = 175" in text
    assert P.PROTOCOL_VERSION == 2 and "# edge controller link: wire protocol v2" in text


def test_every_prompt_text_fits_the_wire_and_every_reason_is_documented():
    from edge.types import Prompt, Reason

    for p in Prompt:
        assert len(p.text.encode("utf-8")) <= P.MAX_TEXT, p
        assert P.unpack_payload(P.PROMPT, P.pack_prompt(1, int(p), p.text))["text"] == p.text
    text = DOC.read_text(encoding="utf-8")
    for r in Reason:
        assert f"{int(r)} {r.name}" in text.replace("\n", " "), r
    for code in range(11, 18):
        assert f"{code} {Prompt(code).name}" in text.replace("\n", " ")
