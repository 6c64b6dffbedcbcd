# edge controller wire protocol (version 2), shared by both ends.
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
#   frame = ver:u8 type:u8 seq:u32 len:u16 payload[len] mac[16] crc:u16   (big endian, ver = 2)
#   HELLO: payload in clear, mac = HMAC-SHA256(K_hello, dir || ver..payload)[:16]
#   other: payload encrypted under the link key of this pairing of boots,
#          mac = HMAC-SHA256(K_mac[dir], dir || ver..ciphertext)[:16] (encrypt-then-MAC)
#   crc   = CRC-16/CCITT-FALSE over ver..mac (cheap line-noise check before the HMAC)
#   dir   = b"R" runtime->controller, b"C" controller->runtime
#
# The link key comes from a HELLO exchange in which each side contributes a fresh
# 16-byte random and echoes the peer's; see Codec below and PROTOCOL.md section 2.

import hashlib
import struct

PROTOCOL_VERSION = 2

MAC_LEN = 16
NONCE_LEN = 16
RAND_LEN = 16  # each side's handshake random
KEY_LEN = 32
HEADER_LEN = 8
TRAILER_LEN = MAC_LEN + 2
MIN_FRAME = HEADER_LEN + TRAILER_LEN
MAX_PAYLOAD = 200
MAX_FRAME = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN
# COBS adds one byte per 254 plus one; anything longer between delimiters is junk.
MAX_ENCODED = MAX_FRAME + MAX_FRAME // 254 + 1
MAX_TEXT = 64
# START: session_id, nonce, deadline_ms, tlen = 25 bytes, then the 1:1 template (biometric,
# encrypted like every payload but HELLO's). 175 bytes leaves room for a 128-d int8
# embedding plus its header.
START_FIXED = 4 + NONCE_LEN + 4 + 1
MAX_TEMPLATE = MAX_PAYLOAD - START_FIXED

DIR_RUNTIME = b"R"  # frames sent by the runtime (edge)
DIR_CONTROLLER = b"C"  # frames sent by the controller (firmware)

# message types
KEYED = 0  # not on the wire: Codec.feed() reports "a new link key is in force" with it
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
    "old_version",  # a protocol v1 frame: the peer runs old firmware / an old runtime
    "no_key",  # a frame that needs the link key before the handshake completed
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


try:  # CPython: the same CRC in C (binascii.crc_hqx is CRC-CCITT, poly 0x1021, no reflection)
    from binascii import crc_hqx as _crc_hqx

    if _crc_hqx(b"123456789", 0xFFFF) == 0x29B1:
        _crc16_py = crc16

        def crc16(data, crc=0xFFFF):  # noqa: F811 - the fast path of the function above
            return _crc_hqx(bytes(data), crc)
except ImportError:  # MicroPython: the table version above
    pass


# ---------------------------------------------------------------- HMAC-SHA256
# Some MicroPython ports have hashlib.sha256 but no hmac module: RFC 2104 by hand.


def _pads(key):
    if len(key) > 64:
        key = hashlib.sha256(key).digest()
    key = bytes(key) + bytes(64 - len(key))
    ipad = bytes([b ^ 0x36 for b in key])
    opad = bytes([b ^ 0x5C for b in key])
    if _HASH_COPY:
        # CPython: hash the pads once per key and copy the state per message
        return (ipad, opad, hashlib.sha256(ipad), hashlib.sha256(opad))
    return (ipad, opad, None, None)


def hmac_sha256(key, msg):
    return _hmac(_pads(key), msg)


def _hmac(pads, msg):
    if pads[2] is not None:
        h = pads[2].copy()
        h.update(msg)
        inner = h.digest()
        h = pads[3].copy()
        h.update(inner)
        return h.digest()
    return _hmac_pads(pads[0], pads[1], msg)


def _hmac_pads(ipad, opad, msg):
    h = hashlib.sha256(ipad)
    h.update(msg)
    inner = h.digest()
    h = hashlib.sha256(opad)
    h.update(inner)
    return h.digest()


_HASH_COPY = hasattr(hashlib.sha256(), "copy")  # MicroPython's sha256 has no copy()


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
    out = bytearray()
    for part in bytes(data).split(b"\x00"):
        # each zero-free run becomes code blocks of at most 254 data bytes
        while len(part) >= 254:
            out.append(0xFF)
            out.extend(part[:254])
            part = part[254:]
        out.append(len(part) + 1)
        out.extend(part)
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

    Accepted: exactly 32 random raw bytes, or
    64 hex digits (surrounding whitespace and one trailing newline are fine).
    Refused (ProtocolError): anything else, including 32 printable characters: that
    is a passphrase typed by hand (about 200 bits at best, often far fewer), not a
    random 256-bit key.
    """
    data = bytes(data)
    if len(data) == KEY_LEN:
        printable = True
        for b in data:
            if b < 0x20 or b > 0x7E:
                printable = False
                break
        if not printable:
            return data
        if _is_hex(data.decode().strip()):
            # 32 hex digits are a 128-bit key written as hex, not 32 raw bytes: refuse the ambiguity
            raise ProtocolError("key looks like hex but is not 64 hex digits; make one with `edge bridge keygen PATH`")
        raise ProtocolError("key is 32 printable characters, a passphrase rather than a random key; "
                            "make one with `edge bridge keygen PATH` (64 hex digits)")
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


# ---------------------------------------------------------------- key schedule
# Everything derives from the pre-shared key (PSK) with HMAC-SHA256 only, so a port
# needs nothing but hashlib.sha256 (MicroPython's WebAssembly port has no AES).
#
#   K_hello     = HMAC(PSK, "edge-link v2 hello")                  MACs HELLO frames
#   PRK         = HMAC(PSK, "edge-link v2 key" || rand_C || rand_R) one per handshake
#   K_mac[d]    = HMAC(PRK, "mac" || d)                            d = "C" or "R" (sender)
#   K_enc[d]    = HMAC(PRK, "enc" || d)
#   keystream   = HMAC(K_enc[d], seq:u32 || i:u8), i = 0, 1, ...   32 bytes per block
#
# The keystream is a PRF in counter mode: (key, direction, seq) never repeats because
# sequence numbers restart only under a new key, so no keystream byte is used twice.

LABEL_HELLO = b"edge-link v2 hello"
LABEL_KEY = b"edge-link v2 key"


def derive_keys(psk, rand_c, rand_r):
    """The four per-handshake keys as a dict {"macC", "macR", "encC", "encR"} (bytes)."""
    prk = hmac_sha256(psk, LABEL_KEY + bytes(rand_c) + bytes(rand_r))
    return {
        "macC": hmac_sha256(prk, b"macC"),
        "macR": hmac_sha256(prk, b"macR"),
        "encC": hmac_sha256(prk, b"encC"),
        "encR": hmac_sha256(prk, b"encR"),
    }


def _keystream_xor(pads, seq, data):
    n = len(data)
    if not n:
        return b""
    sb = struct.pack(">I", seq)
    ks = b""
    block = 0
    while len(ks) < n:
        ks += _hmac(pads, sb + bytes([block]))
        block += 1
    # one big-integer XOR instead of a loop per byte (int.from_bytes works on MicroPython too)
    x = int.from_bytes(bytes(data), "big") ^ int.from_bytes(ks[:n], "big")
    return x.to_bytes(n, "big")


def encrypt(enc_key, seq, data):
    """PRF-CTR under ``enc_key`` for the frame ``seq`` (also decrypts: it is an XOR)."""
    return _keystream_xor(_pads(enc_key), seq, data)


# ---------------------------------------------------------------- payloads


def _text_bytes(text):
    b = text.encode("utf-8")
    while len(b) > MAX_TEXT:
        text = text[:-1]
        b = text.encode("utf-8")
    return b


def _text(b):
    return str(bytes(b), "utf-8")


HELLO_REPLY = 0x01  # HELLO flag: "answer with your HELLO" (I hold no key with your current random)
HELLO_BOOT = 0x02  # HELLO flag: "I have no session state" (booted / opened the port, no key yet)
ZERO_RAND = bytes(RAND_LEN)


def pack_hello(info, flags=0, rand=ZERO_RAND, echo=ZERO_RAND):
    """info: list of (key, value) string pairs, e.g. [("board", "rpi5"), ("runtime", "0.1.0")]."""
    if len(rand) != RAND_LEN or len(echo) != RAND_LEN:
        raise ProtocolError("HELLO randoms must be %d bytes" % RAND_LEN)
    out = bytearray([PROTOCOL_VERSION, flags])
    out.extend(rand)
    out.extend(echo)
    out.append(0)
    count_at = len(out) - 1
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
    out[count_at] = count
    return bytes(out)


def pack_start(session_id, nonce, deadline_ms=0, template=b""):
    """deadline_ms: milliseconds LEFT of the session when this START is sent (0 = none), so a
    START repeated after a loss tells the runtime the true remaining time."""
    if len(nonce) != NONCE_LEN:
        raise ProtocolError("nonce must be %d bytes" % NONCE_LEN)
    if len(template) > MAX_TEMPLATE:
        raise ProtocolError("template of %d bytes exceeds %d" % (len(template), MAX_TEMPLATE))
    return (struct.pack(">I", session_id) + bytes(nonce) + struct.pack(">IB", deadline_ms or 0, len(template))
            + bytes(template))


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
        return pack_hello(f.get("info", ()), f.get("flags", 0), f.get("rand", ZERO_RAND), f.get("echo", ZERO_RAND))
    if mtype == START:
        return pack_start(f["session_id"], f["nonce"], f.get("deadline_ms", 0), f.get("template", b""))
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
        if self.type == KEYED:
            return "KEYED"
        return TYPE_NAMES.get(self.type, str(self.type))

    def __repr__(self):
        f = self.fields
        if "template" in f:
            f = dict(f)
            f["template"] = "<%d bytes>" % len(f["template"])  # biometric: never in a repr
        return "Message(%s seq=%d %r)" % (self.name, self.seq, f)


def unpack_payload(mtype, p):
    """Payload bytes -> dict of fields; ProtocolError if the layout does not fit the type."""
    n = len(p)
    try:
        if mtype == HELLO:
            if n < 3 + 2 * RAND_LEN:
                raise ProtocolError("short HELLO")
            proto, flags = p[0], p[1]
            rand = bytes(p[2 : 2 + RAND_LEN])
            echo = bytes(p[2 + RAND_LEN : 2 + 2 * RAND_LEN])
            i = 2 + 2 * RAND_LEN
            count = p[i]
            i += 1
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
            if rand == ZERO_RAND:
                raise ProtocolError("HELLO without a random")
            return {"proto": proto, "flags": flags, "rand": rand, "echo": echo, "info": info}
        if mtype == START:
            if n < START_FIXED:
                raise ProtocolError("short START")
            sid = struct.unpack(">I", p[0:4])[0]
            dl, tl = struct.unpack(">IB", p[4 + NONCE_LEN : START_FIXED])
            if tl > MAX_TEMPLATE or n != START_FIXED + tl:
                raise ProtocolError("START length")
            return {"session_id": sid, "nonce": bytes(p[4 : 4 + NONCE_LEN]), "deadline_ms": dl,
                    "template": bytes(p[START_FIXED:])}
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


def _default_random(n):
    import os

    return os.urandom(n)


class _Keys:
    """One handshake's keys, as HMAC pads (computed once, used for every frame)."""

    def __init__(self, psk, rand_c, rand_r, direction, peer):
        k = derive_keys(psk, rand_c, rand_r)
        d = direction.decode()
        p = peer.decode()
        self.tx_mac = _pads(k["mac" + d])
        self.tx_enc = _pads(k["enc" + d])
        self.rx_mac = _pads(k["mac" + p])
        self.rx_enc = _pads(k["enc" + p])


class Codec:
    """One end of the link: the handshake, framing, encryption and verification.

    ``direction`` is this end's own label (DIR_RUNTIME or DIR_CONTROLLER); received
    frames are checked against the peer's. ``info`` goes into this end's HELLOs.
    ``random_bytes(n)`` must be a real RNG (os.urandom, the board's TRNG).

    Handshake (PROTOCOL.md section 2): ``hello()`` gives the HELLO to send (at start,
    and about every second while ``keyed`` is False or the link is down). A received
    HELLO is answered through ``outbox`` (wire bytes the caller must write after
    ``feed``), and when both randoms are known on both sides each installs the
    derived key; ``feed`` then yields a KEYED pseudo-message (fields ``boot``: the
    peer started without session state, ``epoch``). Every rejected frame bumps one
    counter in ``stats``; nothing raises.
    """

    def __init__(self, key, direction, info=(), random_bytes=None):
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
        self.info = list(info)
        self._psk = bytes(key)
        self._random = random_bytes or _default_random
        self._hello_pads = _pads(hmac_sha256(self._psk, LABEL_HELLO))
        self.rand = self._fresh()  # my random for the next handshake; replaced once a key uses it
        self.peer_rand = ZERO_RAND  # the peer's latest random
        self._peer_boot = False
        self._keys = None  # the link key in force
        self._pair = None  # (my random, peer random) it was derived from
        self._pending = None  # (keys, my random, peer random): offered in my answer, not yet confirmed
        self._prev = None  # [keys, rx_seq] of the key replaced last: frames already in flight under it
        self.ever_keyed = False
        self.epoch = 0  # +1 per installed key
        self.tx_seq = 0
        self.rx_seq = 0
        self.stats = new_stats()
        self.reader = FrameReader(self.stats, self._reject)
        self.last_reject = None  # name of the last counter bumped by a rejection
        self.rejects = 0  # frames rejected by this codec, all counters together
        self.outbox = []  # handshake frames to write (HELLO answers)
        self._post = []  # KEYED events to report after the HELLO that caused them

    # ------------------------------------------------------------ handshake

    @property
    def keyed(self):
        return self._keys is not None

    def _fresh(self):
        r = bytes(self._random(RAND_LEN))
        if len(r) != RAND_LEN or r == ZERO_RAND:
            raise ProtocolError("random source gave %r" % (r,))
        return r

    def _derive(self, mine, theirs):
        if self.direction == DIR_CONTROLLER:
            return _Keys(self._psk, mine, theirs, self.direction, self._peer)
        return _Keys(self._psk, theirs, mine, self.direction, self._peer)

    def _hello_wire(self, flags, rand, echo):
        if not self.ever_keyed:
            flags |= HELLO_BOOT
        return self._encode_raw(HELLO, pack_hello(self.info, flags, rand, echo), 0, None)

    def hello(self):
        """Wire bytes of a HELLO asking for an answer: start (or restart) the handshake."""
        return self._hello_wire(HELLO_REPLY, self.rand, self.peer_rand)

    def drop_key(self):
        """Forget the link key (nothing is sent or accepted but HELLO until the next handshake)."""
        self._keys = None
        self._pair = None
        self._pending = None
        self._prev = None

    def _install(self, keys, mine, theirs, out):
        # frames the peer sent under the old key before it saw ours are still accepted (with
        # the old replay window) until its first frame under the new key arrives
        self._prev = [self._keys, self.rx_seq] if self._keys is not None else None
        self._keys = keys
        self._pair = (mine, theirs)
        self._pending = None
        self.tx_seq = 0
        self.rx_seq = 0
        self.epoch += 1
        self.ever_keyed = True
        if mine == self.rand:
            self.rand = self._fresh()  # a random makes one key, never two
        boot = self._peer_boot and theirs == self.peer_rand
        out.append(Message(KEYED, 0, {"boot": boot, "epoch": self.epoch}))

    def _on_hello(self, m, out):
        r, e = m.rand, m.echo
        if self._pair is not None and self._pair[1] == r and self._pair[0] == e:
            # the HELLO behind the key in force (a crossed or repeated confirmation)
            if m.flags & HELLO_REPLY:
                self.outbox.append(self._hello_wire(0, e, r))
            return
        if r != self.peer_rand:
            self.peer_rand = r
            self._peer_boot = bool(m.flags & HELLO_BOOT)
        elif m.flags & HELLO_BOOT:
            self._peer_boot = True
        if e == self.rand:
            # the peer holds my current random and I hold its: both derive the same key now
            mine = self.rand
            self._install(self._derive(mine, r), mine, r, out)
            if m.flags & HELLO_REPLY:
                self.outbox.append(self._hello_wire(0, mine, r))  # confirmation: no answer wanted
            return
        # the peer does not know my current random (it restarted, or this HELLO is old):
        # offer it; the key in force stays until the new one is confirmed
        self._pending = (self._derive(self.rand, r), self.rand, r)
        self.outbox.append(self._hello_wire(HELLO_REPLY, self.rand, r))

    # ------------------------------------------------------------ frames

    def _mac(self, pads, label, body):
        return _hmac(pads, label + body)[:MAC_LEN]

    def _encode_raw(self, mtype, payload, seq, keys):
        return cobs_encode(self._frame_raw(mtype, payload, seq, keys)) + b"\x00"

    def frame(self, mtype, payload, seq=None):
        """The raw frame (before COBS): examples and tests; encode() is what senders use."""
        if mtype == HELLO:
            return self._frame_raw(mtype, payload, 0 if seq is None else seq, None)
        if self._keys is None:
            raise ProtocolError("no link key yet: the handshake has not completed")
        if seq is None:
            self.tx_seq += 1
            seq = self.tx_seq
        return self._frame_raw(mtype, payload, seq, self._keys)

    def _frame_raw(self, mtype, payload, seq, keys):
        if len(payload) > MAX_PAYLOAD:
            raise ProtocolError("payload of %d bytes exceeds %d" % (len(payload), MAX_PAYLOAD))
        if keys is None:
            body = struct.pack(">BBIH", PROTOCOL_VERSION, mtype, seq, len(payload)) + bytes(payload)
            body = body + self._mac(self._hello_pads, self.direction, body)
        else:
            ct = _keystream_xor(keys.tx_enc, seq, payload)
            body = struct.pack(">BBIH", PROTOCOL_VERSION, mtype, seq, len(ct)) + ct
            body = body + self._mac(keys.tx_mac, self.direction, body)
        return body + struct.pack(">H", crc16(body))

    def encode(self, mtype, payload, seq=None):
        """Wire bytes of one message: COBS(frame) + 0x00, encrypted and MAC'd under the link key.

        A HELLO payload given here is framed as is (tests, tools); the handshake uses hello().
        ProtocolError if there is no link key yet (check ``keyed``).
        """
        if mtype == HELLO:
            return self._encode_raw(HELLO, payload, 0, None)
        if self._keys is None:
            raise ProtocolError("no link key yet: the handshake has not completed")
        if seq is None:
            if self.tx_seq >= 0xFFFFFFFF:
                # never wrap under one key (a keystream would repeat): renegotiate instead
                self.drop_key()
                raise ProtocolError("sequence space of this link key used up; re-handshaking")
            self.tx_seq += 1
            seq = self.tx_seq
        return self._encode_raw(mtype, payload, seq, self._keys)

    def _reject(self, name):
        self.stats[name] += 1
        self.rejects += 1
        self.last_reject = name
        return None

    def decode_frame(self, raw, out=None):
        """Verify one raw (COBS-decoded) frame; Message, or None after counting why not.

        A KEYED pseudo-message, when this frame confirms a pending key, is appended to ``out``.
        """
        if out is None:
            out = []
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
            return self._reject("old_version" if raw[0] == 1 else "bad_version")
        mtype = raw[1]
        if mtype not in TYPE_NAMES:
            return self._reject("unknown_type")
        if mtype not in self._may_receive:
            return self._reject("wrong_direction")
        body = raw[: n - TRAILER_LEN]
        mac = raw[n - TRAILER_LEN : n - 2]
        seq = struct.unpack(">I", raw[2:6])[0]
        if mtype == HELLO:
            if not ct_equal(self._mac(self._hello_pads, self._peer, body), mac):
                return self._reject("bad_mac")
            try:
                fields = unpack_payload(mtype, body[HEADER_LEN:])
            except ProtocolError:
                return self._reject("bad_payload")
            self.stats["ok"] += 1
            m = Message(mtype, seq, fields)
            # a key this HELLO completes is reported after the HELLO itself (feed() appends it)
            self._on_hello(m, self._post)
            return m
        keys = self._keys
        prev = None
        if keys is not None and ct_equal(self._mac(keys.rx_mac, self._peer, body), mac):
            self._prev = None  # the peer uses the key in force: nothing older is in flight
        else:
            pend = self._pending
            old = self._prev
            if pend is not None and ct_equal(self._mac(pend[0].rx_mac, self._peer, body), mac):
                # the peer already uses the key I offered: that confirms it
                self._install(pend[0], pend[1], pend[2], out)
                keys = pend[0]
                self._prev = None
            elif old is not None and ct_equal(self._mac(old[0].rx_mac, self._peer, body), mac):
                keys = old[0]
                prev = old
            elif keys is None and pend is None:
                return self._reject("no_key")
            else:
                return self._reject("bad_mac")
        try:
            fields = unpack_payload(mtype, _keystream_xor(keys.rx_enc, seq, body[HEADER_LEN:]))
        except ProtocolError:
            return self._reject("bad_payload")
        if prev is not None:
            if seq <= prev[1]:
                return self._reject("replay")
            prev[1] = seq
        else:
            if seq <= self.rx_seq:
                return self._reject("replay")
            self.rx_seq = seq
        self.stats["ok"] += 1
        return Message(mtype, seq, fields)

    def decode_wire(self, block, out=None):
        """One COBS block (no delimiter) -> Message or None."""
        try:
            raw = cobs_decode(block)
        except ProtocolError:
            return self._reject("garbage")
        return self.decode_frame(raw, out)

    def feed(self, data):
        """Bytes from the line -> list of verified Messages (and KEYED events), in order.

        Rejects are counted, never raised. Afterwards write ``take_outbox()`` to the line.
        """
        out = []
        for block in self.reader.feed(data):
            m = self.decode_wire(block, out)
            if m is not None:
                out.append(m)
            if self._post:
                out.extend(self._post)
                self._post = []
        return out

    def take_outbox(self):
        """Handshake frames queued by feed(), as one bytes object (b"" when none)."""
        if not self.outbox:
            return b""
        data = b"".join(self.outbox)
        self.outbox = []
        return data


def handshake(a, b, rounds=4):
    """Run the HELLO exchange between two in-memory codecs (tests, examples); True if both keyed."""
    wire_a = a.hello()
    wire_b = b""
    for _ in range(rounds):
        if wire_a:
            b.feed(wire_a)
        wire_b = b.take_outbox()
        wire_a = b""
        if wire_b:
            a.feed(wire_b)
        wire_a = a.take_outbox()
        if a.keyed and b.keyed and not wire_a:
            break
    return a.keyed and b.keyed
