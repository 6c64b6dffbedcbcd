# A scripted controller session that runs on MicroPython and CPython alike; the test
# compares the two transcripts byte for byte. No f-strings with nested quotes, no
# annotations: this file is executed by MicroPython's WebAssembly port.
try:
    from firmware_bridge import protocol as P
    from firmware_bridge import controller as C
except ImportError:
    import protocol as P
    import controller as C

KEY = bytes(range(32))


class Board:
    def __init__(self):
        self.now = 0
        self.rx = bytearray()
        self.out = []
        self.relay_log = []
        self.trig = False
        self.n = 0

    def ticks_ms(self):
        return self.now

    def ticks_diff(self, a, b):
        return a - b

    def ticks_add(self, a, d):
        return a + d

    def uart_read(self):
        if not self.rx:
            return None
        d = bytes(self.rx)
        self.rx = bytearray()
        return d

    def uart_write(self, d):
        self.out.append(bytes(d))

    def set_relay(self, on):
        self.relay_log.append((self.now, 1 if on else 0))

    def trigger_active(self):
        return self.trig

    def set_led(self, m):
        pass

    def random_bytes(self, n):
        self.n += 1
        return bytes([(self.n * 7 + i) & 0xFF for i in range(n)])


def hexs(b):
    return "".join(["%02x" % x for x in b])


def run():
    b = Board()
    lines = []
    ctl = C.Controller(b, KEY, C.ControllerConfig(pulse_ms=700, heartbeat_timeout_ms=5000),
                       on_event=lambda n, f: lines.append("event " + n))
    seed = [100]

    def rt_random(n):
        seed[0] += 1
        return bytes([(seed[0] * 13 + i) & 0xFF for i in range(n)])

    rt = P.Codec(KEY, P.DIR_RUNTIME, [("role", "runtime")], rt_random)
    seen = [0]

    def step(ms):
        for _ in range(ms // 10):
            b.now += 10
            ctl.poll()
            # the runtime side reads what the controller wrote and answers HELLOs
            msgs = []
            while seen[0] < len(b.out):
                msgs.extend(rt.feed(b.out[seen[0]]))
                seen[0] += 1
            b.rx.extend(rt.take_outbox())
            for m in msgs:
                lines.append("rt " + m.name)
                if m.type == P.START:
                    got[0] = m

    got = [None]
    step(40)  # boot HELLO -> answer -> confirmation: keyed on both sides
    lines.append("keyed %d %d" % (ctl.codec.epoch, rt.epoch))
    ctl.press(bytes(range(140)))  # with a 1:1 template (encrypted on the wire)
    step(60)
    start = got[0]
    lines.append("template " + hexs(start.template))
    b.rx.extend(rt.encode(P.PROMPT, P.pack_prompt(start.session_id, 1, "Look at the camera")))
    b.rx.extend(b"\x01\x02garbage\x00")
    b.rx.extend(rt.encode(P.RESULT, P.pack_result(start.session_id, b"\x00" * 16, 1, 1, 5)))  # wrong nonce
    b.rx.extend(rt.encode(P.RESULT, P.pack_result(start.session_id, start.nonce, 1, 1, 420, 3, 9)))
    step(1000)
    for w in b.out:
        lines.append("tx " + hexs(w))
    lines.append("relay " + " ".join(["%d:%d" % (t, v) for t, v in b.relay_log]))
    st = ctl.codec.stats
    lines.append("stats " + " ".join(["%s=%d" % (k, st[k]) for k in P.STAT_NAMES]))
    lines.append("crc " + hexs(P.crc16(b"123456789").to_bytes(2, "big")))
    lines.append("hmac " + hexs(P.hmac_sha256(b"k" * 100, b"m" * 100)))
    lines.append("key " + hexs(P.parse_key(hexs(KEY).encode())))
    lines.append("ks " + hexs(P.encrypt(KEY, 7, bytes(70))))
    try:
        P.parse_key(b"correct horse battery staple 123")
        lines.append("passphrase accepted")
    except P.ProtocolError:
        lines.append("passphrase refused")
    return lines


for line in run():
    print(line)
