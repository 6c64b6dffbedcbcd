# Controller state machine of the reference firmware.
#
# Plain Python that runs unchanged under MicroPython (main.py on the board)
# and CPython (the simulator and the tests). All board I/O goes through a
# small board object (board.py on MicroPython, sim.SimBoard on CPython):
#
#   board.ticks_ms() -> int            monotonic milliseconds (may wrap)
#   board.ticks_diff(a, b) -> int      a - b, wrap-safe
#   board.ticks_add(a, delta) -> int   a + delta, wrap-safe
#   board.uart_read() -> bytes | None  whatever arrived, never blocks
#   board.uart_write(data)
#   board.set_relay(on)                energise / de-energise the door relay
#   board.trigger_active() -> bool     level of the trigger input (True = pressed)
#   board.card_template() -> bytes     optional: the 1:1 template read from the card
#                                      that raised the trigger (b"" = liveness only)
#   board.set_led(mode)                "down", "idle", "busy", "pass", "fail", "fault"
#   board.random_bytes(n) -> bytes     from the hardware RNG (os.urandom)
#
# Fail-secure rules, all enforced here:
#   * the relay is energised only after a RESULT that verifies (MAC, sequence)
#     for the session this controller started (session id and nonce match),
#     with verdict PASS, and only for pulse_ms;
#   * no RESULT by the session deadline is a FAIL;
#   * a RESULT at or after the session deadline is refused (stale_result),
#     whatever order the frame and the timer are handled in;
#   * a FAULT from the runtime, silence past heartbeat_timeout_ms, or a frame
#     with a bad MAC never energise it, and the first two cut a running pulse;
#   * the link key is fresh per handshake (protocol v2): until a handshake
#     completes nothing but HELLO is sent or accepted, and a side that is down
#     resends HELLO every hello_retry_ms;
#   * a reboot starts with the relay off (board init) and in state DOWN.

try:
    from firmware_bridge import protocol as P
except ImportError:  # MicroPython: modules sit flat on the board's filesystem
    import protocol as P

DOWN = "down"  # no live runtime: triggers are refused
IDLE = "idle"
SESSION = "session"

_REJECT_NAMES = [n for n in P.STAT_NAMES if n != "ok"]


class ControllerConfig:
    def __init__(
        self,
        pulse_ms=1000,
        session_timeout_ms=6000,
        heartbeat_interval_ms=250,
        heartbeat_timeout_ms=750,
        start_retry_ms=300,
        debounce_ms=30,
        info=None,
        hello_retry_ms=1000,
    ):
        self.pulse_ms = pulse_ms
        self.session_timeout_ms = session_timeout_ms
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.heartbeat_timeout_ms = heartbeat_timeout_ms
        self.start_retry_ms = start_retry_ms
        self.debounce_ms = debounce_ms
        self.hello_retry_ms = hello_retry_ms
        self.info = info or [("role", "controller"), ("board", "unknown"), ("fw", "0.2.0")]


def _noop(name, fields):
    pass


class Controller:
    def __init__(self, board, key, config=None, on_event=None):
        self.board = board
        self.cfg = config or ControllerConfig()
        self.on_event = on_event or _noop
        self.codec = P.Codec(key, P.DIR_CONTROLLER, self.cfg.info, board.random_bytes)
        self.state = DOWN
        self.session_id = 0
        self.nonce = b""
        self.template = b""
        self.deadline = 0
        self.start_acked = False
        self.last_done = None  # (session_id, nonce, accepted) of the last ended session
        self.relay_on = False
        self.relay_off_at = 0
        self.sessions_started = 0
        self.sessions_ended = 0
        self.results = []  # verdict names of ended sessions, in order (for the simulator)
        board.set_relay(False)
        now = board.ticks_ms()
        self.booted = now
        self.last_rx = now
        self.last_hb_tx = now
        self.last_start_tx = now
        self.last_hello_tx = now
        self._rejects_at_rx = 0  # reject count when the last valid frame arrived
        self._trig_level = False
        self._trig_since = now
        self._trig_fired = False
        self._rejects_seen = 0
        board.set_led("down")
        self.event("boot", {"relay": False})
        # a leading delimiter ends whatever half frame the UART held before we booted
        board.uart_write(b"\x00")
        board.uart_write(self.codec.hello())

    # ------------------------------------------------------------ helpers

    def event(self, name, fields):
        fields["t_ms"] = self.board.ticks_diff(self.board.ticks_ms(), getattr(self, "booted", 0))
        self.on_event(name, fields)

    def _send(self, mtype, payload):
        if not self.codec.keyed:
            return False  # no link key: the handshake (HELLO every hello_retry_ms) comes first
        self.board.uart_write(self.codec.encode(mtype, payload))
        return True

    def _relay(self, on, why):
        if on == self.relay_on:
            return
        self.board.set_relay(on)
        self.relay_on = on
        self.event("relay", {"on": on, "why": why})

    def _hb_state(self):
        if self.state == SESSION:
            return P.S_BUSY
        if self.state == DOWN:
            return P.S_FAULT
        return P.S_IDLE

    # ------------------------------------------------------------ main loop

    def poll(self):
        """Run one step: read the UART, handle frames, check the trigger and the timers."""
        data = self.board.uart_read()
        if data:
            msgs = self.codec.feed(data)
            out = self.codec.take_outbox()
            if out:
                self.board.uart_write(out)
            for msg in msgs:
                self._handle(msg)
            self._report_rejects()
        self._check_trigger()
        self._check_timers()

    def _report_rejects(self):
        st = self.codec.stats
        total = 0
        for n in _REJECT_NAMES:
            total += st[n]
        if total != self._rejects_seen:
            self._rejects_seen = total
            self.event("rejected", {"last": self.codec.last_reject, "stats": dict(st)})

    def _need_hello(self, now):
        # down, unkeyed, or a live link gone quiet while frames fail MAC/replay checks
        # (the peer re-keyed and our answer was lost): resend HELLO until the handshake completes
        if not self.codec.keyed or self.state == DOWN:
            return True
        quiet = self.board.ticks_diff(now, self.last_rx) >= self.cfg.hello_retry_ms
        return quiet and self._rejects_seen != self._rejects_at_rx

    def _check_trigger(self):
        now = self.board.ticks_ms()
        level = bool(self.board.trigger_active())
        if level != self._trig_level:
            self._trig_level = level
            self._trig_since = now
            self._trig_fired = False
            return
        if level and not self._trig_fired and self.board.ticks_diff(now, self._trig_since) >= self.cfg.debounce_ms:
            self._trig_fired = True
            # a board with a card reader hands over the card's template; one without has no such method
            read = getattr(self.board, "card_template", None)
            self.press(read() if read else b"")

    def _check_timers(self):
        b = self.board
        now = b.ticks_ms()
        if self.relay_on and b.ticks_diff(now, self.relay_off_at) >= 0:
            self._relay(False, "pulse_end")
            b.set_led("idle" if self.state != DOWN else "down")
        if b.ticks_diff(now, self.last_hb_tx) >= self.cfg.heartbeat_interval_ms:
            self.last_hb_tx = now
            self._send(P.HEARTBEAT, P.pack_heartbeat(self._hb_state(), self.session_id if self.state == SESSION else 0))
        if self.state != DOWN and b.ticks_diff(now, self.last_rx) > self.cfg.heartbeat_timeout_ms:
            self._fault("runtime_lost", P.R_RUNTIME_LOST, notify=True)
        if b.ticks_diff(now, self.last_hello_tx) >= self.cfg.hello_retry_ms and self._need_hello(now):
            self.last_hello_tx = now
            b.uart_write(self.codec.hello())
        if self.state == SESSION:
            if b.ticks_diff(now, self.deadline) >= 0:
                self._send(P.ABORT, P.pack_abort(self.session_id, P.R_DEADLINE))
                self._end_session("FAIL", "deadline", False)
            elif not self.start_acked and b.ticks_diff(now, self.last_start_tx) >= self.cfg.start_retry_ms:
                self._send_start()

    # ------------------------------------------------------------ sessions

    def press(self, template=b""):
        """The trigger fired (button, card reader's card-present line).

        ``template``: the enrolled person's 1:1 template read from the card (at most
        P.MAX_TEMPLATE bytes; encrypted on the wire), or b"" for liveness only.
        """
        if len(template) > P.MAX_TEMPLATE:
            self.event("trigger_refused", {"why": "template_too_long"})
            return False
        if self.state == DOWN:
            self.event("trigger_refused", {"why": "runtime_down"})
            self.board.set_led("fault")
            return False
        if self.state == SESSION or self.relay_on:
            self.event("trigger_ignored", {"why": "busy"})
            return False
        self.session_id = (self.session_id + 1) & 0xFFFFFFFF or 1
        self.nonce = bytes(self.board.random_bytes(P.NONCE_LEN))
        self.template = bytes(template)
        now = self.board.ticks_ms()
        self.deadline = self.board.ticks_add(now, self.cfg.session_timeout_ms)
        self.start_acked = False
        self.state = SESSION
        self.sessions_started += 1
        self.board.set_led("busy")
        self._send_start()
        self.event("start", {"session_id": self.session_id, "nonce": _hex(self.nonce),
                             "deadline_ms": self.cfg.session_timeout_ms})
        return True

    def _send_start(self):
        now = self.board.ticks_ms()
        self.last_start_tx = now
        # the time LEFT, so a START repeated after a loss does not extend the runtime's idea of the deadline
        left = self.board.ticks_diff(self.deadline, now)
        self._send(P.START, P.pack_start(self.session_id, self.nonce, max(1, left), self.template))

    def _end_session(self, verdict, reason, accepted):
        self.last_done = (self.session_id, self.nonce, accepted)
        self.template = b""  # biometric: held for the session only
        self.state = IDLE
        self.sessions_ended += 1
        self.results.append(verdict)
        self.event("session_end", {"session_id": self.session_id, "verdict": verdict, "reason": reason})
        if verdict == "PASS":
            self.board.set_led("pass")
        elif verdict == "FAULT":
            self.board.set_led("fault")
        else:
            self.board.set_led("fail")

    def _fault(self, why, code, notify):
        """Fail secure: relay off, running session failed, no new sessions until the runtime is back."""
        self._relay(False, why)
        if self.state == SESSION:
            self._end_session("FAULT", why, False)
        self.state = DOWN
        self.board.set_led("fault")
        self.event("fault", {"why": why})
        if notify:
            self._send(P.FAULT, P.pack_fault(0, code, why))

    # ------------------------------------------------------------ frames

    def _link_up(self):
        if self.state == DOWN:
            self.state = IDLE
            self.board.set_led("idle")
            self.event("link_up", {})

    def _handle(self, m):
        t = m.type
        if t == P.KEYED:
            # a new link key is in force (sequence numbers restarted under it)
            self.last_rx = self.board.ticks_ms()
            self._rejects_at_rx = self._rejects_seen
            self.event("keyed", {"epoch": m.epoch, "boot": m.boot})
            if m.boot and self.state == SESSION:
                # the runtime restarted: the session it was running is gone
                self._end_session("FAULT", "runtime_restarted", False)
            self._link_up()
            return
        if t == P.HELLO:
            # liveness is proven by keyed frames only (a HELLO can be an old recording)
            self.event("hello", {"proto": m.proto, "info": dict(m.info)})
            return
        if t == P.HEARTBEAT:
            if m.state != P.S_FAULT:
                self.last_rx = self.board.ticks_ms()
                self._rejects_at_rx = self._rejects_seen
                self._link_up()
            return
        if t == P.FAULT:
            self.event("runtime_fault", {"session_id": m.session_id, "reason": m.reason, "text": m.text})
            self._fault("runtime_fault", P.R_NONE, notify=False)
            return
        if self.state != DOWN:
            self.last_rx = self.board.ticks_ms()
            self._rejects_at_rx = self._rejects_seen
        if t == P.ACK:
            if m.acked_type == P.START and self.state == SESSION and m.session_id == self.session_id:
                if not self.start_acked:
                    self.start_acked = True
                    self.event("start_acked", {"session_id": m.session_id})
            return
        if t == P.PROMPT:
            if self.state == SESSION and m.session_id == self.session_id:
                self.start_acked = True  # a PROMPT proves the runtime has the session
                self.event("prompt", {"session_id": m.session_id, "code": m.code, "text": m.text})
            return
        if t == P.RESULT:
            self._on_result(m)

    def _on_result(self, m):
        st = self.codec.stats
        if self.state == SESSION and m.session_id == self.session_id:
            if self.board.ticks_diff(self.board.ticks_ms(), self.deadline) >= 0:
                # at or after the deadline: too late, even if the timer has not run yet this poll
                st["stale_result"] += 1
                self.codec.last_reject = "stale_result"
                self._send(P.ABORT, P.pack_abort(self.session_id, P.R_DEADLINE))
                self._end_session("FAIL", "deadline", False)
                return
            if not P.ct_equal(m.nonce, self.nonce):
                st["wrong_nonce"] += 1
                self.codec.last_reject = "wrong_nonce"
                return
            self._send(P.ACK, P.pack_ack(P.RESULT, m.seq, m.session_id))
            verdict = P.VERDICT_NAMES.get(m.verdict, "FAIL")
            self.event("result", {"session_id": m.session_id, "verdict": verdict, "reason": m.reason,
                                  "elapsed_ms": m.elapsed_ms, "verified": True})
            self.event("ack", {"session_id": m.session_id, "acked": "RESULT", "acked_seq": m.seq})
            passed = m.verdict == P.V_PASS
            self._end_session(verdict if m.verdict in P.VERDICT_NAMES else "FAIL", "result", True)
            if passed:
                self.relay_off_at = self.board.ticks_add(self.board.ticks_ms(), self.cfg.pulse_ms)
                self._relay(True, "pass")
            return
        done = self.last_done
        if done is not None and m.session_id == done[0] and P.ct_equal(m.nonce, done[1]):
            if done[2]:
                # our ACK was lost and the runtime repeats: ACK again, act never twice
                st["duplicate"] += 1
                self.codec.last_reject = "duplicate"
                self._send(P.ACK, P.pack_ack(P.RESULT, m.seq, m.session_id))
            else:
                st["stale_result"] += 1  # too late: the session already failed
                self.codec.last_reject = "stale_result"
            return
        if m.session_id == self.session_id:
            st["wrong_nonce"] += 1
            self.codec.last_reject = "wrong_nonce"
        else:
            st["stale_result"] += 1
            self.codec.last_reject = "stale_result"


def _hex(b):
    return "".join(["%02x" % x for x in b])
