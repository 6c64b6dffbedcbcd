"""The OSDP reader (edge.bridge.osdp) in-process against libosdp's real control panel over a
pty pair: the MFG payloads, fail-secure delivery (panel gone, garbage, replay, install key),
install mode with KEYSET, 1:1 templates, and a fuzz of the payload parsers."""

from __future__ import annotations

import os
import random
import re
import secrets
import select
import sys
import threading
import time
from pathlib import Path

import pytest

from edge.bridge import osdp as W
from edge.types import Prompt, Reason, Verdict, VerdictKind

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from firmware_bridge.tests.fakes import PtyLink  # noqa: E402

PASS = Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 4, 120, 0)
FAIL = Verdict(VerdictKind.FAIL, Reason.SPOOF_DETECTED, 3, 3, 90, 0)


# ------------------------------------------------------------------------------------ payloads


def test_payload_round_trips():
    nonce = bytes(range(1, 17))
    assert W.parse_command(W.pack_start(7, nonce, 4000, 0)) == W.Start(7, nonce, 4000, 0)
    assert W.parse_command(W.pack_abort(7)) == W.Abort(7)
    tpl = bytes(range(160))
    parts = W.pack_template_parts(7, tpl)
    assert len(parts) == 3 and all(len(p) <= W.MFG_MAX for p in parts)
    assert b"".join(W.parse_command(p).data for p in parts) == tpl
    v = W.parse_reply(W.pack_verdict(7, nonce, VerdictKind.FAIL, Reason.SPOOF_DETECTED, 90, 3, 4))
    assert v == W.VerdictReply(7, nonce, VerdictKind.FAIL, int(Reason.SPOOF_DETECTED), 90, 3, 4)
    assert W.parse_reply(W.pack_prompt(7, Prompt.MOVE_CLOSER, "Move closer")) == W.PromptReply(7, 2, "Move closer")
    assert W.parse_reply(W.pack_reject(7, W.REJECT_NOT_SECURE)) == W.RejectReply(7, W.REJECT_NOT_SECURE)


def _doc_examples() -> dict[str, bytes]:
    text = (REPO / "docs" / "OSDP.md").read_text()
    return {m.group(1): bytes.fromhex(m.group(2).replace(" ", ""))
            for m in re.finditer(r"^(\w+) example: `([0-9a-f ]+)`", text, re.M)}


def test_docs_hex_examples_match_the_code():
    ex = _doc_examples()
    nonce = bytes.fromhex("00112233445566778899aabbccddeeff")
    assert ex["START"] == W.pack_start(0x01020304, nonce, 5000, 0)
    assert ex["START_TEMPLATE"] == W.pack_start(9, nonce, 5000, 160)
    assert ex["TEMPLATE"] == W.pack_template_parts(9, bytes(range(160)))[0]
    assert ex["ABORT"] == W.pack_abort(0x01020304)
    assert ex["PROMPT"] == W.pack_prompt(0x01020304, Prompt.LOOK_AT_CAMERA, Prompt.LOOK_AT_CAMERA.text)
    assert ex["VERDICT"] == W.pack_verdict(0x01020304, nonce, VerdictKind.PASS, Reason.LIVE_CONFIRMED, 180, 3, 5)
    assert ex["REJECT"] == W.pack_reject(0x01020304, W.REJECT_NOT_SECURE)


@pytest.mark.parametrize("bad, why", [
    (b"", "shorter"), (b"\x02\x01" + bytes(25), "version"), (b"\x01\x7f\0\0\0\0", "unknown"),
    (W.pack_start(1, b"\x01" * 16)[:-1], "START must be"), (W.pack_start(1, bytes(16) [:0] + b"\0" * 16), "zeros"),
    (W.pack_start(1, b"\x01" * 16)[:-2] + (W.MAX_TEMPLATE + 1).to_bytes(2, "little"), "template"),
    (bytes(W.MFG_MAX + 1), "limit"), ("text", "bytes"),
    (W.pack_template_parts(1, b"x")[0][:-1], "no data"),
])
def test_parse_command_refuses_with_a_reason(bad, why):
    with pytest.raises(W.PayloadError, match=why):
        W.parse_command(bad)


def test_parse_reply_refuses_inconsistent_pass():
    bad = bytearray(W.pack_verdict(1, b"\x01" * 16, VerdictKind.PASS, Reason.LIVE_CONFIRMED, 1, 1, 1))
    bad[23] = int(Reason.SPOOF_DETECTED)
    with pytest.raises(W.PayloadError, match="inconsistent"):
        W.parse_reply(bytes(bad))


def test_fuzz_payload_parsers_1e5():
    """10^5 random and mutated payloads: every one parses or raises PayloadError, nothing else."""
    rng = random.Random(1234)
    nonce = bytes(range(1, 17))
    seeds = [W.pack_start(5, nonce, 3000, 0), W.pack_start(5, nonce, 0, 160), *W.pack_template_parts(5, bytes(160)),
             W.pack_abort(5), W.pack_prompt(5, 1, "Look at the camera"),
             W.pack_verdict(5, nonce, VerdictKind.PASS, Reason.LIVE_CONFIRMED, 1, 2, 3), W.pack_reject(5, 1)]
    parsed = refused = 0
    for i in range(100_000):
        if i % 2:
            data = bytearray(rng.choice(seeds))
            for _ in range(rng.randint(1, 4)):
                op = rng.randrange(4)
                if op == 0 and data:
                    data[rng.randrange(len(data))] = rng.randrange(256)
                elif op == 1:
                    data.insert(rng.randint(0, len(data)), rng.randrange(256))
                elif op == 2 and data:
                    del data[rng.randrange(len(data)):][: rng.randint(1, 8)]
                else:
                    data = data[: rng.randint(0, len(data))]
        else:
            data = bytearray(rng.randbytes(rng.randint(0, 140)))
            if rng.random() < 0.5 and len(data) >= 2:
                data[0] = W.PAYLOAD_VERSION
                data[1] = rng.choice((1, 2, 3, 0x81, 0x82, 0x83))
        for parse in (W.parse_command, W.parse_reply):
            try:
                parse(bytes(data))
                parsed += 1
            except W.PayloadError:
                refused += 1
    assert parsed > 1000 and refused > 1000


def test_wiegand26_h10301():
    data = W.wiegand26(12, 3456)
    bits = int.from_bytes(data, "big") >> 6
    assert (bits >> 17) & 0xFF == 12 and (bits >> 1) & 0xFFFF == 3456
    first13, last13 = bits >> 13, bits & 0x1FFF
    assert bin(first13).count("1") % 2 == 0 and bin(last13).count("1") % 2 == 1


def test_firmware_version_and_board_serial(tmp_path):
    assert W.firmware_version_code("1.2.3") == 0x010203 and W.firmware_version_code("0.1.0+dirty") == 0x000100
    sn = tmp_path / "serial-number"
    sn.write_bytes(b"10000000abcdef12\x00")
    assert W.board_serial_number((str(sn),)) == 0xABCDEF12
    mid = tmp_path / "machine-id"
    mid.write_text("0123456789abcdef0123456789abcdef\n")
    assert W.board_serial_number((str(tmp_path / "absent"), str(mid))) == W.board_serial_number((str(mid),)) > 0


# ------------------------------------------------------------------------------------ a real bus

osdp_sys = pytest.importorskip("osdp_sys", reason="libosdp is not installed (pip install 'libosdp==3.2.9')")
from edge.bridge.osdp_panel import Panel, wait_for  # noqa: E402


class TapLink(PtyLink):
    """PtyLink that records what the panel sends and can inject bytes towards the reader."""

    def __init__(self):
        super().__init__()
        self.from_panel = bytearray()
        self._inject: list[bytes] = []
        self._ilock = threading.Lock()

    def inject_to_reader(self, data: bytes) -> None:
        with self._ilock:
            self._inject.append(data)

    def _pump(self):
        a, b = self._masters  # a: the panel's side, b: the reader's side
        peer = {a: b, b: a}
        while not self._stop.is_set():
            with self._ilock:
                pending, self._inject = self._inject, []
            for data in pending:
                os.write(b, data)
            r, _, _ = select.select([a, b], [], [], 0.01)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:
                    time.sleep(0.01)
                    continue
                if data and self.forwarding:
                    if fd == a:
                        self.from_panel += data
                    os.write(peer[fd], data)


def frames(stream: bytes) -> list[bytes]:
    """Split a recorded OSDP byte stream into packets (SOM 0x53, 16-bit length)."""
    out, i = [], 0
    while i < len(stream) - 4:
        if stream[i] != 0x53:
            i += 1
            continue
        n = stream[i + 2] | (stream[i + 3] << 8)
        if n < 6 or i + n > len(stream):
            i += 1
            continue
        out.append(bytes(stream[i:i + n]))
        i += n
    return out


def command_code(pkt: bytes) -> int:
    scb = pkt[5] if pkt[4] & 0x08 else 0
    return pkt[5 + scb]


class Bus:
    def __init__(self, tmp: Path, **settings):
        self.key = secrets.token_bytes(16)
        self.link = TapLink().__enter__()
        s = dict(port=self.link.paths[1], baudrate=115200, address=3, serial_number=99, panel_timeout_ms=600)
        s.update(settings)
        self.settings = W.OsdpSettings(**s)
        self.pd = W.OsdpBridge(self.settings, self.key if not self.settings.install_mode else secrets.token_bytes(16))
        self.cp: Panel | None = None

    def panel(self, key=None, *, secure=True, install=False) -> Panel:
        self.cp = Panel(self.link.paths[0], 115200, 3, scbk=None if install else (key or self.key), secure=secure,
                        install=install)
        return self.cp

    def start(self, sid: int, nonce: bytes | None = None, deadline_ms: int = 3000, template: bytes = b"") -> bytes:
        nonce = nonce or secrets.token_bytes(16)
        assert self.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE,
                               "data": W.pack_start(sid, nonce, deadline_ms, len(template))})
        for part in W.pack_template_parts(sid, template) if template else ():
            assert self.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE, "data": part})
        return nonce

    def replies(self, seconds: float) -> list:
        out, end = [], time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            got = self.cp.next_event(left)
            if got is None:
                break
            ev = got[1]
            out.append(W.parse_reply(ev["data"]) if ev.get("event") == osdp_sys.EVENT_MFGREP else ev)
        return out

    def close(self):
        if self.cp is not None:
            self.cp.close()
        self.pd.close()
        self.link.__exit__(None, None, None)


@pytest.fixture
def bus(tmp_path):
    b = Bus(tmp_path)
    b.panel()
    assert wait_for(b.cp.sc_active, 10) and wait_for(lambda: b.pd.sc_active, 5)
    yield b
    b.close()


def test_session_with_template_prompt_and_verdict(bus):
    tpl = secrets.token_bytes(160)
    nonce = bus.start(11, template=tpl)
    req = bus.pd.wait(3)
    assert req is not None and (req.session_id, req.nonce, req.origin, req.template) == (11, nonce, "osdp", tpl)
    assert "template" not in repr(req) or tpl.hex() not in repr(req)
    bus.pd.prompt(req, Prompt.MOVE_CLOSER)
    assert bus.pd.result(req, PASS) is True
    got = [r for r in bus.replies(0.5) if isinstance(r, (W.PromptReply, W.VerdictReply))]
    assert got[0] == W.PromptReply(11, int(Prompt.MOVE_CLOSER), "Move closer")
    assert got[1].verdict is VerdictKind.PASS and got[1].nonce == nonce and got[1].session_id == 11


def test_template_parts_out_of_order_are_rejected(bus):
    tpl = bytes(100)
    bus.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE,
                   "data": W.pack_start(12, secrets.token_bytes(16), 3000, len(tpl))})
    bus.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE,
                   "data": W.pack_template_parts(12, tpl)[1]})
    assert W.RejectReply(12, W.REJECT_TEMPLATE) in bus.replies(0.5)
    assert bus.pd.wait(0.2) is None


@pytest.fixture
def card_bus(tmp_path):
    b = Bus(tmp_path, card_on_pass=True, card_facility=1, card_number=2)
    b.panel()
    assert wait_for(b.cp.sc_active, 10)
    yield b
    b.close()


def test_pass_with_card_read_goes_out_with_the_verdict(card_bus):
    card_bus.start(20)
    req = card_bus.pd.wait(3)
    assert card_bus.pd.result(req, PASS) is True  # returns once the verdict and the card read are out
    got = card_bus.replies(0.3)
    kinds = ["verdict" if isinstance(r, W.VerdictReply) else r.get("event") for r in got
             if isinstance(r, W.VerdictReply) or isinstance(r, dict)]
    assert kinds[:2] == ["verdict", osdp_sys.EVENT_CARDREAD], kinds


@pytest.mark.parametrize("which", ["bus", "card_bus"])
def test_panel_gone_mid_session_no_pass_remains_pending(request, which):
    bus = request.getfixturevalue(which)
    nonce = bus.start(21, deadline_ms=10000)
    req = bus.pd.wait(3)
    bus.link.cut()  # the panel is gone: no more polls
    assert req.cancel.wait(3), "the session was not cancelled when the panel went silent"
    assert bus.pd.result(req, PASS) is False  # not queued: nothing to go out once a panel is back
    bus.link.forwarding = True
    assert wait_for(bus.cp.sc_active, 10) or wait_for(lambda: bus.pd.sc_active, 5)
    late = bus.replies(1.0)
    assert not any(isinstance(r, W.VerdictReply) for r in late), late
    assert not any(isinstance(r, dict) and r.get("event") == osdp_sys.EVENT_CARDREAD for r in late)
    assert bus.pd.counters["verdicts_dropped"] == 1 and nonce


def test_verdict_after_the_deadline_is_not_sent(bus):
    bus.start(22, deadline_ms=300)
    req = bus.pd.wait(3)
    time.sleep(0.4)
    assert bus.pd.result(req, PASS) is False
    assert not any(isinstance(r, W.VerdictReply) for r in bus.replies(0.5))


def test_garbage_on_the_bus_is_survived(bus):
    rng = random.Random(7)
    for _ in range(20):
        bus.link.inject_to_reader(rng.randbytes(rng.randint(1, 64)))
        time.sleep(0.01)
    bus.link.inject_to_reader(b"\x53\x03\x20\x00\x04" + bytes(27))  # a header with a bad checksum
    time.sleep(0.5)
    assert bus.pd.counters["started"] == 0 and bus.pd._error is None
    # libosdp's CP backs off for 300 s after the errors garbage causes; a panel that reconnects
    # finds the reader working
    bus.cp.close()
    bus.panel()
    assert wait_for(bus.cp.sc_active, 10)
    nonce = bus.start(23)
    req = bus.pd.wait(5)
    assert req is not None and req.nonce == nonce
    assert bus.pd.result(req, FAIL) is True


def test_replayed_secure_message_starts_nothing(bus):
    bus.start(31)
    req = bus.pd.wait(3)
    assert bus.pd.result(req, FAIL) is True
    time.sleep(0.3)  # more polls: the recorded START is now an old message
    starts = [f for f in frames(bytes(bus.link.from_panel)) if command_code(f) == 0x80]
    assert starts, "no MFG frame recorded"
    bus.link.inject_to_reader(starts[0])
    time.sleep(0.5)
    assert bus.pd.wait(0.3) is None and bus.pd.counters["started"] == 1


def test_start_in_clear_is_refused_when_secure_is_enforced(tmp_path):
    b = Bus(tmp_path)
    try:
        b.panel(secure=False, key=secrets.token_bytes(16))  # a wrong key: no SC, plaintext only
        assert wait_for(b.cp.online, 5) and not b.cp.sc_active()  # online in plaintext
        b.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE,
                     "data": W.pack_start(1, secrets.token_bytes(16))})
        time.sleep(0.5)
        assert b.pd.wait(0.3) is None and b.pd.counters["started"] == 0
        assert b.pd.counters["rejected"] == 0  # libosdp NAKed it before it reached the reader's handler
        assert not b.pd.sc_active
    finally:
        b.close()


def test_wrong_scbk_no_secure_channel_no_session(tmp_path):
    b = Bus(tmp_path)
    try:
        b.panel(key=secrets.token_bytes(16))  # SC enforced on both ends, different keys
        time.sleep(1.0)
        assert not b.cp.sc_active() and not b.pd.sc_active
        b.cp.submit({"command": osdp_sys.CMD_MFG, "vendor_code": W.DEFAULT_VENDOR_CODE,
                     "data": W.pack_start(1, secrets.token_bytes(16))})
        time.sleep(0.3)
        assert b.pd.wait(0.2) is None and b.pd.counters["started"] == 0
    finally:
        b.close()


def test_install_mode_keyset_then_sessions_with_the_new_key(tmp_path):
    """libosdp's CP in install mode: SC with the default key SCBK-D, KEYSET of the panel's
    new key (stored in osdp.keyset_file, 0600), then SC with that key and a session."""
    keyfile = tmp_path / "keyset.key"
    b = Bus(tmp_path, install_mode=True, keyset_file=str(keyfile))
    try:
        new = secrets.token_bytes(16)
        b.cp = Panel(b.link.paths[0], 115200, 3, scbk=new, secure=False, install=True)
        assert wait_for(keyfile.exists, 15)
        assert keyfile.read_text().strip() == new.hex() and (keyfile.stat().st_mode & 0o777) == 0o600
        assert wait_for(b.cp.sc_active, 10) and wait_for(lambda: b.pd.sc_active, 5)
        nonce = b.start(2)
        req = b.pd.wait(3)
        assert req is not None and req.nonce == nonce
        # a restart reads the panel's key back first
        assert W.load_scbk(b.settings)[0] == new
    finally:
        b.close()


def test_start_over_the_install_key_is_refused(tmp_path):
    """While the Secure Channel runs on the public SCBK-D, no session starts."""
    b = Bus(tmp_path, install_mode=True, keyset_file=str(tmp_path / "k"))
    try:
        with b.pd._lock:
            assert b.pd._ctx.is_sc_active() is False  # libosdp reports SCBK-D sessions as not secure
            assert b.pd._on_mfg(W.pack_start(1, secrets.token_bytes(16))) == (0, None)
        assert b.pd.wait(0.2) is None and b.pd.counters["rejected"] == 1
    finally:
        b.close()


def test_keyset_refused_without_a_keyset_file(bus):
    assert bus.cp.submit({"command": osdp_sys.CMD_KEYSET, "type": 1, "data": secrets.token_bytes(16)})
    time.sleep(0.5)
    assert bus.pd.counters["keysets"] == 0


def test_camera_fault_sets_tamper_and_a_good_session_clears_it(bus):
    bus.start(41)
    req = bus.pd.wait(3)
    bus.pd.result(req, Verdict(VerdictKind.FAULT, Reason.CAMERA_LOST, 0, 1, 50, 41))
    got = bus.replies(0.5)
    status = [r for r in got if isinstance(r, dict) and r.get("event") == osdp_sys.EVENT_STATUS]
    assert status and status[0]["report"][0] == 1
    bus.start(42)
    req = bus.pd.wait(3)
    bus.pd.result(req, FAIL)
    status = [r for r in bus.replies(0.5) if isinstance(r, dict) and r.get("event") == osdp_sys.EVENT_STATUS]
    assert status and status[-1]["report"][0] == 0


def test_status_query_and_power_bit_on_stop(bus):
    assert bus.cp.submit({"command": osdp_sys.CMD_STATUS, "type": osdp_sys.STATUS_REPORT_LOCAL})
    got = [r for r in bus.replies(0.5) if isinstance(r, dict) and r.get("event") == osdp_sys.EVENT_STATUS]
    assert got and got[0]["report"][:2] == b"\x00\x00"  # all clear, and true
    bus.pd._tamper = True
    with bus.pd._lock:  # while a fault is active the query is refused rather than answered all-clear
        assert bus.pd._on_command({"command": osdp_sys.CMD_STATUS, "type": osdp_sys.STATUS_REPORT_LOCAL}) == (-1, None)
    bus.pd._tamper = False
    bus.pd.close()  # a stopping service tells the panel (power bit) before it goes
    got = [r for r in bus.replies(0.5) if isinstance(r, dict) and r.get("event") == osdp_sys.EVENT_STATUS]
    assert got and got[-1]["report"][1] == 1


def test_key_rotation_by_keyset_over_the_running_secure_channel(tmp_path):
    keyfile = tmp_path / "rotated.key"
    b = Bus(tmp_path, keyset_file=str(keyfile))
    try:
        b.panel()
        assert wait_for(b.cp.sc_active, 10)
        new = secrets.token_bytes(16)
        assert b.cp.submit({"command": osdp_sys.CMD_KEYSET, "type": 1, "data": new})
        assert wait_for(keyfile.exists, 5) and keyfile.read_text().strip() == new.hex()
        time.sleep(0.3)
        assert wait_for(b.cp.sc_active, 10)  # libosdp's CP restarts SC with the new key at once
        nonce = b.start(3)
        req = b.pd.wait(3)
        assert req is not None and req.nonce == nonce and b.pd.counters["keysets"] == 1
    finally:
        b.close()


def test_a_new_start_supersedes_the_running_session(bus):
    bus.start(51)
    first = bus.pd.wait(3)
    bus.start(52)
    second = bus.pd.wait(3)
    assert first.cancel.is_set() and second.session_id == 52
    assert bus.pd.result(first, PASS) is False
    assert bus.pd.result(second, FAIL) is True


def test_scbk_loading(tmp_path, monkeypatch):
    from edge.errors import ConfigError, KeyFileError

    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    key = tmp_path / "k"
    key.write_text(bytes(range(16)).hex() + "\n")
    key.chmod(0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        W.load_scbk(W.OsdpSettings(port="x", scbk_file=str(key)))
    key.chmod(0o600)
    assert W.load_scbk(W.OsdpSettings(port="x", scbk_file=str(key)))[0] == bytes(range(16))
    key.write_text(secrets.token_hex(32))
    with pytest.raises(KeyFileError, match="32 hex digits"):
        W.load_scbk(W.OsdpSettings(port="x", scbk_file=str(key)))
    with pytest.raises(ConfigError, match="osdp.scbk_file"):
        W.load_scbk(W.OsdpSettings(port="x"))
    cred = tmp_path / "creds"
    cred.mkdir(mode=0o700)
    (cred / "osdp-scbk").write_text(bytes(range(1, 17)).hex())
    (cred / "osdp-scbk").chmod(0o400)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(cred))
    assert W.load_scbk(W.OsdpSettings(port="x"))[0] == bytes(range(1, 17))


# ------------------------------------------------------------------------------------ config and doctor


def test_config_osdp_section(tmp_path):
    from edge import config
    from edge.bridge.factory import BridgeConfig
    from edge.errors import ConfigError

    with pytest.raises(ConfigError, match="osdp.port"):
        config.from_dict({"trigger": {"kind": "osdp"}})
    with pytest.raises(ConfigError, match="osdp.keyset_file"):
        config.from_dict({"trigger": {"kind": "osdp"}, "osdp": {"port": "/dev/ttyUSB0", "install_mode": True}})
    with pytest.raises(ConfigError, match="osdp.keypad_on_other"):
        config.from_dict({"osdp": {"keypad_on_other": "12a"}})
    with pytest.raises(ConfigError, match="osdp.address"):
        config.from_dict({"osdp": {"address": 127}})
    cfg = config.from_dict({"trigger": {"kind": "osdp"}, "osdp": {"port": "/dev/ttyUSB0", "address": 3}})
    bc = BridgeConfig.from_config(cfg)
    assert bc.trigger == "osdp" and "osdp" in bc.sinks and bc.osdp.address == 3 and bc.osdp.enforce_secure
    assert "[osdp]" in config.defaults_toml()


def test_doctor_osdp_checks(tmp_path):
    import argparse

    from edge.service import doctor as d

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyUSB0").write_bytes(b"")
    (dev / "ttyUSB0").chmod(0o660)
    key = tmp_path / "scbk.key"
    key.write_text(bytes(range(16)).hex())
    key.chmod(0o600)
    env = d.DoctorEnv(dev=dev, group_of=lambda p: "dialout", is_char_device=lambda st: True, root_uid=os.getuid())

    def cfg(**osdp):
        base = {"port": "/dev/ttyUSB0", "scbk_file": str(key), "keyset_file": "", "install_mode": False,
                "enforce_secure": True, "card_on_pass": False}
        base.update(osdp)
        return argparse.Namespace(trigger=argparse.Namespace(kind="osdp"), osdp=argparse.Namespace(**base))

    res = {r.check: r for r in d.check_osdp(env, cfg())}
    assert {k: r.status for k, r in res.items()} == {"osdp port": d.OK, "osdp scbk_file": d.OK}, res
    key.chmod(0o640)
    assert {r.check: r.status for r in d.check_osdp(env, cfg())}["osdp scbk_file"] == d.FAIL
    res = {r.check: r.status for r in d.check_osdp(env, cfg(enforce_secure=False, port="/dev/ttyUSB9",
                                                                install_mode=True, keyset_file=str(tmp_path / "no/k")))}
    assert res["osdp port"] == d.FAIL and res["osdp secure channel"] == d.WARN
    assert res["osdp install mode"] == d.WARN and res["osdp keyset dir"] == d.FAIL
    other = argparse.Namespace(trigger=argparse.Namespace(kind="serial"))
    assert [r.status for r in d.check_osdp(env, other)] == [d.OK]


def test_local_led_colours_on_mock_gpio():
    from gpiozero.pins.mock import MockFactory

    factory = MockFactory()
    led = W.LocalLed(5, 6, pin_factory=factory)
    red, green = factory.pin(5), factory.pin(6)
    for colour, want in (("amber", (True, True)), ("green", (False, True)), ("red", (True, False)), ("off", (False, False))):
        led.set(colour)
        assert (bool(red.state), bool(green.state)) == want, colour
    led.set(W.LocalLed.OSDP_COLOURS[3])
    assert red.state and green.state
    led.close()
    assert not red.state and not green.state
