# edge controller wire protocol, shared by both ends.
#
# This one file runs unchanged under CPython (the runtime, the simulator, the
# tests) and MicroPython (the reference firmware). That rules out dataclasses,
# enum, typing and annotations; keep it that way. The runtime imports this very
# module (edge.bridge uses firmware_bridge.protocol; the wheel ships both
# packages), so the two ends cannot drift apart.
#
# Wire format (see PROTOCOL.md for the full story and worked examples):
#
#   wire  = COBS(frame) 0x00
#   frame = ver:u8 type:u8 seq:u32 len:u16 payload[len] mac[16] crc:u16   (big endian)
#   mac   = HMAC-SHA256(key, dir || ver..payload)[:16], dir = b"R" runtime->controller,
#           b"C" controller->runtime (so a frame reflected back at its sender fails)
#   crc   = CRC-16/CCITT-FALSE over ver..mac (cheap line-noise check before the HMAC)

import hashlib
import struct

PROTOCOL_VERSION = 1

MAC_LEN = 16
NONCE_LEN = 16
KEY_LEN = 32
HEADER_LEN = 8
TRAILER_LEN = MAC_LEN + 2
MIN_FRAME = HEADER_LEN + TRAILER_LEN
MAX_PAYLOAD = 200
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN
# COBS adds one byte per 254 plus one; anything longer between delimiters is junk.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1
MAX_TEXT = 64

DIR_RUNTIME = b"R"  # frames sent by the runtime (edge)
DIR_CONTROLLER = b"C"  # frames sent by the controller (firmware)

# message types
HELLO = 1
START = 2
PROMPT = 3
RESULT = 4
HEARTBEAT = 5
ACK = 6
ABORT = 7
FAULT = 8

TYPE_NAMES = {
    HELLO: "HELLO",
    START: "START",
    PROMPT: "PROMPT",
    RESULT: "RESULT",
    HEARTBEAT: "HEARTBEAT",
    ACK: "ACK",
    ABORT: "ABORT",
    FAULT: "FAULT",
}

# Which sender may send which type; anything else is dropped as wrong_direction.
_FROM_RUNTIME = (HELLO, PROMPT, RESULT, HEARTBEAT, ACK, FAULT)
_FROM_CONTROLLER = (HELLO, START, HEARTBEAT, ACK, ABORT, FAULT)

# Verdict codes (must match edge.types.VerdictKind.code; a test checks).
V_PASS = 1
V_FAIL = 2
V_NO_FACE = 3
V_TIMEOUT = 4
V_FAULT = 5
VERDICT_NAMES = {V_PASS: "PASS", V_FAIL: "FAIL", V_NO_FACE: "NO_FACE", V_TIMEOUT: "TIMEOUT", V_FAULT: "FAULT"}

# Reason codes the firmware itself uses (the full table is edge.types.Reason).
R_NONE = 0
R_ABORTED = 36
R_SHUTDOWN = 37
R_CONTROLLER_LOST = 38
# Controller-side reasons, sent in FAULT/ABORT from the controller.
R_RUNTIME_LOST = 64  # no valid frame from the runtime within the heartbeat timeout
R_DEADLINE = 65  # no RESULT by the session deadline
R_BOOT = 66  # controller (re)booted

# Heartbeat states
S_IDLE = 0
S_BUSY = 1  # a session is running
S_FAULT = 2

# Counter names, one per way a frame can be rejected. The session-level ones
# (stale_result, wrong_nonce, duplicate) are counted by the session logic.
STAT_NAMES = (
    "ok",
    "garbage",
    "truncated",
    "oversized",
    "bad_crc",
    "bad_version",
    "bad_length",
    "bad_mac",
    "unknown_type",
    "wrong_direction",
    "bad_payload",
    "replay",
    "stale_result",
    "wrong_nonce",
    "duplicate",
)


class ProtocolError(ValueError):
    pass


def new_stats():
    d = {}
    for name in STAT_NAMES:
        d[name] = 0
    return d


# ---------------------------------------------------------------- CRC-16/CCITT-FALSE


def _crc_table():
    t = []
    for i in range(256):
        c = i << 8
        for _ in range(8):
            c = ((c << 1) ^ 0x1021) if c & 0x8000 else (c << 1)
        t.append(c & 0xFFFF)
    return t


_CRC_TABLE = _crc_table()


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection); crc16(b"123456789") == 0x29B1."""
    t = _CRC_TABLE
    for b in data:
        crc = ((crc << 8) & 0xFFFF) ^ t[((crc >> 8) ^ b) & 0xFF]
    return crc


# ---------------------------------------------------------------- HMAC-SHA256
# Some MicroPython ports have hashlib.sha256 but no hmac module: RFC 2104 by hand.


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    return bytes([b ^ 0x36 for b in key]), bytes([b ^ 0x5C for b in key])


def hmac_sha256(key, msg):
    ipad, opad = _pads(key)
    return _hmac_pads(ipad, opad, msg)


def _hmac_pads(ipad, opad, msg):
    h = hashlib.sha256(ipad)
    h.update(msg)
    inner = h.digest()
    h = hashlib.sha256(opad)
    h.update(inner)
    return h.digest()


def ct_equal(a, b):
    """Compare without an early exit so timing does not leak how many MAC bytes matched."""
    if len(a) != len(b):
        return False
    r = 0
    for i in range(len(a)):
        r |= a[i] ^ b[i]
    return r == 0


# ---------------------------------------------------------------- COBS


def cobs_encode(data):
    """Consistent Overhead Byte Stuffing: the result contains no 0x00."""
    out = bytearray(1)
    code_idx = 0
    code = 1
    for b in data:
        if b == 0:
            out[code_idx] = code
            code_idx = len(out)
            out.append(0)
            code = 1
        else:
            out.append(b)
            code += 1
            if code == 0xFF:
                out[code_idx] = code
                code_idx = len(out)
                out.append(0)
                code = 1
    out[code_idx] = code
    return bytes(out)


def cobs_decode(data):
    """Decode one COBS block (without its 0x00 delimiter); ProtocolError if malformed."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        code = data[i]
        if code == 0:
            raise ProtocolError("zero byte inside COBS data")
        j = i + code
        if j > n:
            raise ProtocolError("COBS block overruns frame")
        out.extend(data[i + 1 : j])
        i = j
        if code != 0xFF and i < n:
            out.append(0)
    return bytes(out)


# ---------------------------------------------------------------- keys


def parse_key(data):
    """A pre-shared key file's bytes -> 32-byte key.

    Accepted: exactly 32 raw bytes, or 64 hex digits (surrounding whitespace and
    one trailing newline are fine). Anything else raises ProtocolError.
    """
    data = bytes(data)
    if len(data) == KEY_LEN:
        try:
            text = data.decode()
        except Exception:
            return data
        # 32 hex digits are a 128-bit key written as hex, not 32 raw bytes: refuse the ambiguity
        if _is_hex(text.strip()):
            raise ProtocolError("key looks like hex but is not 64 hex digits")
        return data
    try:
        text = data.decode().strip()
    except Exception as err:
        raise ProtocolError("key must be 32 raw bytes or 64 hex digits, got %d bytes" % len(data)) from err
    if len(text) == 2 * KEY_LEN and _is_hex(text):
        return bytes([int(text[i : i + 2], 16) for i in range(0, len(text), 2)])
    raise ProtocolError("key must be 32 raw bytes or 64 hex digits, got %d bytes" % len(data))


def _is_hex(s):
    if not s:
        return False
    for ch in s:
        if ch not in "0123456789abcdefABCDEF":
            return False
    return True


# ---------------------------------------------------------------- payloads


def _text_bytes(text):
    b = text.encode("utf-8")
    while len(b) > MAX_TEXT:
        text = text[:-1]
        b = text.encode("utf-8")
    return b


def _text(b):
    return str(bytes(b), "utf-8")


HELLO_REPLY = 0x01  # HELLO flag: "I just (re)started, please answer with your HELLO"


def pack_hello(info, flags=0):
    """info: list of (key, value) string pairs, e.g. [("board", "rpi5"), ("runtime", "0.1.0")]."""
    out = bytearray([PROTOCOL_VERSION, flags, 0])
    count = 0
    for k, v in info:
        kb = _text_bytes(str(k))
        vb = _text_bytes(str(v))
        if len(out) + 2 + len(kb) + len(vb) > MAX_PAYLOAD:
            break  # drop what does not fit rather than fail the handshake
        out.append(len(kb))
        out.extend(kb)
        out.append(len(vb))
        out.extend(vb)
        count += 1
    out[2] = count
    return bytes(out)


def pack_start(session_id, nonce, deadline_ms=0):
    if len(nonce) != NONCE_LEN:
        raise ProtocolError("nonce must be %d bytes" % NONCE_LEN)
    return struct.pack(">I", session_id) + bytes(nonce) + struct.pack(">I", deadline_ms or 0)


def pack_prompt(session_id, code, text=""):
    tb = _text_bytes(text)
    return struct.pack(">IBB", session_id, code, len(tb)) + tb


def pack_result(session_id, nonce, verdict, reason, elapsed_ms, frames_used=0, frames_seen=0):
    if len(nonce) != NONCE_LEN:
        raise ProtocolError("nonce must be %d bytes" % NONCE_LEN)
    return (
        struct.pack(">I", session_id)
        + bytes(nonce)
        + struct.pack(
            ">BBIHH",
            verdict,
            reason,
            min(elapsed_ms, 0xFFFFFFFF),
            min(frames_used, 0xFFFF),
            min(frames_seen, 0xFFFF),
        )
    )


def pack_heartbeat(state, session_id=0):
    return struct.pack(">BI", state, session_id)


def pack_ack(acked_type, acked_seq, session_id=0):
    return struct.pack(">BII", acked_type, acked_seq, session_id)


def pack_abort(session_id, reason):
    return struct.pack(">IB", session_id, reason)


def pack_fault(session_id, reason, text=""):
    tb = _text_bytes(text)
    return struct.pack(">IBB", session_id, reason, len(tb)) + tb


def pack_fields(mtype, f):
    """Payload of a message from a dict of its fields (the names unpack_payload returns)."""
    if mtype == HELLO:
        return pack_hello(f.get("info", ()), f.get("flags", 0))
    if mtype == START:
        return pack_start(f["session_id"], f["nonce"], f.get("deadline_ms", 0))
    if mtype == PROMPT:
        return pack_prompt(f["session_id"], f["code"], f.get("text", ""))
    if mtype == RESULT:
        return pack_result(f["session_id"], f["nonce"], f["verdict"], f["reason"], f["elapsed_ms"],
                           f.get("frames_used", 0), f.get("frames_seen", 0))
    if mtype == HEARTBEAT:
        return pack_heartbeat(f["state"], f.get("session_id", 0))
    if mtype == ACK:
        return pack_ack(f["acked_type"], f["acked_seq"], f.get("session_id", 0))
    if mtype == ABORT:
        return pack_abort(f["session_id"], f["reason"])
    if mtype == FAULT:
        return pack_fault(f.get("session_id", 0), f["reason"], f.get("text", ""))
    raise ProtocolError("unknown type %d" % mtype)


class Message:
    """One verified message: ``type``, ``seq`` and the payload's fields as attributes."""

    def __init__(self, mtype, seq, fields):
        self.type = mtype
        self.seq = seq
        self.fields = fields
        for k in fields:
            setattr(self, k, fields[k])

    @property
    def name(self):
        return TYPE_NAMES.get(self.type, str(self.type))

    def __repr__(self):
        return "Message(%s seq=%d %r)" % (self.name, self.seq, self.fields)


def unpack_payload(mtype, p):
    """Payload bytes -> dict of fields; ProtocolError if the layout does not fit the type."""
    n = len(p)
    try:
        if mtype == HELLO:
            if n < 3:
                raise ProtocolError("short HELLO")
            proto, flags, count = p[0], p[1], p[2]
            i = 3
            info = []
            for _ in range(count):
                kl = p[i]
                k = _text(p[i + 1 : i + 1 + kl])
                i += 1 + kl
                vl = p[i]
                v = _text(p[i + 1 : i + 1 + vl])
                i += 1 + vl
                if i > n:
                    raise ProtocolError("HELLO field overruns payload")
                info.append((k, v))
            if i != n:
                raise ProtocolError("HELLO has trailing bytes")
            return {"proto": proto, "flags": flags, "info": info}
        if mtype == START:
            if n != 4 + NONCE_LEN + 4:
                raise ProtocolError("START length")
            sid = struct.unpack(">I", p[0:4])[0]
            dl = struct.unpack(">I", p[4 + NONCE_LEN :])[0]
            return {"session_id": sid, "nonce": bytes(p[4 : 4 + NONCE_LEN]), "deadline_ms": dl}
        if mtype == PROMPT:
            if n < 6:
                raise ProtocolError("short PROMPT")
            sid, code, tl = struct.unpack(">IBB", p[0:6])
            if n != 6 + tl:
                raise ProtocolError("PROMPT length")
            return {"session_id": sid, "code": code, "text": _text(p[6:])}
        if mtype == RESULT:
            if n != 4 + NONCE_LEN + 10:
                raise ProtocolError("RESULT length")
            sid = struct.unpack(">I", p[0:4])[0]
            v, r, el, fu, fs = struct.unpack(">BBIHH", p[4 + NONCE_LEN :])
            return {
                "session_id": sid,
                "nonce": bytes(p[4 : 4 + NONCE_LEN]),
                "verdict": v,
                "reason": r,
                "elapsed_ms": el,
                "frames_used": fu,
                "frames_seen": fs,
            }
        if mtype == HEARTBEAT:
            if n != 5:
                raise ProtocolError("HEARTBEAT length")
            st, sid = struct.unpack(">BI", p)
            return {"state": st, "session_id": sid}
        if mtype == ACK:
            if n != 9:
                raise ProtocolError("ACK length")
            t, s, sid = struct.unpack(">BII", p)
            return {"acked_type": t, "acked_seq": s, "session_id": sid}
        if mtype == ABORT:
            if n != 5:
                raise ProtocolError("ABORT length")
            sid, r = struct.unpack(">IB", p)
            return {"session_id": sid, "reason": r}
        if mtype == FAULT:
            if n < 6:
                raise ProtocolError("short FAULT")
            sid, r, tl = struct.unpack(">IBB", p[0:6])
            if n != 6 + tl:
                raise ProtocolError("FAULT length")
            return {"session_id": sid, "reason": r, "text": _text(p[6:])}
    except ProtocolError:
        raise
    except Exception as err:  # IndexError, UnicodeError, struct.error
        raise ProtocolError("malformed payload: %r" % (err,)) from err
    raise ProtocolError("unknown type %d" % mtype)


# ---------------------------------------------------------------- framing


class FrameReader:
    """Splits a byte stream on 0x00 delimiters into COBS blocks.

    A block longer than MAX_ENCODED is dropped (counted as oversized) and the
    reader skips to the next delimiter, so garbage never grows memory.
    """

    def __init__(self, stats, on_reject=None):
        self.stats = stats
        self._on_reject = on_reject
        self._buf = bytearray()
        self._skip = False

    def reset(self):
        self._buf = bytearray()
        self._skip = False

    def _oversized(self):
        if self._on_reject is not None:
            self._on_reject("oversized")
        else:
            self.stats["oversized"] += 1

    def feed(self, data):
        out = []
        data = bytes(data)
        start = 0
        n = len(data)
        while start < n:
            i = data.find(b"\x00", start)
            if i < 0:
                if not self._skip:
                    if len(self._buf) + (n - start) > MAX_ENCODED:
                        self._oversized()
                        self._buf = bytearray()
                        self._skip = True
                    else:
                        self._buf.extend(data[start:])
                break
            if self._skip:
                self._skip = False
            elif len(self._buf) + (i - start) > MAX_ENCODED:
                self._oversized()
            else:
                self._buf.extend(data[start:i])
                if len(self._buf):
                    out.append(bytes(self._buf))
            self._buf = bytearray()
            start = i + 1
        return out


class Codec:
    """One end of the link: frames what it sends, verifies what it receives.

    ``direction`` is this end's own label (DIR_RUNTIME or DIR_CONTROLLER);
    received frames are checked against the peer's. Sequence numbers are per
    direction and strictly increasing; a HELLO (the peer restarted) resets the
    expected sequence. Every rejected frame bumps one counter in ``stats``.
    """

    def __init__(self, key, direction):
        if len(key) < 16:
            raise ProtocolError("key too short")
        if direction == DIR_RUNTIME:
            self._peer = DIR_CONTROLLER
            self._may_receive = _FROM_CONTROLLER
        elif direction == DIR_CONTROLLER:
            self._peer = DIR_RUNTIME
            self._may_receive = _FROM_RUNTIME
        else:
            raise ProtocolError("direction must be DIR_RUNTIME or DIR_CONTROLLER")
        self.direction = direction
        self._ipad, self._opad = _pads(key)
        self.tx_seq = 0
        self.rx_seq = None  # last accepted peer sequence; None until the first frame
        self.stats = new_stats()
        self.reader = FrameReader(self.stats, self._reject)
        self.last_reject = None  # name of the last counter bumped by a rejection

    def _mac(self, label, body):
        return _hmac_pads(self._ipad, self._opad, label + body)[:MAC_LEN]

    def frame(self, mtype, payload, seq=None):
        """Build the raw frame (before COBS) with the next sequence number."""
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError("payload of %d bytes exceeds %d" % (len(payload), MAX_PAYLOAD))
        if seq is None:
            self.tx_seq = (self.tx_seq + 1) & 0xFFFFFFFF
            seq = self.tx_seq
        body = struct.pack(">BBIH", PROTOCOL_VERSION, mtype, seq, len(payload)) + bytes(payload)
        body = body + self._mac(self.direction, body)
        return body + struct.pack(">H", crc16(body))

    def encode(self, mtype, payload, seq=None):
        """Wire bytes of one message: COBS(frame) + 0x00."""
        return cobs_encode(self.frame(mtype, payload, seq)) + b"\x00"

    def _reject(self, name):
        self.stats[name] += 1
        self.last_reject = name
        return None

    def decode_frame(self, raw):
        """Verify one raw (COBS-decoded) frame; Message, or None after counting why not."""
        n = len(raw)
        if n < MIN_FRAME:
            return self._reject("truncated")
        plen = (raw[6] << 8) | raw[7]
        if plen > MAX_PAYLOAD:
            return self._reject("oversized")
        want = HEADER_LEN + plen + TRAILER_LEN
        if n < want:
            return self._reject("truncated")
        if n > want:
            return self._reject("bad_length")
        if crc16(raw[: n - 2]) != ((raw[n - 2] << 8) | raw[n - 1]):
            return self._reject("bad_crc")
        if raw[0] != PROTOCOL_VERSION:
            return self._reject("bad_version")
        body = raw[: n - TRAILER_LEN]
        if not ct_equal(self._mac(self._peer, body), raw[n - TRAILER_LEN : n - 2]):
            return self._reject("bad_mac")
        mtype = raw[1]
        if mtype not in TYPE_NAMES:
            return self._reject("unknown_type")
        if mtype not in self._may_receive:
            return self._reject("wrong_direction")
        try:
            fields = unpack_payload(mtype, body[HEADER_LEN:])
        except ProtocolError:
            return self._reject("bad_payload")
        seq = struct.unpack(">I", raw[2:6])[0]
        if mtype != HELLO and self.rx_seq is not None and _seq_le(seq, self.rx_seq):
            return self._reject("replay")
        self.rx_seq = seq
        self.stats["ok"] += 1
        return Message(mtype, seq, fields)

    def decode_wire(self, block):
        """One COBS block (no delimiter) -> Message or None."""
        try:
            raw = cobs_decode(block)
        except ProtocolError:
            return self._reject("garbage")
        return self.decode_frame(raw)

    def feed(self, data):
        """Bytes from the line -> list of verified Messages (rejects are counted, never raised)."""
        out = []
        for block in self.reader.feed(data):
            m = self.decode_wire(block)
            if m is not None:
                out.append(m)
        return out


def _seq_le(a, b):
    """a <= b in 32-bit serial-number arithmetic (RFC 1982), so the counter may wrap."""
    return ((b - a) & 0xFFFFFFFF) < 0x80000000
