"""The worked examples in PROTOCOL.md, parsed out of the document and checked byte by byte."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from pathlib import Path

import pytest

from firmware_bridge import protocol as P

DOC = Path(__file__).resolve().parents[1] / "PROTOCOL.md"
TYPES = {name: code for code, name in P.TYPE_NAMES.items()}


def _blocks():
    text = DOC.read_text(encoding="utf-8")
    key = re.search(r"test\*\* key `([0-9a-f]{64})`", text)
    assert key, "PROTOCOL.md must state the test key"
    out = []
    for m in re.finditer(r"```example\n(.*?)```", text, re.S):
        fields = {}
        for line in m.group(1).strip().splitlines():
            k, v = line.split(":", 1)
            fields[k.strip()] = v.strip()
        out.append(fields)
    return bytes.fromhex(key.group(1)), out


KEY, BLOCKS = _blocks()


def _hex(s: str) -> bytes:
    return bytes.fromhex(s.replace(" ", ""))


def _py(fields: dict) -> dict:
    f = dict(fields)
    if "nonce" in f:
        f["nonce"] = bytes.fromhex(f["nonce"])
    if "info" in f:
        f["info"] = [tuple(p) for p in f["info"]]
    return f


def test_document_has_an_example_of_every_message_type():
    assert {b["type"] for b in BLOCKS} == set(TYPES)


@pytest.mark.parametrize("ex", BLOCKS, ids=[f"{b['type']}-{b['dir']}{b['seq']}" for b in BLOCKS])
def test_worked_example_encodes_exactly(ex):
    direction = ex["dir"].encode()
    mtype = TYPES[ex["type"]]
    fields = _py(json.loads(ex["fields"]))
    payload = P.pack_fields(mtype, fields)
    assert payload == _hex(ex["payload"])
    header = _hex(ex["header"])
    assert header == bytes([P.PROTOCOL_VERSION, mtype]) + int(ex["seq"]).to_bytes(4, "big") + len(payload).to_bytes(2, "big")
    # MAC and CRC recomputed here from their definitions, independently of Codec
    mac = hmac.new(KEY, direction + header + payload, hashlib.sha256).digest()[:16]
    assert mac == _hex(ex["mac"])
    assert P.crc16(header + payload + mac) == int(ex["crc"], 16)
    codec = P.Codec(KEY, direction)
    assert codec.encode(mtype, payload, seq=int(ex["seq"])) == _hex(ex["wire"])


@pytest.mark.parametrize("ex", BLOCKS, ids=[f"{b['type']}-{b['dir']}{b['seq']}" for b in BLOCKS])
def test_worked_example_decodes_to_its_fields(ex):
    receiver = P.DIR_RUNTIME if ex["dir"] == "C" else P.DIR_CONTROLLER
    codec = P.Codec(KEY, receiver)
    msgs = codec.feed(_hex(ex["wire"]))
    assert len(msgs) == 1, codec.stats
    m = msgs[0]
    assert m.name == ex["type"] and m.seq == int(ex["seq"])
    for k, v in _py(json.loads(ex["fields"])).items():
        assert getattr(m, k) == v


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
