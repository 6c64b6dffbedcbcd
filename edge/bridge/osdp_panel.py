"""A small OSDP control panel (CP) for integrators: test an edge reader on a bus with libosdp.

    python -m edge.bridge.osdp_panel --port /dev/ttyUSB0 --address 0 --scbk-file /etc/edge/osdp-scbk.key
    python -m edge.bridge.osdp_panel --port /dev/ttyUSB0 --install --keyset-file new.key   # provisioning
    python -m edge.bridge.osdp_panel keygen /etc/edge/osdp-scbk.key

It brings the reader online with the Secure Channel, reads its PDID/PDCAP, then runs
``--sessions`` liveness sessions: MFG START (fresh random nonce) -> the reader's PROMPTs
(shown on the reader's LED / a display reader via TEXT, LED and buzzer commands) -> the
VERDICT, which counts as PASS only if it names this session and nonce, arrives before the
deadline and over the Secure Channel. ``--json`` prints one event per line (the tests
read them). It is a test tool, not a panel: a real panel does the same with its own stack.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import sys
import threading
import time
from typing import Any

from edge.bridge import osdp as W

PROMPT_LED = {"PASS": "green", "OTHER": "red", "GUIDE": "amber"}


def _led_colour(o, name: str) -> int:
    return {"green": o.LED_COLOR_GREEN, "red": o.LED_COLOR_RED, "amber": o.LED_COLOR_AMBER}[name]


class Panel:
    """libosdp's ControlPanel for one reader, refreshed on its own thread every 5 ms."""

    def __init__(self, port: str, baudrate: int, address: int, *, scbk: bytes | None, secure: bool,
                 install: bool = False, log_level: str = "error"):
        import osdp_sys

        self.o = osdp_sys
        self.ser = W.open_port(port, baudrate)
        self.channel = W.SerialChannel(self.ser)
        flags = 0
        if secure:
            flags |= osdp_sys.FLAG_ENFORCE_SECURE
        if install:
            flags |= osdp_sys.FLAG_INSTALL_MODE
        osdp_sys.set_loglevel({"debug": osdp_sys.LOG_DEBUG, "info": osdp_sys.LOG_INFO,
                               "warning": osdp_sys.LOG_WARNING}.get(log_level, osdp_sys.LOG_ERROR))
        info = {"name": "edge-reader", "address": address, "flags": flags, "scbk": scbk, "channel": self.channel,
                "version": 0, "model": 0, "vendor_code": 0, "serial_number": 0, "firmware_version": 0}
        self.ctx = osdp_sys.ControlPanel([info])
        self.events: list[tuple[float, dict]] = []
        self._cond = threading.Condition()
        self.ctx.set_event_callback(self._on_event)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, name="osdp-cp", daemon=True)
        self._t.start()

    def _on_event(self, pd: int, event: dict) -> int:
        with self._cond:
            self.events.append((time.monotonic(), event))
            self._cond.notify_all()
        return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            with self._lock:
                self.ctx.refresh()
            time.sleep(0.005)

    def next_event(self, timeout_s: float) -> tuple[float, dict] | None:
        end = time.monotonic() + timeout_s
        with self._cond:
            while not self.events:
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.events.pop(0)

    def online(self) -> bool:
        with self._lock:
            return bool(self.ctx.status() & 1)

    def sc_active(self) -> bool:
        with self._lock:
            return bool(self.ctx.sc_status() & 1)

    def submit(self, cmd: dict) -> bool:
        with self._lock:
            return bool(self.ctx.submit_command(0, cmd))

    def pd_id(self) -> dict:
        with self._lock:
            return dict(self.ctx.get_pd_id(0) or {})

    def capability(self, code: int) -> tuple[int, int]:
        with self._lock:
            return tuple(self.ctx.check_capability(0, code))

    def close(self) -> None:
        self._stop.set()
        self._t.join(2)
        self.ser.close()


class Printer:
    def __init__(self, as_json: bool):
        self.as_json = as_json
        self.t0 = time.monotonic()

    def __call__(self, event: str, **fields: Any) -> None:
        fields = {"event": event, "t": round(time.monotonic() - self.t0, 4), **fields}
        if self.as_json:
            print(json.dumps(fields), flush=True)
        else:
            rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("event", "t"))
            print(f"{fields['t']:8.3f}  {event:<12} {rest}", flush=True)


def wait_for(pred, timeout_s: float) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


def show(panel: Panel, caps: dict, colour: str, text: str, beeps: int = 0) -> None:
    """What a panel does with a prompt: the reader's LED, display (TEXT) and buzzer, each
    only if the reader reports it in PDCAP (libosdp NAKs the rest, and the CP then drops
    the reader offline)."""
    o = panel.o
    if caps.get("led"):
        panel.submit({"command": o.CMD_LED, "reader": 0, "led_number": 0, "control_code": 1,
                      "on_color": _led_colour(o, colour), "off_color": o.LED_COLOR_NONE, "on_count": 10, "off_count": 0,
                      "temporary": False})
    if caps.get("text"):
        panel.submit({"command": o.CMD_TEXT, "reader": 0, "control_code": 1, "temp_time": 0, "offset_row": 1,
                      "offset_col": 1, "data": text[:W.TEXT_MAX] or " "})
    if beeps and caps.get("buzzer"):
        panel.submit({"command": o.CMD_BUZZER, "reader": 0, "control_code": 2, "on_count": 2, "off_count": 2,
                      "rep_count": beeps})


def run_session(panel: Panel, args, emit: Printer, sid: int, template: bytes) -> dict:
    o = panel.o
    nonce = secrets.token_bytes(W.NONCE_LEN)
    t_start = time.monotonic()
    ok = panel.submit({"command": o.CMD_MFG, "vendor_code": args.vendor_code,
                       "data": W.pack_start(sid, nonce, args.deadline_ms, len(template))})
    for part in W.pack_template_parts(sid, template) if template else ():
        ok = panel.submit({"command": o.CMD_MFG, "vendor_code": args.vendor_code, "data": part}) and ok
    # The nonce is printed so an integrator can recompute the challenge the reader asks
    # (firmware_bridge.challenge: HMAC(SCBK, nonce || "challenge")).
    emit("start", session=sid, nonce=nonce.hex(), deadline_ms=args.deadline_ms, template_len=len(template), submitted=ok)
    deadline = t_start + args.deadline_ms / 1000.0
    abort_at = t_start + args.abort_after_ms / 1000.0 if args.abort_after_ms else None
    first_prompt = None
    end: dict = {}
    while not end:
        now = time.monotonic()
        if abort_at is not None and now >= abort_at:
            abort_at = None
            panel.submit({"command": o.CMD_MFG, "vendor_code": args.vendor_code, "data": W.pack_abort(sid)})
            emit("abort", session=sid)
        if now >= deadline + args.grace_ms / 1000.0:
            end = {"result": "FAULT", "why": "no verdict by the deadline"}
            break
        got = panel.next_event(0.05)
        if got is None:
            continue
        t_ev, ev = got
        kind = ev.get("event")
        if kind == o.EVENT_MFGREP:
            if ev.get("vendor_code") != args.vendor_code:
                emit("mfgrep_other_vendor", vendor_code=ev.get("vendor_code"))
                continue
            try:
                msg = W.parse_reply(ev.get("data", b""))
            except W.PayloadError as err:
                emit("bad_reply", error=str(err))
                continue
            if isinstance(msg, W.PromptReply):
                if first_prompt is None:
                    first_prompt = t_ev - t_start
                name = W.Prompt(msg.prompt).name if msg.prompt in W.Prompt._value2member_map_ else str(msg.prompt)
                emit("prompt", session=msg.session_id, code=msg.prompt, name=name, text=msg.text,
                     latency_ms=round((t_ev - t_start) * 1000, 2))
                if msg.session_id == sid and args.echo_prompts:
                    show(panel, args.caps, PROMPT_LED["GUIDE"], msg.text)
            elif isinstance(msg, W.RejectReply):
                emit("reject", session=msg.session_id, code=msg.code, name=W.REJECT_NAMES.get(msg.code, "?"))
                if msg.session_id == sid:
                    end = {"result": "FAULT", "why": "rejected"}
            else:
                late = t_ev > deadline
                nonce_ok = msg.nonce == nonce and msg.session_id == sid
                secure = panel.sc_active() or args.plaintext
                from edge.types import Reason

                emit("verdict", session=msg.session_id, verdict=msg.verdict.value, reason=msg.reason,
                     reason_name=Reason(msg.reason).name if msg.reason in Reason._value2member_map_ else str(msg.reason),
                     elapsed_ms=msg.elapsed_ms, frames_used=msg.frames_used, frames_seen=msg.frames_seen,
                     nonce_ok=nonce_ok, late=late, secure=secure, latency_ms=round((t_ev - t_start) * 1000, 2),
                     t_received=t_ev)
                if msg.session_id != sid:
                    continue  # a stale session's verdict: ignored
                result = msg.verdict.value if (nonce_ok and not late and secure) else "FAULT"
                end = {"result": result, "why": "" if result == msg.verdict.value else "unverified verdict"}
                if args.echo_prompts:
                    show(panel, args.caps, PROMPT_LED["PASS" if result == "PASS" else "OTHER"],
                         "Welcome" if result == "PASS" else "Access denied", beeps=1 if result == "PASS" else 3)
        else:
            report(panel, emit, ev)
    emit("session_end", session=sid, first_prompt_ms=round(first_prompt * 1000, 2) if first_prompt else None, **end)
    return end


def report(panel: Panel, emit: Printer, ev: dict) -> None:
    """Card reads, keypad codes, status reports and anything else the reader sends."""
    o = panel.o
    kind = ev.get("event")
    if kind == o.EVENT_CARDREAD:
        data = ev.get("data", b"")
        bits = int.from_bytes(data[:4].ljust(4, b"\0"), "big") >> 6 if ev.get("length") == 26 else None
        emit("card", bits=ev.get("length"), data=data.hex(),
             facility=(bits >> 17) & 0xFF if bits is not None else None,
             number=(bits >> 1) & 0xFFFF if bits is not None else None)
    elif kind == o.EVENT_KEYPRESS:
        emit("keypad", keys=ev.get("data", b"").decode("ascii", "replace"))
    elif kind == o.EVENT_STATUS:
        rep = ev.get("report", b"")
        emit("status", type=ev.get("type"), tamper=bool(rep[:1] and rep[0]), power=bool(rep[1:2] and rep[1]))
    elif kind == o.EVENT_MFGREP:
        try:
            msg = W.parse_reply(ev.get("data", b""))
            emit("stray_reply", kind=type(msg).__name__, session=msg.session_id,
                 verdict=getattr(getattr(msg, "verdict", None), "value", None))
        except W.PayloadError as err:
            emit("bad_reply", error=str(err))
    else:
        emit("other_event", detail={k: (v.hex() if isinstance(v, bytes) else v) for k, v in ev.items()})


def drain(panel: Panel, emit: Printer, seconds: float) -> None:
    """Report what the reader sends between sessions (status reports, stale events)."""
    end = time.monotonic() + seconds
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return
        got = panel.next_event(left)
        if got is None:
            return
        report(panel, emit, got[1])


def read_key(path: str) -> bytes:
    from edge.bridge.keys import read_key_file

    return read_key_file(path, length=16, setting="--scbk-file")


def cmd_run(args) -> int:
    emit = Printer(args.json)
    if args.plaintext:
        scbk = None
    elif args.install:
        # libosdp's CP in install mode: SC with SCBK-D, then KEYSET of this new key, then SC with it
        if not args.keyset_file:
            print("osdp_panel: --install needs --keyset-file PATH (where the panel keeps the new key)", file=sys.stderr)
            return 2
        scbk = secrets.token_bytes(16)
        W.write_key_file(args.keyset_file, scbk)
    else:
        if not args.scbk_file:
            print("osdp_panel: --scbk-file KEY is required (or --install, or --plaintext)", file=sys.stderr)
            return 2
        scbk = read_key(args.scbk_file)
    template = open(args.template_file, "rb").read(W.MAX_TEMPLATE + 1) if args.template_file else b""
    if len(template) > W.MAX_TEMPLATE:
        print(f"osdp_panel: {args.template_file} is over {W.MAX_TEMPLATE} bytes", file=sys.stderr)
        return 2
    try:
        panel = Panel(args.port, args.baudrate, args.address, scbk=scbk, secure=not args.plaintext and not args.install,
                      install=args.install, log_level=args.osdp_log)
    except Exception as err:
        print(f"osdp_panel: {err}", file=sys.stderr)
        return 2
    results: list[str] = []
    try:
        if not wait_for(panel.online, args.online_timeout_s):
            emit("offline", why="the reader did not come online")
            emit("summary", results=results, ok=False)
            return 1
        emit("online", sc=panel.sc_active())
        if not args.plaintext:
            if not wait_for(panel.sc_active, args.online_timeout_s):
                emit("no_secure_channel")
                emit("summary", results=results, ok=False)
                return 1
            emit("secure_channel")
        pid = panel.pd_id()
        emit("pdid", **pid)
        o = panel.o
        caps = {name: panel.capability(getattr(o, "CAP_" + name)) for name in
                ("COMMUNICATION_SECURITY", "READER_LED_CONTROL", "READER_TEXT_OUTPUT", "READER_AUDIBLE_OUTPUT",
                 "CARD_DATA_FORMAT", "BIOMETRICS")}
        emit("pdcap", **{k.lower(): list(v) for k, v in caps.items()})
        args.caps = {"led": caps["READER_LED_CONTROL"][0] > 0, "text": caps["READER_TEXT_OUTPUT"][0] > 0,
                     "buzzer": caps["READER_AUDIBLE_OUTPUT"][0] > 0}
        if args.install:
            emit("keyset", stored=args.keyset_file)
        for i in range(args.sessions):
            if i:
                drain(panel, emit, args.pause_s)
            end = run_session(panel, args, emit, args.first_session + i, template)
            results.append(end["result"])
        drain(panel, emit, args.linger_s)
    finally:
        panel.close()
    emit("summary", results=results, ok=True)
    return 0


def cmd_keygen(args) -> int:
    try:
        if os.path.exists(args.path):
            print(f"osdp_panel keygen: {args.path} exists; not overwriting a key", file=sys.stderr)
            return 2
        W.write_key_file(args.path, secrets.token_bytes(16))
    except OSError as err:
        print(f"osdp_panel keygen: cannot write {args.path}: {err.strerror}", file=sys.stderr)
        return 2
    print(f"wrote {args.path} (mode 0600): the reader's osdp.scbk_file and the panel's key for this reader")
    return 0


def _int(text: str) -> int:
    return int(text, 0)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["keygen"]:
        p = argparse.ArgumentParser(prog="python -m edge.bridge.osdp_panel keygen")
        p.add_argument("path")
        return cmd_keygen(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(prog="python -m edge.bridge.osdp_panel", description=__doc__.split("\n\n")[0])
    p.add_argument("--port", required=True, help="the panel's end of the bus (RS-485 adapter, pty, pyserial URL)")
    p.add_argument("--baudrate", type=int, default=9600)
    p.add_argument("--address", type=int, default=0, help="the reader's address (osdp.address)")
    key = p.add_mutually_exclusive_group()
    key.add_argument("--scbk-file", help="the reader's Secure Channel base key (32 hex digits)")
    key.add_argument("--install", action="store_true",
                     help="install mode: Secure Channel with the default key SCBK-D, then KEYSET a new random key")
    key.add_argument("--plaintext", action="store_true", help="no Secure Channel (readers with osdp.enforce_secure = false)")
    p.add_argument("--keyset-file", help="with --install: where to store the new key (the panel's copy)")
    p.add_argument("--vendor-code", type=_int, default=W.DEFAULT_VENDOR_CODE, help="osdp.vendor_code (default 0xFACE00)")
    p.add_argument("--sessions", type=int, default=1)
    p.add_argument("--first-session", type=int, default=1, help="session id of the first session")
    p.add_argument("--deadline-ms", type=int, default=5000, help="the panel's deadline per session")
    p.add_argument("--grace-ms", type=int, default=500, help="how long past the deadline a verdict is still logged")
    p.add_argument("--abort-after-ms", type=int, default=0, help="send ABORT this long after START (0: never)")
    p.add_argument("--template-file", help="a 1:1 template to send with START (at most 192 bytes)")
    p.add_argument("--pause-s", type=float, default=0.2, help="pause between sessions")
    p.add_argument("--linger-s", type=float, default=0.3, help="keep polling this long after the last session")
    p.add_argument("--online-timeout-s", type=float, default=10.0)
    p.add_argument("--no-echo-prompts", dest="echo_prompts", action="store_false",
                   help="do not show prompts and verdicts on the reader's LED/TEXT/buzzer")
    p.add_argument("--json", action="store_true", help="one JSON event per line")
    p.add_argument("--osdp-log", default="error", choices=("error", "warning", "info", "debug"), help="libosdp's log level")
    args = p.parse_args(argv)
    return cmd_run(args)


if __name__ == "__main__":
    sys.exit(main())
