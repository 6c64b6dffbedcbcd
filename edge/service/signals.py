"""SIGTERM/SIGINT: end the running session with FAULT/SHUTDOWN and stop within 2 s.

The handler only sets Events (async-signal-safe in Python terms: no locks,
no I/O beyond one log line): the shutdown Event the main loop checks between
sessions, and the running session's ``SessionRequest.cancel`` which the
session loop checks every frame. The session then ends through its normal
path (buffers wiped, camera closed, exactly one verdict: FAULT with reason
SHUTDOWN) and the main loop returns.

A deadline timer backs this up: if the process is still running
``deadline_s`` after the first signal (a camera read stuck in the kernel),
it logs and calls ``os._exit`` so systemd sees a prompt stop, well inside the
unit's TimeoutStopSec=5. The controller already treats a silent link as FAULT.

Usage (main thread)::

    shutdown = ShutdownSignals(current=lambda: runtime.current).install()
    try:
        runtime.run()          # loop: while not shutdown.requested: ...
    finally:
        shutdown.restore()

and in the session runner, when ``request.cancel`` is set::

    reason = Reason.SHUTDOWN if shutdown.requested else Reason.ABORTED
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Callable, Iterable

from edge.bridge.base import SessionRequest
from edge.types import Reason

log = logging.getLogger(__name__)

__all__ = ["ShutdownSignals", "EXIT_DEADLINE"]

EXIT_DEADLINE = 75  # os._exit code when the deadline forces the exit (EX_TEMPFAIL)


class ShutdownSignals:
    """Installs handlers for ``signals``; remembers and restores the previous ones."""

    reason = Reason.SHUTDOWN

    def __init__(
        self,
        current: Callable[[], SessionRequest | None] = lambda: None,
        *,
        event: threading.Event | None = None,
        signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT),
        deadline_s: float | None = 2.0,
        on_deadline: Callable[[], None] | None = None,
    ):
        self.event = event or threading.Event()
        self._current = current
        self._signals = tuple(signals)
        self.deadline_s = deadline_s
        self._on_deadline = on_deadline or (lambda: os._exit(EXIT_DEADLINE))
        self._previous: dict[int, object] = {}
        self._timer: threading.Timer | None = None
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        return self.event.is_set()

    def install(self) -> "ShutdownSignals":
        """Install the handlers. Must be called from the main thread (a Python rule)."""
        for sig in self._signals:
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def restore(self) -> None:
        """Put the previous handlers back and cancel the deadline (idempotent)."""
        for sig, prev in self._previous.items():
            signal.signal(sig, prev)  # type: ignore[arg-type]
        self._previous.clear()
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()

    def __enter__(self) -> "ShutdownSignals":
        return self.install()

    def __exit__(self, *exc: object) -> None:
        self.restore()

    def request(self, signum: int | None = None) -> None:
        """Begin shutdown as if a signal had arrived (also for a controller-side stop)."""
        first = not self.event.is_set()
        self.event.set()
        request = self._current()
        if request is not None:
            request.cancel.set()
        if first:
            self.signum = signum
            log.info("shutdown requested%s: ending the current session with FAULT/%s",
                     f" by signal {signum}" if signum is not None else "", self.reason.name)
            if self.deadline_s is not None:
                self._timer = threading.Timer(self.deadline_s, self._deadline)
                self._timer.daemon = True
                self._timer.start()

    def _handle(self, signum: int, _frame: object) -> None:
        self.request(signum)

    def _deadline(self) -> None:
        log.error("shutdown: still running %.1f s after the signal; exiting now", self.deadline_s)
        for handler in logging.getLogger().handlers:
            try:
                handler.flush()
            except Exception:  # noqa: BLE001 - best effort before a hard exit
                pass
        self._on_deadline()
