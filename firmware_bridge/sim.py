"""Controller simulator: the reference firmware's state machine on a PC.

    python -m firmware_bridge.sim --port /dev/pts/5 --key-file bridge.key --sessions 3 --json
    python -m firmware_bridge.sim ... --template "$(edge enroll alice.jpg)"     # card + face (1:1)

It runs firmware_bridge.controller (the very code main.py runs on the board)
against a serial port, presses the simulated trigger, and prints what happens
(HELLO seen, START sent, PROMPTs, RESULT verified, ACK, relay on/off with
times, FAULT) as one JSON object per line with ``--json``. It exits 0 after
``--sessions`` sessions ended (and the last relay pulse finished), 3 if
``--duration`` ran out first, 2 on a usage or port error.

``--template`` plays a card that carries the enrolled person's 1:1 template
(base64 or hex, as ``edge enroll`` prints it): every trigger sends it in START,
where the link encrypts it. The simulator keeps it in memory only.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import json
import os
import sys
import time

from firmware_bridge import protocol as P
from firmware_bridge.controller import IDLE, Controller, ControllerConfig


class SimBoard:
    """The board shim of controller.py for CPython: a serial-like port, a recorded relay, a settable trigger."""

    def __init__(self, read, write, clock=time.monotonic, random_bytes=os.urandom):
        self._read = read
        self._write = write
        self._clock = clock
        self._t0 = clock()
        self.random_bytes = random_bytes
        self.relay = False
        self.relay_log: list[tuple[float, bool]] = []  # (seconds since start, on)
        self.trigger = False
        self.led = "down"
        self.template = b""  # what the simulated card carries

    def card_template(self) -> bytes:
        return self.template

    @classmethod
    def on_serial(cls, ser, **kw):
        def read():
            n = ser.in_waiting
            return ser.read(n) if n else None

        return cls(read, ser.write, **kw)

    def now_s(self) -> float:
        return self._clock() - self._t0

    def ticks_ms(self) -> int:
        return int(self.now_s() * 1000)

    @staticmethod
    def ticks_diff(a: int, b: int) -> int:
        return a - b

    @staticmethod
    def ticks_add(a: int, delta: int) -> int:
        return a + delta

    def uart_read(self):
        return self._read()

    def uart_write(self, data: bytes) -> None:
        self._write(data)

    def set_relay(self, on: bool) -> None:
        self.relay = bool(on)
        self.relay_log.append((round(self.now_s(), 4), self.relay))

    def trigger_active(self) -> bool:
        return self.trigger

    def set_led(self, mode: str) -> None:
        self.led = mode


def parse_template(text: str) -> bytes:
    """A template as `edge enroll` prints it (base64, or hex with --hex): bytes, or ValueError saying why.

    Not edge.match.template.from_text: the controller side imports nothing of the runtime and treats a
    template as opaque bytes (up to START's limit), whatever the runtime's format.
    """
    t = "".join(text.split())
    if not t:
        raise ValueError("empty")
    try:
        raw = bytes.fromhex(t) if all(c in "0123456789abcdefABCDEF" for c in t) else base64.b64decode(t, validate=True)
    except (ValueError, binascii.Error) as err:
        raise ValueError("neither base64 nor hex (paste what `edge enroll` printed)") from err
    if len(raw) > P.MAX_TEMPLATE:
        raise ValueError(f"{len(raw)} bytes; START carries at most {P.MAX_TEMPLATE}")
    return raw


def _read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        return P.parse_key(f.read())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m firmware_bridge.sim", description=__doc__.split("\n\n")[0])
    ap.add_argument("--port", required=True, help="serial device or pty path (any pyserial URL)")
    ap.add_argument("--key-file", required=True, help="pre-shared key: 32 raw bytes or 64 hex digits")
    ap.add_argument("--baudrate", type=int, default=115200)
    ap.add_argument("--sessions", type=int, default=1, help="sessions to run, then exit (0 = until --duration)")
    ap.add_argument("--trigger-every", type=float, default=0.5, metavar="S",
                    help="seconds between the end of a session and the next trigger press")
    ap.add_argument("--duration", type=float, default=60.0, metavar="S", help="give up after this long (exit 3)")
    ap.add_argument("--pulse-ms", type=int, default=1000)
    ap.add_argument("--session-timeout-ms", type=int, default=6000, help="deadline sent in START; no RESULT by then = FAIL")
    ap.add_argument("--heartbeat-interval-ms", type=int, default=250)
    ap.add_argument("--heartbeat-timeout-ms", type=int, default=750)
    ap.add_argument("--json", action="store_true", help="one JSON object per event on stdout")
    ap.add_argument("--template", metavar="T", help="the card's 1:1 template (base64 or hex, as `edge enroll` prints)")
    args = ap.parse_args(argv)

    template = b""
    if args.template is not None:
        try:
            template = parse_template(args.template)
        except ValueError as err:
            print(f"sim: --template: {err}", file=sys.stderr)
            return 2

    try:
        key = _read_key(args.key_file)
    except (OSError, P.ProtocolError) as err:
        print(f"sim: key file {args.key_file}: {err}", file=sys.stderr)
        return 2
    import serial

    try:
        ser = serial.serial_for_url(args.port, baudrate=args.baudrate, timeout=0)
    except (serial.SerialException, OSError, ValueError) as err:
        print(f"sim: cannot open {args.port}: {err}", file=sys.stderr)
        return 2

    board = SimBoard.on_serial(ser)
    board.template = template

    def emit(name, fields):
        fields = dict(fields)
        fields.pop("t_ms", None)
        rec = {"event": name, "t": round(board.now_s(), 4)}
        rec.update(fields)
        if args.json:
            sys.stdout.write(json.dumps(rec, separators=(",", ":")) + "\n")
        else:
            rest = " ".join(f"{k}={v}" for k, v in rec.items() if k not in ("event", "t"))
            sys.stdout.write(f"{rec['t']:9.3f} {name:16s} {rest}\n")
        sys.stdout.flush()

    cfg = ControllerConfig(
        pulse_ms=args.pulse_ms,
        session_timeout_ms=args.session_timeout_ms,
        heartbeat_interval_ms=args.heartbeat_interval_ms,
        heartbeat_timeout_ms=args.heartbeat_timeout_ms,
        info=[("role", "controller"), ("board", "simulator"), ("fw", "sim-0.1.0")],
    )
    # same value as `edge bridge fingerprint`: different fingerprints explain a stream of bad_mac
    emit("key", {"fingerprint": P.hmac_sha256(key, b"edge-bridge key fingerprint").hex()[:16]})
    ctl = Controller(board, key, cfg, on_event=emit)
    next_press = 0.0
    release_at = None
    ended_seen = 0
    code = 0
    try:
        while True:
            ctl.poll()
            now = board.now_s()
            if release_at is not None and now >= release_at:
                board.trigger = False
                release_at = None
            if ctl.sessions_ended != ended_seen:
                ended_seen = ctl.sessions_ended
                next_press = now + args.trigger_every
            want_more = args.sessions == 0 or ctl.sessions_started < args.sessions
            if want_more and ctl.state == IDLE and not ctl.relay_on and release_at is None and now >= next_press:
                board.trigger = True  # held past the debounce time, like a finger on a button
                release_at = now + (cfg.debounce_ms + 20) / 1000.0
                next_press = now + 3600.0  # until this session ends
                emit("trigger", {})
            if args.sessions and ctl.sessions_ended >= args.sessions and not ctl.relay_on:
                break
            if now > args.duration:
                emit("gave_up", {"after_s": args.duration})
                code = 3
                break
            time.sleep(0.002)
    except KeyboardInterrupt:
        code = 130
    finally:
        if board.relay:
            board.set_relay(False)
        emit("summary", {
            "sessions": ctl.sessions_ended,
            "results": ctl.results,
            "relay": [[t, on] for t, on in board.relay_log],
            "stats": ctl.codec.stats,
        })
        ser.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
