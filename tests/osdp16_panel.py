"""A control panel built on ``osdp==1.6`` (pure Python, pycryptodome), an implementation of
the panel side independent of libosdp. Runs in its own venv (tests/test_osdp_interop.py
makes it): both packages install a top-level ``osdp``. It imports nothing from edge: the
MFG START payload is packed here from docs/OSDP.md's layout, and the VERDICT unpacked.

    python osdp16_panel.py --port PTY --address 7 --mode plain|sc|install --master-key HEX
    python osdp16_panel.py --derive-scbk --master-key HEX --cuid HEX

Prints one JSON object per line: online, secure, pdid, pdcap, mfg_ack, verdict, summary.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

from osdp import (ControlPanel, DeviceCapabilities, DeviceIdentification, ManufacturerSpecificCommand, ReplyType,
                  SerialPortOsdpConnection, calculate_scbk)

VERDICTS = {1: "PASS", 2: "FAIL", 3: "NO_FACE", 4: "TIMEOUT", 5: "FAULT"}


def emit(event: str, **kw) -> None:
    print(json.dumps({"event": event, **kw}), flush=True)


class Panel(ControlPanel):
    """osdp 1.6 has no MFGREP callback: replies come through its generic reply handler."""

    def __init__(self, master_key):
        super().__init__(master_key)
        self.mfgrep: list[bytes] = []

    def on_reply_received(self, reply):
        super().on_reply_received(reply)
        if reply.type == ReplyType.ManufactureSpecific:
            self.mfgrep.append(bytes(reply.extract_reply_data))


def wait(pred, timeout_s):
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port")
    p.add_argument("--address", type=int, default=0)
    p.add_argument("--mode", choices=("plain", "sc", "install", "scbkd"), default="sc",
                   help="scbkd: stay on the install key SCBK-D (no KEYSET) and try a session over it")
    p.add_argument("--master-key", default="")
    p.add_argument("--cuid", default="")
    p.add_argument("--derive-scbk", action="store_true")
    p.add_argument("--vendor-code", type=lambda s: int(s, 0), default=0xFACE00)
    p.add_argument("--session", type=int, default=77)
    p.add_argument("--deadline-ms", type=int, default=5000)
    args = p.parse_args()
    mk = bytes.fromhex(args.master_key) if args.master_key else None
    if args.derive_scbk:
        print(calculate_scbk(mk, bytes.fromhex(args.cuid)).hex())
        return 0
    if args.mode == "scbkd":
        from osdp import _device

        plain_next = _device.Device.get_next_command_data

        def no_keyset(self):
            if self._use_secure_channel and self._secure_channel.is_established and self._secure_channel.is_scbkd:
                return _device.PollCommand(self.address) if self._commands.empty() else self._commands.get(False)
            return plain_next(self)

        _device.Device.get_next_command_data = no_keyset
    cp = Panel(mk)
    conn = SerialPortOsdpConnection(args.port, 115200)
    cid = cp.start_connection(conn)
    cp.add_device(cid, args.address, True, args.mode != "plain")
    device = cp._buses[cid]._configured_devices[args.address]
    ok = True
    try:
        if not wait(lambda: cp.is_online(cid, args.address), 15):
            emit("offline")
            return 1
        emit("online")
        if args.mode == "scbkd":
            if not wait(lambda: device.is_security_established and device.is_scbkd, 20):
                emit("no_secure_channel", scbkd=device.is_scbkd)
                return 1
            emit("secure", scbkd=True)
        elif args.mode != "plain":
            # install: SCBK-D first, then osdp 1.6 sends KEYSET(AES-ECB_MK(cUID || ~cUID)) and restarts SC
            if not wait(lambda: device.is_security_established and not device.is_scbkd, 20):
                emit("no_secure_channel", scbkd=device.is_scbkd)
                return 1
            emit("secure", cuid=device.cuid.hex() if device.cuid else None)
        pid = cp.id_report(cid, args.address)
        emit("pdid", vendor_code=int.from_bytes(bytes(pid.vendor_code), "little"), model=pid.model_number,
             version=pid.version, serial_number=pid.serial_number,
             firmware=[pid.firmware_major, pid.firmware_minor, pid.firmware_build])
        caps = cp.device_capabilities(cid, args.address)
        emit("pdcap", caps={c.function.name: [c.compliance, c.number_of] for c in caps.capabilities})
        nonce = os.urandom(16)
        start = struct.pack("<BBI16sHH", 1, 0x01, args.session, nonce, args.deadline_ms, 0)
        vendor = args.vendor_code.to_bytes(3, "little")
        reply = cp.send_custom_command(cid, ManufacturerSpecificCommand(args.address, vendor + start))
        emit("mfg_sent")
        deadline = time.monotonic() + args.deadline_ms / 1000.0 + 1.0
        verdict = None
        while verdict is None and time.monotonic() < deadline:
            while cp.mfgrep:
                data = cp.mfgrep.pop(0)
                if data[:3] != vendor or len(data) < 5 or data[3] != 1:
                    continue
                body = data[3:]
                if body[1] == 0x81:
                    emit("prompt", code=body[6], text=body[8:8 + body[7]].decode("ascii", "replace"))
                elif body[1] == 0x82 and len(body) == 32:
                    _, _, sid, n, code, reason, elapsed, used, seen = struct.unpack("<BBI16sBBIHH", body)
                    verdict = {"session": sid, "nonce_ok": n == nonce and sid == args.session,
                               "verdict": VERDICTS.get(code, str(code)), "reason": reason, "elapsed_ms": elapsed,
                               "frames_used": used, "frames_seen": seen}
                    emit("verdict", **verdict)
                elif body[1] == 0x83:
                    emit("reject", code=body[6])
                    if args.mode == "scbkd":
                        emit("summary", ok=True, rejected=True)
                        return 0
            time.sleep(0.05)
        ok = verdict is not None
        emit("summary", ok=ok, secure=device.is_security_established)
        return 0 if ok else 1
    finally:
        cp.shutdown()


if __name__ == "__main__":
    sys.exit(main())
