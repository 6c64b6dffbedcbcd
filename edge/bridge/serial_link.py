"""The runtime's end of the controller link: a Trigger and a VerdictSink on one serial port.

A reader thread parses frames, runs the v2 handshake (a fresh link key per
pairing of boots; HELLO resent every second while the link is down), sends
HEARTBEAT, turns START into a :class:`SessionRequest` and ABORT into
``request.cancel.set()``. The runner's thread sends PROMPT and RESULT; RESULT is
repeated every ``result_retry_ms`` until the controller ACKs it or shortly before
the controller's deadline. See firmware_bridge/PROTOCOL.md for the wire format.

Idle cost: the reader blocks in ``select()`` on the port and a wake-up pipe until a
byte arrives or the next timer (heartbeat, link timeout) is due, so between sessions
the link thread wakes once per controller heartbeat (4 times a second with the defaults)
and sends its own heartbeat in that same wake-up, not 50 times a second to poll.
"""

from __future__ import annotations

import logging
import os
import queue
import select
import threading
import time
from typing import Callable

from firmware_bridge import protocol as P
from firmware_bridge.challenge import challenge_seed
from edge.bridge.base import SessionRequest, wait_for_request
from edge.errors import BridgeError
from edge.types import Prompt, Reason, Verdict

log = logging.getLogger(__name__)

WRITE_TIMEOUT_S = 1.0  # a line that takes no bytes for this long has failed (well under WatchdogSec / 2)


def open_serial(port: str, baudrate: int):
    """Any device pyserial understands: /dev/ttyAMA0, /dev/ttyUSB0, a pty path, loop://."""
    import serial

    try:
        # non-blocking reads: the reader thread blocks in select() on the fd instead
        # (URLs without an fd, such as loop://, fall back to a 50 ms read timeout)
        ser = serial.serial_for_url(port, baudrate=baudrate, timeout=0, write_timeout=WRITE_TIMEOUT_S)
        if _fileno(ser) is None:
            ser.timeout = 0.05
        return ser
    except (serial.SerialException, OSError, ValueError) as err:
        raise BridgeError(
            f"cannot open serial port {port!r} ({err}); check serial.port, that the device exists and that "
            f"the service user may use it (group dialout)"
        ) from err


def _fileno(ser) -> int | None:
    try:
        fd = ser.fileno()
    except Exception:  # loop://, socket:// wrappers, test doubles
        return None
    return fd if isinstance(fd, int) and fd >= 0 else None


class SerialBridge:
    """Trigger + VerdictSink over the authenticated serial protocol."""

    # the runner answers a START that arrives during camera recovery with FAULT(CAMERA_LOST) at once
    answers_while_recovering = True

    def __init__(
        self,
        port,
        key: bytes,
        *,
        baudrate: int = 115200,
        heartbeat_interval_s: float = 0.25,
        heartbeat_timeout_s: float = 0.75,
        result_retry_ms: int = 200,
        result_timeout_ms: int = 3000,
        result_guard_ms: int = 150,
        hello_retry_s: float = 1.0,
        device_info: tuple[tuple[str, str], ...] = (),
        clock: Callable[[], float] = time.monotonic,
        keepalive: Callable[[], None] | None = None,
    ):
        """``port`` is a device spec (opened with pyserial) or an already open serial-like
        object with read/write/in_waiting/close. ``keepalive`` is called in every wait of
        :meth:`result` (the systemd watchdog's kick), so delivery retries never starve it."""
        self._ser = open_serial(port, baudrate) if isinstance(port, str) else port
        self._fd = _fileno(self._ser)
        self.port_name = port if isinstance(port, str) else getattr(port, "name", repr(port))
        self.device_info = tuple((str(k), str(v)) for k, v in device_info)
        self._codec = P.Codec(key, P.DIR_RUNTIME, self.device_info)
        # The challenge order is HMAC(pre-shared key, nonce || "challenge"): the controller can know it
        # whatever session key the handshake derived.
        self._challenge_key = bytes(key)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.result_retry_s = result_retry_ms / 1000.0
        self.result_timeout_s = result_timeout_ms / 1000.0
        # stop repeating RESULT this long before the controller's deadline: one arriving later is refused
        self.result_guard_s = result_guard_ms / 1000.0
        self.hello_retry_s = hello_retry_s
        self.keepalive = keepalive
        self._clock = clock
        self._wlock = threading.Lock()  # codec.encode (sequence numbers) + write
        self._slock = threading.Lock()  # session state below
        self._requests: queue.Queue[SessionRequest] = queue.Queue()
        self._current: SessionRequest | None = None
        # keyed by (session_id, nonce): a rebooted controller reuses session ids
        self._started_at: dict[tuple[int, bytes], float] = {}
        self._aborted: set[tuple[int, bytes]] = set()
        self._acks: dict[tuple[int, bytes], threading.Event] = {}  # woken by ACK, ABORT, close
        self._acked: set[tuple[int, bytes]] = set()
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._closed = False
        self.link_up = False
        self.controller_info: dict[str, str] = {}
        self.controller_state: int | None = None
        self._last_rx = clock()
        self._last_hb = 0.0
        self._last_hello = clock()
        self._rejects_at_rx = 0
        self._last_reject_log = -1e9
        self._old_version_logged = False
        self._woke_by_rx = False
        self._wake_r, self._wake_w = os.pipe()  # close() wakes the reader's select() at once
        try:
            with self._wlock:
                self._write(b"\x00")  # end whatever half frame the line held
                self._write(self._codec.hello())
        except BaseException:
            self._ser.close()
            os.close(self._wake_r)
            os.close(self._wake_w)
            raise
        self._thread = threading.Thread(target=self._run, name="edge-serial-bridge", daemon=True)
        self._thread.start()

    # ---------------------------------------------------------------- introspection

    @property
    def stats(self) -> dict[str, int]:
        """Frame counters (ok, bad_mac, replay, stale_result, ...): safe to log."""
        return dict(self._codec.stats)

    # ---------------------------------------------------------------- Trigger

    def wait(self, timeout_s: float) -> SessionRequest | None:
        return wait_for_request(self._requests, timeout_s, self._raise_if_failed)

    # ---------------------------------------------------------------- VerdictSink

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        if request.origin != "serial" or not self._is_current(request):
            return
        self._send(P.PROMPT, P.pack_prompt(request.session_id, int(prompt), prompt.text))

    def result(self, request: SessionRequest, verdict: Verdict) -> bool:
        """Send RESULT and repeat it until ACKed or shortly before the controller's deadline;
        True if the controller ACKed. ``keepalive`` is called in every wait."""
        if request.origin != "serial" or len(request.nonce) != P.NONCE_LEN:
            return False  # a local session: there is no controller nonce to bind
        sid = request.session_id
        key = (sid, request.nonce)
        with self._slock:
            if key in self._aborted or key not in self._started_at:
                # the controller ended this session itself (ABORT, a newer START, its deadline):
                # it would count a RESULT as stale
                log.info("session %d was ended by the controller; RESULT not sent", sid)
                self._forget(key)
                return False
            acked = self._acks.setdefault(key, threading.Event())
            started = self._started_at[key]
        if request.deadline_ms:
            # START carries the time left when it was sent; stop early enough that no repeat
            # arrives at or after the controller's deadline (it would be refused as stale)
            deadline = started + request.deadline_ms / 1000.0 - self.result_guard_s
        else:
            deadline = self._clock() + self.result_timeout_s  # no controller deadline: own budget
        payload = P.pack_result(
            sid,
            request.nonce,
            verdict.kind.code,
            int(verdict.reason),
            max(0, int(verdict.elapsed_ms)),
            max(0, verdict.frames_used),
            max(0, verdict.frames_seen),
        )
        sent = 0
        try:
            while True:
                self._raise_if_failed()
                if self._clock() >= deadline:
                    log.warning("session %d: RESULT not ACKed by the deadline (%d sends); the controller fails it",
                                sid, sent)
                    return False
                if self._send(P.RESULT, payload):
                    sent += 1
                left = deadline - self._clock()
                if self.keepalive is not None:
                    self.keepalive()
                acked.wait(max(0.0, min(self.result_retry_s, left)))
                with self._slock:
                    if key in self._acked:
                        log.info("session %d: RESULT %s ACKed after %d send(s)", sid, verdict.kind.value, sent)
                        return True
                    if key in self._aborted or self._stop.is_set():
                        log.warning("session %d: RESULT abandoned (session aborted or link closing)", sid)
                        return False
        finally:
            with self._slock:
                self._forget(key)

    def fault(self, reason: Reason = Reason.INTERNAL_ERROR, detail: str = "", session_id: int = 0) -> None:
        """Tell the controller something is broken (it fails any running session, relay off)."""
        try:
            self._send(P.FAULT, P.pack_fault(session_id, int(reason), detail))
        except BridgeError as err:
            log.warning("FAULT could not be sent: %s", err)

    def close(self) -> None:
        if self._closed:
            return
        if self._error is None:
            # a clean stop is still a stop: the controller must not wait for a heartbeat timeout
            self.fault(Reason.SHUTDOWN, "runtime stopping")
        self._closed = True
        self._stop.set()
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        self._thread.join(timeout=2.0)
        if self._thread.is_alive():
            log.warning("serial reader thread did not stop within 2 s")
        with self._slock:
            for ev in self._acks.values():
                ev.set()
        try:
            self._ser.close()
        except Exception as err:  # closing a vanished device must not mask the real shutdown cause
            log.debug("serial close: %s", err)
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- internals

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise BridgeError(f"serial link {self.port_name} failed: {self._error}") from self._error

    def _is_current(self, request: SessionRequest) -> bool:
        with self._slock:
            return self._current is request

    def _forget(self, key: tuple[int, bytes]) -> None:
        self._acks.pop(key, None)
        self._started_at.pop(key, None)
        self._aborted.discard(key)
        self._acked.discard(key)
        cur = self._current
        if cur is not None and (cur.session_id, cur.nonce) == key:
            self._current = None

    def _write(self, data: bytes) -> None:
        try:
            if self._fd is None:
                self._ser.write(data)
                return
            # straight to the (non-blocking) fd: pyserial's write adds a select() per call
            view = memoryview(data)
            end = None
            while view:
                try:
                    view = view[os.write(self._fd, view):]
                except BlockingIOError:
                    end = end or time.monotonic() + WRITE_TIMEOUT_S
                    left = end - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"output blocked for {WRITE_TIMEOUT_S:.0f} s") from None
                    select.select([], [self._fd], [], left)
        except Exception as err:
            raise BridgeError(f"write to serial port {self.port_name} failed: {err}") from err

    def _send(self, mtype: int, payload: bytes) -> bool:
        """Frame and write one message; False (nothing sent) while there is no link key."""
        if self._closed:
            return False
        with self._wlock:
            if not self._codec.keyed:
                return False  # the handshake comes first; RESULT and START are repeated anyway
            self._write(self._codec.encode(mtype, payload))
        return True

    def _next_wait(self) -> float:
        """Seconds until the next timer is due: the reader sleeps exactly that long."""
        now = self._clock()
        due = self._last_hb + self._hb_timer_s()
        if self.link_up:
            due = min(due, self._last_rx + self.heartbeat_timeout_s)
        with self._slock:
            cur = self._current
            started = self._started_at.get((cur.session_id, cur.nonce)) if cur is not None else None
        if cur is not None and cur.deadline_ms and started is not None and not cur.cancel.is_set():
            due = min(due, started + cur.deadline_ms / 1000.0)
        if self._need_hello(now):
            due = min(due, self._last_hello + self.hello_retry_s)
        return min(max(0.0, due - now), 1.0)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                timeout = self._next_wait()
                try:
                    if self._fd is not None:
                        ready, _, _ = select.select([self._fd, self._wake_r], [], [], timeout)
                        if self._wake_r in ready or self._stop.is_set():
                            break
                        data = b""
                        if ready:
                            # straight from the fd (pyserial opened it non-blocking): one syscall
                            try:
                                data = os.read(self._fd, 4096)
                            except BlockingIOError:
                                data = None
                            if data == b"":
                                raise BridgeError("the device reports data but returned none (unplugged?)")
                            data = data or b""
                    else:
                        n = self._ser.in_waiting
                        data = self._ser.read(n if n > 0 else 1)
                except Exception as err:
                    raise BridgeError(f"read from serial port {self.port_name} failed: {err}") from err
                self._woke_by_rx = bool(data)
                if data:
                    self.on_bytes(data)
                self._tick()
        except BaseException as err:  # fail secure: every waiter learns the link is gone
            if self._stop.is_set():
                return
            self._error = err
            log.error("serial link %s failed: %s", self.port_name, err)
            self._cancel_current("serial link failed")
            with self._slock:
                for ev in self._acks.values():
                    ev.set()

    def on_bytes(self, data: bytes) -> None:
        """Parse bytes from the line and act on every verified message (the reader thread's body)."""
        before = self._rejects()
        with self._wlock:  # the codec's key and sequence state is shared with the senders
            msgs = self._codec.feed(data)
            out = self._codec.take_outbox()
            if out and not self._closed:
                self._write(out)
        for msg in msgs:
            self._handle(msg)
        after = self._rejects()
        if after != before:
            now = self._clock()
            st = self._codec.stats
            if st["old_version"] and not self._old_version_logged:
                self._old_version_logged = True
                log.error("the controller speaks protocol v1; this runtime speaks v%d: update the controller "
                          "firmware (firmware_bridge/) to the same release", P.PROTOCOL_VERSION)
            if now - self._last_reject_log >= 1.0:  # a noisy line must not flood the journal
                self._last_reject_log = now
                log.warning("dropping invalid frames from the controller (last: %s; counters: %s)",
                            self._codec.last_reject, {k: v for k, v in self.stats.items() if v and k != "ok"})

    def _rejects(self) -> int:
        return self._codec.rejects

    def _need_hello(self, now: float) -> bool:
        # down, unkeyed, or gone quiet while frames fail MAC/replay checks (the controller re-keyed
        # and our answer was lost): resend HELLO until the handshake completes
        if not self._codec.keyed or not self.link_up:
            return True
        return now - self._last_rx >= self.hello_retry_s and self._rejects() != self._rejects_at_rx

    def _hb_timer_s(self) -> float:
        # while the controller's heartbeats flow they trigger ours; the timer is the fallback,
        # late enough that a controller heartbeat (every interval) normally comes first
        return self.heartbeat_interval_s * (1.5 if self.link_up else 1.0)

    def _tick(self) -> None:
        now = self._clock()
        if now - self._last_hello >= self.hello_retry_s and self._need_hello(now):
            self._last_hello = now
            with self._wlock:
                if not self._closed:
                    self._write(self._codec.hello())
        # Piggyback: a heartbeat due within half an interval goes out now, while the thread is
        # awake for the controller's heartbeat anyway (one wake-up per exchange instead of two);
        # the timer (_hb_timer_s) only fires when the controller is silent.
        if now - self._last_hb >= self.heartbeat_interval_s / 2 and (
                self._woke_by_rx or now - self._last_hb >= self._hb_timer_s()):
            self._last_hb = now
            with self._slock:
                cur = self._current
            self._send(P.HEARTBEAT, P.pack_heartbeat(P.S_BUSY if cur else P.S_IDLE, cur.session_id if cur else 0))
        with self._slock:
            cur = self._current
            started = self._started_at.get((cur.session_id, cur.nonce)) if cur is not None else None
        if cur is not None and cur.deadline_ms and started is not None and not cur.cancel.is_set() \
                and now - started > cur.deadline_ms / 1000.0:
            # the controller has failed this session by now; stop using the camera for it
            self._cancel_current("controller deadline passed")
        if self.link_up and now - self._last_rx > self.heartbeat_timeout_s:
            self.link_up = False
            log.warning("controller silent for %.1f s: link lost", now - self._last_rx)
            self._cancel_current("controller lost")

    def _cancel_current(self, why: str) -> None:
        with self._slock:
            cur = self._current
            if cur is not None:
                key = (cur.session_id, cur.nonce)
                self._aborted.add(key)
                ev = self._acks.get(key)
                if ev is not None:
                    ev.set()
        if cur is not None and not cur.cancel.is_set():
            log.warning("session %d cancelled: %s", cur.session_id, why)
            cur.cancel.set()

    def _alive(self) -> None:
        self._last_rx = self._clock()
        self._rejects_at_rx = self._rejects()
        if not self.link_up:
            self.link_up = True
            log.info("controller link up on %s", self.port_name)

    def _handle(self, m: P.Message) -> None:
        t = m.type
        if t == P.KEYED:
            log.info("link key %d in force (controller %s)", m.epoch, "restarted" if m.boot else "re-keyed")
            if m.boot:
                # a controller that restarted has forgotten its session: stop the camera for it
                self._cancel_current("controller restarted")
            self._alive()
            return
        if t == P.HELLO:
            # a HELLO proves nothing about liveness (it may be a recording): only keyed frames do
            self.controller_info = dict(m.info)
            log.info("controller HELLO: %s", ", ".join(f"{k}={v!r}" for k, v in m.info))
            return
        self._alive()
        if t == P.HEARTBEAT:
            self.controller_state = m.state
        elif t == P.START:
            self._on_start(m)
        elif t == P.ABORT:
            with self._slock:
                cur = self._current
                if cur is not None and cur.session_id == m.session_id:
                    self._aborted.add((cur.session_id, cur.nonce))
                    ev = self._acks.get((cur.session_id, cur.nonce))
                    if ev is not None:
                        ev.set()
                else:
                    cur = None
            if cur is not None:
                log.info("session %d aborted by the controller (reason %d)", m.session_id, m.reason)
                cur.cancel.set()
        elif t == P.ACK:
            if m.acked_type == P.RESULT:
                with self._slock:
                    for key, ev in self._acks.items():
                        if key[0] == m.session_id:
                            self._acked.add(key)
                            ev.set()
        elif t == P.FAULT:
            log.warning("controller FAULT (reason %d): %r", m.reason, m.text)
            self._cancel_current("controller fault")

    def _on_start(self, m: P.Message) -> None:
        with self._slock:
            cur = self._current
            if cur is not None and cur.session_id == m.session_id and cur.nonce == m.nonce:
                dup = True  # a START repeated because our ACK was lost
            else:
                dup = False
                old = cur
                req = SessionRequest(
                    session_id=m.session_id,
                    nonce=m.nonce,
                    origin="serial",
                    deadline_ms=m.deadline_ms or None,
                    challenge_seed=challenge_seed(self._challenge_key, m.nonce),
                    template=m.template,
                )
                self._current = req
                self._started_at[(req.session_id, req.nonce)] = self._clock()
        self._send(P.ACK, P.pack_ack(P.START, m.seq, m.session_id))
        if dup:
            return
        # a request the runner has not picked up yet is stale now: cancel it and forget it
        # (the runner will never call result() for it, so nothing else would)
        while True:
            try:
                stale = self._requests.get_nowait()
            except queue.Empty:
                break
            stale.cancel.set()
            with self._slock:
                self._forget((stale.session_id, stale.nonce))
                self._current = req
        if old is not None and not old.cancel.is_set():
            # the controller moved on: the old session can no longer be delivered
            with self._slock:
                okey = (old.session_id, old.nonce)
                if okey in self._started_at:
                    self._aborted.add(okey)
                ev = self._acks.get(okey)
                if ev is not None:
                    ev.set()
            old.cancel.set()
        log.info("START session %d (%s ms left%s)", m.session_id, m.deadline_ms or "no deadline",
                 ", with a 1:1 template" if m.template else "")
        self._requests.put(req)
