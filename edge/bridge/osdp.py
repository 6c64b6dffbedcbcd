"""OSDP reader mode: this device as an OSDP peripheral (PD) on the panel's RS-485 bus.

One module behind the bridge protocol (:class:`~edge.bridge.base.Trigger` and
:class:`~edge.bridge.base.VerdictSink`), like the serial and GPIO bridges. The
OSDP stack is libosdp (``pip install libosdp==3.2.9``, its C core through the
``osdp_sys`` extension); this module adds what OSDP leaves to the vendor:

- the MFG payloads (:func:`parse_command`, :func:`parse_reply` and the ``pack_*``
  functions; byte layout in docs/OSDP.md, versioned, every field bounded):
  START / TEMPLATE / ABORT from the panel, PROMPT / VERDICT / REJECT back;
- a VERDICT binds the panel's session id and 16-byte nonce and is sent only
  while the Secure Channel is up with a real key, the panel is polling and the
  session's deadline has not passed; otherwise it is dropped and any event still
  queued is flushed, so a lost, late or unauthenticated exchange never carries a
  PASS (the panel fails the session on its own timeout);
- optionally a 26-bit Wiegand card read on PASS and a keypad code otherwise,
  for panels that understand only card reads;
- a local status report (tamper bit) while the camera or a model is broken;
- PDID/PDCAP from the configuration, the board's serial and ``edge --version``.

The bundled ``osdp.KeyStore`` is not used (it makes keys with ``random``): the
SCBK comes from a root-only file or a systemd credential (:mod:`edge.bridge.keys`),
and a key set by the panel (KEYSET, install mode) is written only to
``osdp.keyset_file``. Nor is the ``osdp.PeripheralDevice`` wrapper: it keeps
every command dict (template parts included) in a queue nobody reads, and prints
from its callbacks. This module drives ``osdp_sys.PeripheralDevice`` itself.

BIOREAD/BIOMATCH (libosdp 4.0, unreleased) would arrive as further commands in
:meth:`OsdpBridge._on_command`; :meth:`OsdpBridge._start_session` is the seam that
turns any of them into a :class:`SessionRequest` carrying the template.
"""

from __future__ import annotations

import hashlib
import logging
import os
import queue
import struct
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from firmware_bridge.challenge import challenge_seed
from edge.bridge.base import SessionRequest, wait_for_request
from edge.errors import BridgeError, ConfigError
from edge.types import Prompt, Reason, Verdict, VerdictKind

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------ payloads

PAYLOAD_VERSION = 1
DEFAULT_VENDOR_CODE = 0xFACE00  # locally administered OUI (0xFA: U/L bit set); set your own in osdp.vendor_code
MFG_MAX = 64  # libosdp 3.x: OSDP_CMD_MFG_MAX_DATALEN (panel -> reader)
MFGREP_MAX = 128  # libosdp 3.x: OSDP_EVENT_MFGREP_MAX_DATALEN (reader -> panel)
NONCE_LEN = 16
MAX_TEMPLATE = 192  # bytes; a 1:1 template of ~160 bytes (e.g. 128 float16 + header) fits
TEXT_MAX = 32  # OSDP TEXT command limit; prompts carry at most this much text
LATE_MARGIN_MS = 150  # a verdict is let go of this long before the session's deadline (2-3 panel polls)

# panel -> reader
T_START = 0x01
T_TEMPLATE = 0x02
T_ABORT = 0x03
# reader -> panel
T_PROMPT = 0x81
T_VERDICT = 0x82
T_REJECT = 0x83

# REJECT codes: why a START (or TEMPLATE part) did not start a session
REJECT_MALFORMED = 1
REJECT_NOT_SECURE = 2  # no Secure Channel with a real key (plain, or the install key SCBK-D)
REJECT_TEMPLATE = 3  # template parts out of order, too long, or not complete in time
REJECT_UNKNOWN_SESSION = 4
REJECT_NAMES = {REJECT_MALFORMED: "MALFORMED", REJECT_NOT_SECURE: "NOT_SECURE", REJECT_TEMPLATE: "TEMPLATE",
                REJECT_UNKNOWN_SESSION: "UNKNOWN_SESSION"}

_HDR = struct.Struct("<BBI")  # version, type, session id
_START = struct.Struct("<BBI16sHH")  # + nonce, deadline_ms, template_len
_TEMPLATE = struct.Struct("<BBIH")  # + offset, then the part
_VERDICT = struct.Struct("<BBI16sBBIHH")  # + nonce, verdict, reason, elapsed_ms, frames used, frames seen
_PROMPT = struct.Struct("<BBIBB")  # + prompt code, text length, then the text
_REJECT = struct.Struct("<BBIB")  # + code
TEMPLATE_PART_MAX = MFG_MAX - _TEMPLATE.size


class PayloadError(BridgeError, ValueError):
    """An MFG payload was refused (wrong version, type, length or field value)."""


@dataclass(frozen=True)
class Start:
    session_id: int
    nonce: bytes
    deadline_ms: int  # 0: none (the reader's osdp.result_timeout_ms bounds delivery)
    template_len: int  # 0: liveness only; else TEMPLATE parts follow


@dataclass(frozen=True)
class TemplatePart:
    session_id: int
    offset: int
    data: bytes = field(repr=False)  # biometric data: never logged


@dataclass(frozen=True)
class Abort:
    session_id: int


@dataclass(frozen=True)
class PromptReply:
    session_id: int
    prompt: int
    text: str


@dataclass(frozen=True)
class VerdictReply:
    session_id: int
    nonce: bytes
    verdict: VerdictKind
    reason: int
    elapsed_ms: int
    frames_used: int
    frames_seen: int


@dataclass(frozen=True)
class RejectReply:
    session_id: int
    code: int


def _u(v: int, bits: int) -> int:
    return max(0, min(int(v), (1 << bits) - 1))


def pack_start(session_id: int, nonce: bytes, deadline_ms: int = 0, template_len: int = 0) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise PayloadError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    if not 0 <= template_len <= MAX_TEMPLATE:
        raise PayloadError(f"template length {template_len} is over {MAX_TEMPLATE}")
    return _START.pack(PAYLOAD_VERSION, T_START, session_id, nonce, _u(deadline_ms, 16), template_len)


def pack_template_parts(session_id: int, template: bytes) -> list[bytes]:
    """The TEMPLATE messages that carry ``template`` after a START with its length."""
    if len(template) > MAX_TEMPLATE:
        raise PayloadError(f"template is {len(template)} bytes, over {MAX_TEMPLATE}")
    return [_TEMPLATE.pack(PAYLOAD_VERSION, T_TEMPLATE, session_id, off) + template[off:off + TEMPLATE_PART_MAX]
            for off in range(0, len(template), TEMPLATE_PART_MAX)]


def pack_abort(session_id: int) -> bytes:
    return _HDR.pack(PAYLOAD_VERSION, T_ABORT, session_id)


def pack_prompt(session_id: int, prompt: int, text: str = "") -> bytes:
    raw = text.encode("ascii", "replace")[:TEXT_MAX]
    return _PROMPT.pack(PAYLOAD_VERSION, T_PROMPT, session_id, prompt, len(raw)) + raw


def pack_verdict(session_id: int, nonce: bytes, verdict: VerdictKind, reason: int, elapsed_ms: int,
                 frames_used: int, frames_seen: int) -> bytes:
    if len(nonce) != NONCE_LEN:
        raise PayloadError(f"nonce must be {NONCE_LEN} bytes, got {len(nonce)}")
    return _VERDICT.pack(PAYLOAD_VERSION, T_VERDICT, session_id, nonce, verdict.code, int(reason),
                         _u(elapsed_ms, 32), _u(frames_used, 16), _u(frames_seen, 16))


def pack_reject(session_id: int, code: int) -> bytes:
    return _REJECT.pack(PAYLOAD_VERSION, T_REJECT, session_id, code)


def _header(data: Any, limit: int) -> tuple[bytes, int]:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise PayloadError(f"payload must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) > limit:
        raise PayloadError(f"payload of {len(data)} bytes is over the {limit}-byte limit")
    if len(data) < _HDR.size:
        raise PayloadError(f"payload of {len(data)} bytes is shorter than its {_HDR.size}-byte header")
    if data[0] != PAYLOAD_VERSION:
        raise PayloadError(f"payload version {data[0]} is not {PAYLOAD_VERSION}")
    return data, data[1]


def _exact(data: bytes, s: struct.Struct, name: str) -> tuple:
    if len(data) != s.size:
        raise PayloadError(f"{name} must be {s.size} bytes, got {len(data)}")
    return s.unpack(data)


def parse_command(data: Any) -> Start | TemplatePart | Abort:
    """A panel's MFG payload -> message. Raises :class:`PayloadError` (never anything else)."""
    data, mtype = _header(data, MFG_MAX)
    if mtype == T_START:
        _, _, sid, nonce, deadline, tlen = _exact(data, _START, "START")
        if tlen > MAX_TEMPLATE:
            raise PayloadError(f"START announces a {tlen}-byte template, over {MAX_TEMPLATE}")
        if nonce == bytes(NONCE_LEN):
            raise PayloadError("START nonce is all zeros: the panel must send a fresh random nonce")
        return Start(sid, nonce, deadline, tlen)
    if mtype == T_TEMPLATE:
        if len(data) <= _TEMPLATE.size:
            raise PayloadError("TEMPLATE part carries no data")
        _, _, sid, off = _TEMPLATE.unpack_from(data)
        part = data[_TEMPLATE.size:]
        if off + len(part) > MAX_TEMPLATE:
            raise PayloadError(f"TEMPLATE part ends at byte {off + len(part)}, over {MAX_TEMPLATE}")
        return TemplatePart(sid, off, part)
    if mtype == T_ABORT:
        _, _, sid = _exact(data, _HDR, "ABORT")
        return Abort(sid)
    raise PayloadError(f"unknown panel message type 0x{mtype:02x}")


def parse_reply(data: Any) -> PromptReply | VerdictReply | RejectReply:
    """A reader's MFGREP payload -> message (the panel's side). Raises :class:`PayloadError` only."""
    data, mtype = _header(data, MFGREP_MAX)
    if mtype == T_VERDICT:
        _, _, sid, nonce, code, reason, elapsed, used, seen = _exact(data, _VERDICT, "VERDICT")
        try:
            kind = VerdictKind.from_code(code)
        except ValueError as err:
            raise PayloadError(f"VERDICT code {code} is unknown") from err
        if kind is VerdictKind.PASS and reason != int(Reason.LIVE_CONFIRMED):
            raise PayloadError(f"a PASS with reason {reason} is inconsistent")
        return VerdictReply(sid, nonce, kind, reason, elapsed, used, seen)
    if mtype == T_PROMPT:
        if len(data) < _PROMPT.size:
            raise PayloadError("PROMPT is shorter than its header")
        _, _, sid, code, n = _PROMPT.unpack_from(data)
        raw = data[_PROMPT.size:]
        if n != len(raw) or n > TEXT_MAX:
            raise PayloadError(f"PROMPT text length {n} does not match its {len(raw)} bytes (max {TEXT_MAX})")
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError as err:
            raise PayloadError("PROMPT text is not ASCII") from err
        if not text.isprintable():
            raise PayloadError("PROMPT text holds control characters")
        return PromptReply(sid, code, text)
    if mtype == T_REJECT:
        _, _, sid, code = _exact(data, _REJECT, "REJECT")
        return RejectReply(sid, code)
    raise PayloadError(f"unknown reader message type 0x{mtype:02x}")


# ------------------------------------------------------------------------------------ helpers


def wiegand26(facility: int, number: int) -> bytes:
    """H10301 26-bit Wiegand: even parity, 8-bit facility, 16-bit number, odd parity; MSB
    first, padded to 4 bytes (OSDP raw card data carries the bit count beside it)."""
    if not (0 <= facility <= 0xFF and 0 <= number <= 0xFFFF):
        raise ValueError("facility 0..255 and number 0..65535")
    body = (facility << 16) | number  # 24 bits
    first12, last12 = body >> 12, body & 0xFFF
    even = bin(first12).count("1") & 1
    odd = 1 - (bin(last12).count("1") & 1)
    bits = (even << 25) | (body << 1) | odd
    return (bits << 6).to_bytes(4, "big")


def firmware_version_code(version: str) -> int:
    """``edge --version`` "1.2.3" -> PDID's three firmware bytes (major, minor, build)."""
    parts = [int(p) if p.isdigit() else 0 for p in (version.split("+")[0].split(".") + ["0", "0", "0"])[:3]]
    return (_u(parts[0], 8) << 16) | (_u(parts[1], 8) << 8) | _u(parts[2], 8)


def board_serial_number(paths: tuple[str, ...] = ("/proc/device-tree/serial-number",
                                                  "/sys/firmware/devicetree/base/serial-number",
                                                  "/etc/machine-id")) -> int:
    """A 32-bit serial derived from the board (a Pi's SoC serial; else the machine id): the
    same reader reports the same serial after a reinstall, and nothing about a person."""
    for p in paths:
        try:
            raw = Path(p).read_bytes().strip(b"\x00\n ")
        except OSError:
            continue
        if raw:
            if p.endswith("serial-number"):
                try:
                    return int(raw.decode("ascii"), 16) & 0xFFFFFFFF or 1
                except ValueError:
                    pass
            return int.from_bytes(hashlib.sha256(b"edge osdp serial " + raw).digest()[:4], "little") or 1
    return 1


# ------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class OsdpSettings:
    """The ``[osdp]`` section (edge.config), validated."""

    port: str = ""
    baudrate: int = 9600
    address: int = 0
    scbk_file: str = ""
    scbk_credential: str = "osdp-scbk"
    keyset_file: str = ""
    install_mode: bool = False
    enforce_secure: bool = True
    vendor_code: int = DEFAULT_VENDOR_CODE
    model: int = 1
    hardware_version: int = 1
    serial_number: int = 0
    panel_timeout_ms: int = 2000
    result_timeout_ms: int = 3000
    card_on_pass: bool = False
    card_facility: int = 0
    card_number: int = 0
    keypad_on_other: str = ""
    led_red_pin: int = -1
    led_green_pin: int = -1

    @property
    def has_led(self) -> bool:
        return self.led_red_pin >= 0 or self.led_green_pin >= 0

    @classmethod
    def from_config(cls, section) -> "OsdpSettings":
        import dataclasses

        return cls(**{f.name: getattr(section, f.name) for f in dataclasses.fields(cls) if hasattr(section, f.name)})


def load_scbk(s: OsdpSettings) -> tuple[bytes, str]:
    """(key, where it came from). The panel's KEYSET (``keyset_file``) wins over the
    provisioned key; in install mode with neither, a fresh random key stands in (the
    panel can then only use the install key SCBK-D, with which no session runs)."""
    from edge.bridge.keys import load_key, read_key_file

    if s.keyset_file and Path(s.keyset_file).exists():
        return read_key_file(s.keyset_file, length=16, setting="osdp.keyset_file"), s.keyset_file
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    has_cred = bool(s.scbk_credential and cred_dir and (Path(cred_dir) / s.scbk_credential).exists())
    if s.scbk_file or has_cred:
        key = load_key(s.scbk_file or None, s.scbk_credential or None, length=16, setting="osdp.scbk_file",
                       what="OSDP Secure Channel needs a base key (SCBK)")
        return key, ("credential " + s.scbk_credential) if has_cred else s.scbk_file
    if s.install_mode:
        import secrets

        return secrets.token_bytes(16), "none yet (install mode: waiting for the panel's KEYSET)"
    if not s.enforce_secure:
        return b"", "none (plaintext only: osdp.enforce_secure = false)"
    raise ConfigError("osdp.scbk_file", "", "a root-only SCBK file (32 hex digits), a systemd credential "
                      f"'{s.scbk_credential}', or osdp.install_mode = true to take the key from the panel")


def write_key_file(path: str | os.PathLike, key: bytes) -> None:
    """Write a 16-byte key as 32 hex digits, mode 0600, atomically (a power cut leaves the
    old key or the new one, never half of one)."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        with os.fdopen(fd, "w") as f:  # persistence-ok: the OSDP base key (config, not personal data)
            fd = -1
            os.fchmod(f.fileno(), 0o600)
            f.write(key.hex() + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(p.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


# ------------------------------------------------------------------------------------ the reader's own LED

#: Guidance colours: amber = look at the camera (any prompt), green = PASS, red = anything else.
PROMPT_COLOUR = "amber"
VERDICT_COLOUR = {True: "green", False: "red"}


class LocalLed:
    """This device's own red/green LED pair on GPIO (amber = both), through gpiozero; the
    panel's LED commands drive it too (OSDP colours: 1 red, 2 green, 3 amber, 0 off)."""

    OSDP_COLOURS = {0: "off", 1: "red", 2: "green", 3: "amber"}

    def __init__(self, red_pin: int, green_pin: int, pin_factory=None):
        from gpiozero import DigitalOutputDevice

        self._red = self._green = None
        try:
            if red_pin >= 0:
                self._red = DigitalOutputDevice(red_pin, initial_value=False, pin_factory=pin_factory)
            if green_pin >= 0:
                self._green = DigitalOutputDevice(green_pin, initial_value=False, pin_factory=pin_factory)
        except Exception as err:
            self.close()
            raise BridgeError(f"cannot open the reader LED on GPIO {red_pin}/{green_pin} ({err}); check "
                              f"osdp.led_red_pin / osdp.led_green_pin") from err
        self.colour = "off"

    def set(self, colour: str) -> None:
        self.colour = colour
        for dev, on in ((self._red, colour in ("red", "amber")), (self._green, colour in ("green", "amber"))):
            if dev is not None:
                dev.value = on

    def close(self) -> None:
        for dev in (self._red, self._green):
            if dev is not None:
                try:
                    dev.off()
                finally:
                    dev.close()
        self._red = self._green = None


# ------------------------------------------------------------------------------------ the reader


def _require_libosdp():
    try:
        import osdp_sys
    except ImportError as err:
        raise BridgeError("OSDP reader mode needs libosdp: pip install 'libosdp==3.2.9' (or the project's "
                          "'osdp' extra: pip install -e '.[osdp]')") from err
    return osdp_sys


class SerialChannel:
    """libosdp's channel: non-blocking read/write/flush on a pyserial port. ``last_rx`` is
    when bytes last came from the panel (its polls are the heartbeat of the bus)."""

    def __init__(self, ser, clock: Callable[[], float] = time.monotonic):
        self.ser = ser
        self.id = 0
        self._clock = clock
        self.last_rx = -1e9
        self.error: BaseException | None = None

    def read(self, max_bytes: int) -> bytes:
        try:
            data = self.ser.read(max_bytes)
        except Exception as err:  # a vanished adapter: libosdp sees silence, the bridge sees the error
            self.error = err
            return b""
        if data:
            self.last_rx = self._clock()
        return data

    def write(self, buf: bytes) -> int:
        try:
            return self.ser.write(buf) or 0
        except Exception as err:
            self.error = err
            return 0

    def flush(self) -> None:
        pass


def open_port(port: str, baudrate: int):
    import serial

    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=0, write_timeout=1.0)
    except (serial.SerialException, OSError, ValueError) as err:
        raise BridgeError(f"cannot open the OSDP port {port!r} ({err}); check osdp.port, that the RS-485 adapter "
                          f"is plugged in and that the service user may use it (group dialout)") from err


@dataclass
class _Session:
    request: SessionRequest
    started: float
    delivered: threading.Event = field(default_factory=threading.Event)  # the VERDICT went out
    card_delivered: threading.Event = field(default_factory=threading.Event)  # the card read / keypad code went out
    dead: bool = False  # cancelled by the bridge (panel lost, SC lost, superseded): nothing is sent for it


class OsdpBridge:
    """Trigger + VerdictSink as an OSDP PD. Thread model: one refresh thread owns the
    libosdp context (every call into it holds ``_lock``); libosdp calls :meth:`_on_command`
    from inside ``refresh()`` on that thread. The runner's thread calls wait/prompt/result."""

    TICK_S = 0.005

    def __init__(self, settings: OsdpSettings, scbk: bytes, *, port=None, version: str | None = None,
                 clock: Callable[[], float] = time.monotonic, log_level: str = "WARNING"):
        osdp_sys = _require_libosdp()
        from edge import __version__

        self.settings = s = settings
        self._clock = clock
        # The challenge order is HMAC(SCBK, nonce || "challenge") (firmware_bridge.challenge): a panel
        # that knows the key can know what its person is asked.
        self._challenge_key = bytes(scbk or b"")
        self.version = version or __version__
        self.serial_number = s.serial_number or board_serial_number()
        # ``port``: None (osdp.port), another device spec, or an already open serial-like object (tests)
        port = s.port if port is None else port
        self.port_name = port if isinstance(port, str) else getattr(port, "name", repr(port))
        self._ser = open_port(port, s.baudrate) if isinstance(port, str) else port
        self.channel = SerialChannel(self._ser, clock)
        self._lock = threading.RLock()
        self._requests: queue.Queue[SessionRequest] = queue.Queue()
        self._current: _Session | None = None
        self._assembling: tuple[Start, bytearray, float] | None = None
        self._assembled = 0
        self._prompt_inflight = False
        self._next_prompt: bytes | None = None
        self._tamper = False
        self._status_sent = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._error: BaseException | None = None
        self.sc_active = False
        self.online = False
        self.counters = {"started": 0, "rejected": 0, "aborted": 0, "verdicts_sent": 0, "verdicts_dropped": 0,
                         "prompts": 0, "keysets": 0, "panel_text": 0, "panel_led": 0, "panel_buzzer": 0}
        flags = osdp_sys.FLAG_ENFORCE_SECURE if s.enforce_secure else 0
        if s.install_mode:
            flags |= osdp_sys.FLAG_INSTALL_MODE
        caps = [
            {"function_code": osdp_sys.CAP_COMMUNICATION_SECURITY, "compliance_level": 1, "num_items": 1},
            {"function_code": osdp_sys.CAP_CHECK_CHARACTER_SUPPORT, "compliance_level": 1, "num_items": 0},
        ]
        if s.card_on_pass:
            caps.append({"function_code": osdp_sys.CAP_CARD_DATA_FORMAT, "compliance_level": 1, "num_items": 0})
        try:
            self.led = LocalLed(s.led_red_pin, s.led_green_pin) if s.has_led else None
        except BaseException:
            self._ser.close()
            raise
        if self.led is not None:
            caps.append({"function_code": osdp_sys.CAP_READER_LED_CONTROL, "compliance_level": 1, "num_items": 1})
        info = {
            "name": "edge", "address": s.address, "flags": flags, "scbk": scbk or None, "channel": self.channel,
            "version": s.hardware_version, "model": s.model, "vendor_code": s.vendor_code,
            "serial_number": self.serial_number, "firmware_version": firmware_version_code(self.version),
        }
        levels = {"DEBUG": osdp_sys.LOG_INFO, "INFO": osdp_sys.LOG_WARNING}
        osdp_sys.set_loglevel(levels.get(log_level, osdp_sys.LOG_ERROR))
        try:
            self._ctx = osdp_sys.PeripheralDevice(info, capabilities=caps)
        except Exception as err:
            self._ser.close()
            if self.led is not None:
                self.led.close()
            raise BridgeError(f"libosdp refused the reader set-up ({err}); check [osdp]") from err
        self._osdp = osdp_sys
        self._ctx.set_command_callback(self._on_command_safe)
        if hasattr(self._ctx, "set_event_completion_callback"):
            self._ctx.set_event_completion_callback(self._on_event_done)
        self._thread = threading.Thread(target=self._run, name="edge-osdp-pd", daemon=True)
        self._thread.start()
        log.info("OSDP reader at address %d on %s, %d baud, vendor 0x%06X model %d serial %d firmware %s, "
                 "Secure Channel %s%s", s.address, self.port_name, s.baudrate, s.vendor_code, s.model,
                 self.serial_number, self.version, "enforced" if s.enforce_secure else "OPTIONAL (plaintext allowed)",
                 ", install mode" if s.install_mode else "")

    # ---------------------------------------------------------------- Trigger

    def wait(self, timeout_s: float) -> SessionRequest | None:
        return wait_for_request(self._requests, timeout_s, self._raise_if_failed)

    # ---------------------------------------------------------------- VerdictSink

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        sess = self._session_of(request)
        if sess is None:
            return
        if self.led is not None:
            self.led.set(PROMPT_COLOUR)
        data = pack_prompt(request.session_id, int(prompt), prompt.text)
        with self._lock:
            if self._prompt_inflight:
                # one poll per event: queue at most one prompt, and only the newest, so a verdict
                # never waits behind a backlog of advice the person no longer needs
                self._next_prompt = data
                return
            self._prompt_inflight = self._submit_mfgrep(data)
        self.counters["prompts"] += 1

    def result(self, request: SessionRequest, verdict: Verdict) -> bool:
        """Queue the VERDICT (and the card read / keypad code) for the panel's next poll and
        wait until it went out, at most until the session's deadline. True if it was sent."""
        if request.origin != "osdp":
            return False
        if self.led is not None:
            self.led.set(VERDICT_COLOUR[verdict.passed])
        with self._lock:
            sess = self._current if self._current is not None and self._current.request is request else None
            self._next_prompt = None  # stale now; at most one prompt is queued ahead of the verdict
        if sess is None or sess.dead:
            self._update_tamper(verdict)
            self._drop(request, verdict, "the session was cancelled (panel lost, Secure Channel lost or superseded)")
            return False
        now = self._clock()
        s = self.settings
        # The panel's deadline started when it sent START, a poll before ours: keep a margin so a verdict
        # this reader lets go of cannot reach the panel after the panel's own deadline.
        deadline = sess.started + max(0, (request.deadline_ms or s.result_timeout_ms) - LATE_MARGIN_MS) / 1000.0
        if not request.deadline_ms:
            deadline = max(deadline, now + s.result_timeout_ms / 1000.0)
        why = self._unsafe_to_send(now, deadline)
        if why:
            self._update_tamper(verdict)
            self._drop(request, verdict, why)
            self._end(sess)
            return False
        log.debug("session %d: verdict handed to the bus at monotonic %.6f", request.session_id, time.monotonic())
        ok = self._submit_mfgrep(pack_verdict(request.session_id, request.nonce, verdict.kind, int(verdict.reason),
                                              verdict.elapsed_ms, verdict.frames_used, verdict.frames_seen))
        card = None
        if ok and s.card_on_pass and verdict.passed:
            card = {"event": self._osdp.EVENT_CARDREAD, "reader_no": 0, "format": self._osdp.CARD_FMT_RAW_WIEGAND,
                    "direction": 0, "length": 26, "data": wiegand26(s.card_facility, s.card_number)}
        elif ok and s.card_on_pass and s.keypad_on_other:
            card = {"event": self._osdp.EVENT_KEYPRESS, "reader_no": 0, "data": s.keypad_on_other.encode("ascii")}
        if card is not None:
            sess.card_delivered.clear()
            ok = self._submit(card)
        else:
            sess.card_delivered.set()
        sent = False
        while ok and not self._stop.is_set():
            # a card read is a PASS without a nonce: it must go out now or never, like the VERDICT
            if sess.delivered.wait(self.TICK_S * 4) and sess.card_delivered.wait(0):
                sent = True
                break
            with self._lock:
                why = "" if not sess.dead else "the session was cancelled"
            why = why or self._unsafe_to_send(self._clock(), deadline)
            if why:
                break
        if not sent:
            # Never let a verdict (above all a PASS) sit in the queue to go out late
            with self._lock:
                flushed = self._ctx.flush_events()
                self._prompt_inflight, self._next_prompt = False, None
            self._drop(request, verdict, why if ok else "libosdp's event queue refused it", flushed=flushed)
        else:
            self.counters["verdicts_sent"] += 1
            log.info("session %d: VERDICT %s sent to the panel", request.session_id, verdict.kind.value)
        self._update_tamper(verdict)  # after any flush: a fault must reach the panel even if the verdict did not
        self._end(sess)
        return sent

    def fault(self, reason: Reason = Reason.INTERNAL_ERROR, detail: str = "", session_id: int = 0) -> None:
        """The runtime is failing or stopping: cancel the session and raise the status bits
        (tamper for a fault, power for a shutdown) so the panel can alarm."""
        with self._lock:
            sess = self._current
            if sess is not None:
                sess.dead = True
        if sess is not None:
            sess.request.cancel.set()
        self._status(tamper=reason is not Reason.SHUTDOWN or self._tamper, power=reason is Reason.SHUTDOWN)

    def close(self) -> None:
        if self._closed:
            return
        if self._error is None and not self._stop.is_set():
            self._status_sent.clear()
            self.fault(Reason.SHUTDOWN)
            if self.online:  # give the status report a poll or two to go out
                self._status_sent.wait(0.3)
        self._closed = True
        self._stop.set()
        self._thread.join(timeout=2.0)
        with self._lock:
            self._assembling = None
            try:
                self._ctx.flush_events()
            except Exception:
                pass
            self._ctx = None
        try:
            self._ser.close()
        except Exception as err:
            log.debug("OSDP port close: %s", err)
        if self.led is not None:
            self.led.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- internals

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise BridgeError(f"OSDP bus {self.port_name} failed: {self._error}") from self._error

    def _session_of(self, request: SessionRequest) -> _Session | None:
        if request.origin != "osdp":
            return None
        with self._lock:
            cur = self._current
            return cur if cur is not None and cur.request is request and not cur.dead else None

    def _unsafe_to_send(self, now: float, deadline: float) -> str:
        if now >= deadline:
            return "the session's deadline has passed (a late verdict is not sent)"
        if not self.online:
            return "the panel is not polling"
        if self.settings.enforce_secure and not self.sc_active:
            return "no Secure Channel with the panel"
        return ""

    def _drop(self, request: SessionRequest, verdict: Verdict, why: str, flushed: int = 0) -> None:
        self.counters["verdicts_dropped"] += 1
        log.warning("session %d: VERDICT %s not sent: %s%s", request.session_id, verdict.kind.value, why,
                    f" ({flushed} queued event(s) flushed)" if flushed else "")

    def _end(self, sess: _Session) -> None:
        with self._lock:
            if self._current is sess:
                self._current = None
        c = self.counters
        log.info("session %d ended; totals: %d prompt(s) sent, panel LED/TEXT/buzzer commands %d/%d/%d",
                 sess.request.session_id, c["prompts"], c["panel_led"], c["panel_text"], c["panel_buzzer"])

    def _submit(self, event: dict) -> bool:
        with self._lock:
            if self._ctx is None:
                return False
            try:
                ok = bool(self._ctx.submit_event(event))
            except Exception as err:
                log.warning("libosdp refused an event (%s)", err)
                return False
        if not ok:
            log.warning("libosdp's event queue is full: event dropped")
        return ok

    def _submit_mfgrep(self, data: bytes) -> bool:
        return self._submit({"event": self._osdp.EVENT_MFGREP, "vendor_code": self.settings.vendor_code, "data": data})

    def _status(self, *, tamper: bool, power: bool = False) -> None:
        self._tamper = tamper
        self._submit({"event": self._osdp.EVENT_STATUS, "type": self._osdp.STATUS_REPORT_LOCAL,
                      "report": bytes([int(tamper), int(power)])})

    def _update_tamper(self, verdict: Verdict) -> None:
        broken = verdict.reason in (Reason.CAMERA_LOST, Reason.CAMERA_OPEN_FAILED, Reason.MODEL_ERROR,
                                    Reason.INTERNAL_ERROR)
        if broken:
            log.warning("reporting tamper to the panel: %s", verdict.reason.name)
            self._status(tamper=True)
        elif self._tamper and verdict.kind is not VerdictKind.FAULT:
            log.info("device working again: clearing the tamper report")
            self._status(tamper=False)

    def _on_event_done(self, event: dict, status: int) -> None:
        try:
            if event.get("event") == self._osdp.EVENT_STATUS:
                self._status_sent.set()
            if event.get("event") in (self._osdp.EVENT_CARDREAD, self._osdp.EVENT_KEYPRESS):
                with self._lock:
                    cur = self._current
                if cur is not None and status == self._osdp.COMPLETION_OK:
                    cur.card_delivered.set()
            if event.get("event") != self._osdp.EVENT_MFGREP or status != self._osdp.COMPLETION_OK:
                return
            data = event.get("data", b"")
            if len(data) >= 2 and data[1] == T_PROMPT:
                self._prompt_inflight = False
            if len(data) >= 2 and data[1] == T_VERDICT:
                sid = _HDR.unpack_from(data)[2]
                with self._lock:
                    cur = self._current
                if cur is not None and cur.request.session_id == sid:
                    cur.delivered.set()
        except Exception as err:  # never let an exception cross into libosdp
            log.error("event completion handler failed (%s)", type(err).__name__)

    def _on_command_safe(self, cmd: dict) -> tuple[int, Any]:
        try:
            return self._on_command(cmd)
        except Exception as err:  # never let an exception cross into libosdp: NAK the command
            log.error("OSDP command handler failed (%s)", type(err).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
            return -1, None

    def _on_command(self, cmd: dict) -> tuple[int, Any]:
        """libosdp hands every command that reaches the application here (on the refresh
        thread, inside refresh()). Return (0, None) to ACK, (-1, None) to NAK."""
        o = self._osdp
        cid = cmd.get("command")
        if cid == o.CMD_MFG:
            if cmd.get("vendor_code") != self.settings.vendor_code:
                log.warning("MFG command with vendor code 0x%06X refused (osdp.vendor_code is 0x%06X)",
                            cmd.get("vendor_code", 0), self.settings.vendor_code)
                return -1, None
            return self._on_mfg(cmd.get("data", b""))
        if cid == o.CMD_KEYSET:
            return self._on_keyset(cmd)
        if cid == o.CMD_LED:
            self.counters["panel_led"] += 1
            log.debug("panel LED: colour %s", cmd.get("on_color"))
            if self.led is not None:
                self.led.set(LocalLed.OSDP_COLOURS.get(cmd.get("on_color"), "off"))
            return 0, None
        if cid == o.CMD_TEXT:
            self.counters["panel_text"] += 1
            log.debug("panel TEXT: %r", cmd.get("data", "")[:TEXT_MAX])
            return 0, None
        if cid == o.CMD_BUZZER:
            self.counters["panel_buzzer"] += 1
            return 0, None
        if cid == o.CMD_STATUS:
            # libosdp 3.2.9's binding cannot fill an LSTATR reply (it answers all-clear): answer only while that
            # is true, and NAK while a fault is active (the unsolicited status report carries the bits)
            return (0, None) if cmd.get("type") == o.STATUS_REPORT_LOCAL and not self._tamper else (-1, None)
        if cid == o.CMD_COMSET:
            log.warning("COMSET refused: set osdp.address / osdp.baudrate in the config instead")
            return -1, None
        # OUTPUT, FILE_TX, ... (and BIOREAD/BIOMATCH from libosdp 4: the seam is _start_session)
        log.info("OSDP command %s not supported: NAK", cid)
        return -1, None

    def _secure_enough(self) -> bool:
        # is_sc_active() is false while the install key SCBK-D is in use: no session on a public key
        return self._ctx.is_sc_active() if self.settings.enforce_secure else True

    def _reject(self, sid: int, code: int, why: str) -> tuple[int, Any]:
        self.counters["rejected"] += 1
        log.warning("session %d refused: %s", sid, why)
        self._submit_mfgrep(pack_reject(sid, code))
        return 0, None  # ACK the command: the REJECT says why (a NAK would make the panel retry it)

    def _on_mfg(self, data: bytes) -> tuple[int, Any]:
        try:
            msg = parse_command(data)
        except PayloadError as err:
            sid = _HDR.unpack_from(data)[2] if len(data) >= _HDR.size else 0
            return self._reject(sid, REJECT_MALFORMED, f"malformed MFG payload ({err})")
        if isinstance(msg, Abort):
            return self._on_abort(msg)
        if not self._secure_enough():
            return self._reject(msg.session_id, REJECT_NOT_SECURE,
                                "no Secure Channel with a real key (plaintext or the install key SCBK-D)")
        if isinstance(msg, Start):
            if msg.template_len:
                self._assembling = (msg, bytearray(msg.template_len), self._clock())
                self._assembled = 0
                return 0, None
            self._start_session(msg, b"")
            return 0, None
        # a TEMPLATE part
        asm = self._assembling
        if asm is None or asm[0].session_id != msg.session_id:
            return self._reject(msg.session_id, REJECT_UNKNOWN_SESSION, "TEMPLATE part for no announced session")
        start, buf, _ = asm
        if msg.offset != self._assembled or msg.offset + len(msg.data) > len(buf):
            self._wipe_assembly()
            return self._reject(msg.session_id, REJECT_TEMPLATE, "TEMPLATE parts out of order or too long")
        buf[msg.offset:msg.offset + len(msg.data)] = msg.data
        self._assembled += len(msg.data)
        if self._assembled == len(buf):
            template = bytes(buf)
            self._wipe_assembly()
            self._start_session(start, template)
        return 0, None

    def _wipe_assembly(self) -> None:
        asm = self._assembling
        if asm is not None:
            asm[1][:] = bytes(len(asm[1]))
        self._assembling = None
        self._assembled = 0

    def _start_session(self, start: Start, template: bytes) -> None:
        """The seam every session-starting command goes through (MFG START today; BIOMATCH
        with its template once libosdp 4 is released)."""
        req = SessionRequest(session_id=start.session_id, nonce=start.nonce, origin="osdp",
                             deadline_ms=start.deadline_ms or None, template=template,
                             challenge_seed=challenge_seed(self._challenge_key, start.nonce) if self._challenge_key else b"")
        with self._lock:
            old = self._current
            self._current = _Session(req, self._clock())
        if old is not None:
            old.dead = True  # the panel moved on: the old session can no longer be delivered
            old.request.cancel.set()
        while True:  # a request the runner has not picked up yet is stale now
            try:
                self._requests.get_nowait().cancel.set()
            except queue.Empty:
                break
        self.counters["started"] += 1
        log.info("START session %d from the panel (deadline %s ms%s)", start.session_id, start.deadline_ms or "none",
                 ", with a 1:1 template" if template else "")
        self._requests.put(req)

    def _on_abort(self, msg: Abort) -> tuple[int, Any]:
        with self._lock:
            cur = self._current
        if cur is None or cur.request.session_id != msg.session_id:
            if self._assembling is not None and self._assembling[0].session_id == msg.session_id:
                self._wipe_assembly()
                return 0, None
            log.info("ABORT for session %d, which is not running", msg.session_id)
            return 0, None
        self.counters["aborted"] += 1
        log.info("session %d aborted by the panel", msg.session_id)
        cur.request.cancel.set()  # the runner ends it with FAULT/ABORTED, which is still reported
        return 0, None

    def _on_keyset(self, cmd: dict) -> tuple[int, Any]:
        s = self.settings
        key = cmd.get("data", b"")
        if not s.keyset_file:
            log.warning("KEYSET from the panel refused: osdp.keyset_file is not set (key rotation by file only)")
            return -1, None
        if cmd.get("type") != 1 or len(key) != 16:
            log.warning("KEYSET refused: only a 16-byte SCBK (type 1) is accepted")
            return -1, None
        with self._lock:
            busy = self._current is not None
        if busy:
            # the privacy guard refuses file writes during a session; the panel retries
            log.warning("KEYSET refused while a session runs; the panel may retry")
            return -1, None
        try:
            write_key_file(s.keyset_file, bytes(key))
        except OSError as err:
            log.error("KEYSET refused: cannot write %s (%s); the service needs it writable "
                      "(ReadWritePaths= or StateDirectory=)", s.keyset_file, err)
            return -1, None
        self._challenge_key = bytes(key)
        self.counters["keysets"] += 1
        log.warning("new Secure Channel key from the panel stored in %s", s.keyset_file)
        return 0, None

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                with self._lock:
                    if self._ctx is None:
                        break
                    self._ctx.refresh()
                    sc = bool(self._ctx.is_sc_active())
                self._tick(sc)
                if self.channel.error is not None:
                    raise BridgeError(f"serial I/O failed: {self.channel.error}")
                time.sleep(self.TICK_S)
        except BaseException as err:  # fail secure: every waiter learns the bus is gone
            if self._stop.is_set():
                return
            self._error = err
            log.error("OSDP bus %s failed: %s", self.port_name, err)
            self._cancel_current("OSDP bus failed")

    def _tick(self, sc: bool) -> None:
        now = self._clock()
        online = now - self.channel.last_rx <= self.settings.panel_timeout_ms / 1000.0
        if online != self.online:
            self.online = online
            log.log(logging.INFO if online else logging.WARNING, "panel %s", "polling" if online else
                    f"silent for {self.settings.panel_timeout_ms} ms: lost")
        if sc != self.sc_active:
            self.sc_active = sc
            log.info("Secure Channel %s", "active" if sc else "inactive")
        if not online:
            self._cancel_current("panel lost")
        elif self.settings.enforce_secure and not sc:
            self._cancel_current("Secure Channel lost")
        with self._lock:
            nxt = self._next_prompt if not self._prompt_inflight else None
            if nxt is not None:
                self._next_prompt = None
                self._prompt_inflight = self._submit_mfgrep(nxt)
                self.counters["prompts"] += 1
        asm = self._assembling
        if asm is not None and now - asm[2] > 2.0:
            with self._lock:
                self._wipe_assembly()
            self._reject(asm[0].session_id, REJECT_TEMPLATE, "template not complete within 2 s")
        with self._lock:
            cur = self._current
        if cur is not None and not cur.dead and cur.request.deadline_ms \
                and now - cur.started > cur.request.deadline_ms / 1000.0:
            self._cancel_current("the panel's deadline passed")

    def _cancel_current(self, why: str) -> None:
        with self._lock:
            cur = self._current
            if cur is None or cur.dead:
                return
            cur.dead = True
            if self._ctx is not None:
                self._ctx.flush_events()  # nothing of this session may go out later
            self._prompt_inflight, self._next_prompt = False, None
        log.warning("session %d cancelled: %s", cur.request.session_id, why)
        cur.request.cancel.set()


def open_osdp(settings: OsdpSettings, *, log_level: str = "WARNING") -> OsdpBridge:
    """Load the key (file, credential or install mode) and start the reader."""
    scbk, where = load_scbk(settings)
    bridge = OsdpBridge(settings, scbk, log_level=log_level)
    if scbk:
        from edge.bridge.keys import key_fingerprint

        log.info("OSDP Secure Channel base key: %s (fingerprint %s)", where, key_fingerprint(scbk)[:8])
    return bridge
