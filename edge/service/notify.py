"""sd_notify and the systemd watchdog, written by hand.

The protocol is one AF_UNIX datagram of newline-separated ``KEY=VALUE``
assignments sent to the socket named by ``$NOTIFY_SOCKET``. A leading ``@``
names a socket in the abstract namespace (its address starts with a NUL byte).
Without ``$NOTIFY_SOCKET`` (not started by systemd, or Type= is not notify)
every call is a no-op, so the same code runs from a shell.

We do not depend on python-systemd/libsystemd: the protocol is ten lines,
and the service must not grow a C dependency for it.

Usage in the run loop::

    notifier = Notifier.from_env()
    watchdog = Watchdog.from_env(notifier)
    ...load models...
    notifier.ready("waiting for trigger")
    with watchdog:
        while not shutdown.is_set():
            watchdog.kick()
            request = trigger.wait(timeout_s=watchdog.max_block_s(default=1.0))
            ...
    notifier.stopping()
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from typing import Callable, Mapping

log = logging.getLogger(__name__)

__all__ = ["Notifier", "Watchdog", "notify", "default_notifier", "notify_address", "watchdog_interval_s"]


def notify_address(value: str | None) -> str | bytes | None:
    """Socket address for a ``$NOTIFY_SOCKET`` value; None if unset or unusable.

    ``/run/systemd/notify`` is a filesystem path; ``@name`` is the abstract
    socket ``\\0name``. Anything else (relative paths, ``vsock:``) is not
    something a service on a Pi receives, so it is refused with a warning
    rather than guessed at.
    """
    if not value:
        return None
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    log.warning("NOTIFY_SOCKET=%r is neither an absolute path nor an abstract '@' name; "
                "sd_notify disabled", value)
    return None


class Notifier:
    """Sends sd_notify messages; a no-op when there is no notify socket.

    Sending never raises: a service that cannot reach systemd should keep
    its door locked and running, and the watchdog (or its absence) will
    decide what systemd does. Failures are logged once.
    """

    def __init__(self, address: str | bytes | None):
        self._address = address
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()
        self._failed_logged = False
        self.sent = 0  # datagrams delivered, for tests and `edge doctor`-style introspection

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Notifier":
        env = os.environ if environ is None else environ
        return cls(notify_address(env.get("NOTIFY_SOCKET")))

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *assignments: str, **fields: object) -> bool:
        """Send one datagram. ``send("READY=1", STATUS="x")``; True if delivered."""
        if self._address is None:
            return False
        lines = list(assignments) + [f"{k}={v}" for k, v in fields.items()]
        for line in lines:
            if "\n" in line:
                raise ValueError(f"sd_notify assignment must be one line: {line!r}")
        payload = ("\n".join(lines) + "\n").encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as err:
                if not self._failed_logged:
                    log.warning("sd_notify to %r failed: %s (further failures not logged)",
                                self._address, err)
                    self._failed_logged = True
                return False
            self.sent += 1
            return True

    def ready(self, status: str | None = None) -> bool:
        """Tell systemd start-up is complete (models loaded, trigger open)."""
        return self.send("READY=1", **({"STATUS": status} if status else {}))

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", **({"STATUS": status} if status else {}))

    def status(self, text: str) -> bool:
        """Free-form status for `systemctl status`. Counts and states only, never scores."""
        return self.send(STATUS=text)

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def watchdog_trigger(self) -> bool:
        """Ask systemd to act as if the watchdog had expired (restart now)."""
        return self.send("WATCHDOG=trigger")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for more start/stop time (slow model load on a Pi Zero)."""
        return self.send(EXTEND_TIMEOUT_USEC=int(seconds * 1_000_000))

    def close(self) -> None:
        with self._lock:
            if self._sock is not None:
                self._sock.close()
                self._sock = None

    def __enter__(self) -> "Notifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Watchdog:
    """Pings systemd's watchdog only while the main loop shows progress.

    The main loop calls :meth:`kick` once per iteration. A daemon thread wakes
    every ``interval_s`` (half of ``WATCHDOG_USEC``, as sd_watchdog_enabled(3)
    recommends) and sends ``WATCHDOG=1`` only if the last kick is at most
    ``stale_after_s`` old. A main loop that hangs (a stuck camera read, a
    deadlock) therefore stops the pings, and systemd kills and restarts the
    service after ``WatchdogSec``: the controller sees the link drop and keeps
    the door locked.

    Pinging from a thread instead of from kick() keeps the send off the hot
    path and makes the ping rate independent of the frame rate.

    Disabled (every method a cheap no-op) when ``WATCHDOG_USEC`` is unset or
    ``WATCHDOG_PID`` names another process (the variable was inherited).
    """

    def __init__(
        self,
        notifier: Notifier,
        interval_s: float | None,
        *,
        stale_after_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ):
        if interval_s is not None and interval_s <= 0:
            raise ValueError(f"watchdog interval must be > 0 s, got {interval_s}")
        self._notifier = notifier
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s if stale_after_s is not None else interval_s
        self._clock = clock
        self._last_kick: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._withholding = False
        self.pings = 0
        self.withheld = 0

    @classmethod
    def from_env(cls, notifier: Notifier | None = None, environ: Mapping[str, str] | None = None,
                 **kwargs: object) -> "Watchdog":
        """A watchdog configured from the environment; disabled (still usable) if not asked for.

        ``notifier`` defaults to the process-wide :func:`default_notifier` when
        ``environ`` is not given, else to one built from ``environ``.
        """
        env = os.environ if environ is None else environ
        if notifier is None:
            notifier = default_notifier() if environ is None else Notifier.from_env(env)
        return cls(notifier, watchdog_interval_s(env), **kwargs)  # type: ignore[arg-type]

    @property
    def enabled(self) -> bool:
        return self.interval_s is not None and self._notifier.enabled

    def max_block_s(self, default: float) -> float:
        """Longest the main loop should block in one call (trigger wait) so kicks stay fresh."""
        if not self.enabled:
            return default
        return min(default, self.stale_after_s / 2)  # type: ignore[operator]

    def kick(self) -> None:
        # A plain attribute store is atomic under the GIL; no lock on the hot path.
        self._last_kick = self._clock()

    def start(self) -> "Watchdog":
        if not self.enabled or self._thread is not None:
            return self
        self._stop.clear()
        self.kick()
        self._thread = threading.Thread(target=self._run, name="edge-watchdog", daemon=True)
        self._thread.start()
        log.info("watchdog: pinging every %.2f s while the main loop kicks within %.2f s",
                 self.interval_s, self.stale_after_s)
        return self

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=(self.interval_s or 0) + 1.0)

    close = stop

    def __enter__(self) -> "Watchdog":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        assert self.interval_s is not None and self.stale_after_s is not None
        while not self._stop.wait(self.interval_s):
            last = self._last_kick
            age = self._clock() - last if last is not None else float("inf")
            if age <= self.stale_after_s:
                if self._withholding:
                    log.warning("watchdog: main loop is kicking again; pings resumed")
                    self._withholding = False
                self._notifier.watchdog()
                self.pings += 1
            else:
                self.withheld += 1
                if not self._withholding:
                    log.error("watchdog: main loop has not kicked for %.1f s; withholding WATCHDOG=1 "
                              "so systemd restarts the service", age)
                    self._withholding = True


_default: Notifier | None = None
_default_lock = threading.Lock()


def default_notifier() -> Notifier:
    """The process-wide notifier for ``$NOTIFY_SOCKET`` (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = Notifier.from_env()
        return _default


def notify(*assignments: str, **fields: object) -> bool:
    """``notify("READY=1", "STATUS=waiting for a trigger")``: sd_notify(3) in one call; no-op outside systemd."""
    return default_notifier().send(*assignments, **fields)


def watchdog_interval_s(environ: Mapping[str, str]) -> float | None:
    """Ping interval from ``WATCHDOG_USEC``/``WATCHDOG_PID``: half the timeout, or None."""
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid:
        try:
            if int(pid) != os.getpid():
                return None  # inherited from a parent that systemd watches, not us
        except ValueError:
            log.warning("WATCHDOG_PID=%r is not a pid; watchdog disabled", pid)
            return None
    try:
        timeout_us = int(usec)
    except ValueError:
        log.warning("WATCHDOG_USEC=%r is not an integer; watchdog disabled", usec)
        return None
    if timeout_us <= 0:
        return None
    return timeout_us / 2 / 1_000_000
