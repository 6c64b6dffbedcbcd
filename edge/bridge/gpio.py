"""Dry-contact I/O on this board's GPIO, through gpiozero.

:class:`Relay` is the small protocol the sinks use; :class:`GpioRelay` drives
a gpiozero ``DigitalOutputDevice`` (initial state off, active-high or -low).
:class:`RelaySink` pulses it only on PASS, and forces it off on anything else.
:class:`GpioTrigger` turns an input edge (button, card reader's card-present
line) into a :class:`SessionRequest`. Tests use gpiozero's ``MockFactory``.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from typing import Protocol, runtime_checkable

from edge.bridge.base import SessionRequest
from edge.errors import BridgeError
from edge.types import Prompt, Reason, Verdict

log = logging.getLogger(__name__)


@runtime_checkable
class Relay(Protocol):
    @property
    def is_on(self) -> bool: ...

    def pulse(self, duration_s: float) -> None:
        """Energise for ``duration_s``, then de-energise (returns at once)."""

    def off(self) -> None:
        """De-energise now, cancelling a running pulse."""

    def close(self) -> None: ...


def _gpio_error(what: str, pin, err: Exception) -> BridgeError:
    return BridgeError(
        f"cannot open {what} on GPIO {pin} ({type(err).__name__}: {err}); on a Raspberry Pi install python3-lgpio "
        f"(apt) and create the venv with --system-site-packages, or set GPIOZERO_PIN_FACTORY; check relay.pin / "
        f"trigger.gpio_pin"
    )


class GpioRelay:
    """A relay output. Starts de-energised; ``close()`` leaves it de-energised."""

    def __init__(self, pin, *, active_high: bool = True, pin_factory=None):
        from gpiozero import DigitalOutputDevice

        try:
            self._dev = DigitalOutputDevice(pin, active_high=active_high, initial_value=False, pin_factory=pin_factory)
        except Exception as err:
            raise _gpio_error("the relay output", pin, err) from err
        self._lock = threading.Lock()
        self._closed = False

    @property
    def is_on(self) -> bool:
        return not self._closed and bool(self._dev.value)

    def pulse(self, duration_s: float) -> None:
        if duration_s <= 0:
            return
        with self._lock:
            if self._closed:
                raise BridgeError("relay is closed")
            # gpiozero's background blink thread ends with the output off; off() cancels it
            self._dev.blink(on_time=duration_s, off_time=0, n=1, background=True)

    def off(self) -> None:
        with self._lock:
            if not self._closed:
                self._dev.off()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._dev.off()
            finally:
                self._dev.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RelaySink:
    """VerdictSink that pulses the relay for ``pulse_ms`` on PASS, and only on PASS."""

    def __init__(self, relay: Relay, pulse_ms: int = 1500):
        self.relay = relay
        self.pulse_s = pulse_ms / 1000.0

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        pass

    def result(self, request: SessionRequest, verdict: Verdict) -> None:
        if verdict.passed:
            log.info("session %d PASS: relay pulse %.0f ms", request.session_id, self.pulse_s * 1000)
            self.relay.pulse(self.pulse_s)
        else:
            self.relay.off()

    def fault(self, reason: Reason = Reason.INTERNAL_ERROR, detail: str = "", session_id: int = 0) -> None:
        self.relay.off()

    def close(self) -> None:
        self.relay.close()


class GpioTrigger:
    """A session per input edge; presses while one is queued or running are dropped."""

    def __init__(self, pin, *, pull_up: bool | None = True, active_high: bool | None = None, bounce_ms: int = 50,
                 pin_factory=None):
        from gpiozero import Button

        self._ids = itertools.count(1)
        self._busy = False
        self._queue: queue.Queue[SessionRequest] = queue.Queue(maxsize=1)
        try:
            # gpiozero: pull_up=None (external resistor) needs the active state spelled out
            self._button = Button(
                pin,
                pull_up=pull_up,
                active_state=active_high if pull_up is None else None,
                bounce_time=(bounce_ms / 1000.0) if bounce_ms > 0 else None,
                pin_factory=pin_factory,
            )
        except Exception as err:
            raise _gpio_error("the trigger input", pin, err) from err
        self._button.when_pressed = self._pressed
        self._closed = False

    def _pressed(self, *_):
        if self._busy:
            # a press during a session must not queue the next one behind the person's back
            log.debug("trigger input pressed during a session: ignored")
            return
        req = SessionRequest(session_id=next(self._ids), origin="gpio")
        try:
            self._queue.put_nowait(req)
            log.info("trigger input: session %d requested", req.session_id)
        except queue.Full:
            log.debug("trigger input pressed while a session is already queued")

    def wait(self, timeout_s: float) -> SessionRequest | None:
        self._busy = False  # the runner waits only between sessions
        try:
            req = self._queue.get(timeout=max(0.0, timeout_s))
        except queue.Empty:
            return None
        self._busy = True
        return req

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._button.when_pressed = None
        self._button.close()
