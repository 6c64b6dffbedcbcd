"""Serial-line doubles: a port that never receives, a real pty pair, a controller poll loop."""

from __future__ import annotations

import os
import threading
import time
import tty
from contextlib import contextmanager


class NullSerial:
    """Never receives anything (the fuzz test feeds the parser directly)."""

    name = "null://"

    def __init__(self):
        self.written = bytearray()
        self._closed = threading.Event()
        self.in_waiting = 0

    def read(self, n: int = 1) -> bytes:
        self._closed.wait(0.02)
        return b""

    def write(self, data: bytes) -> int:
        self.written += data
        if len(self.written) > 1 << 20:
            del self.written[: 1 << 19]
        return len(data)

    def close(self) -> None:
        self._closed.set()


class MasterPort:
    """The master side of a pty, non-blocking: what a controller sees of the runtime's line."""

    def __init__(self, fd: int):
        self.fd = fd
        os.set_blocking(fd, False)

    def read(self):
        try:
            return os.read(self.fd, 4096) or None
        except (BlockingIOError, OSError):  # EIO once the slave side is closed
            return None

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self.fd, view)
            except BlockingIOError:
                continue
            view = view[n:]


@contextmanager
def pty_pair():
    """(MasterPort, slave path). The slave is raw from the start so nothing is echoed or translated."""
    m, s = os.openpty()
    tty.setraw(s)
    try:
        yield MasterPort(m), os.ttyname(s)
    finally:
        os.close(m)
        os.close(s)


class ControllerThread:
    """Runs Controller.poll() every 2 ms on a background thread, like main.py's loop."""

    def __init__(self, ctl):
        self.ctl = ctl
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            with self._lock:
                self.ctl.poll()
            self._stop.wait(0.002)

    def call(self, fn, *a):
        with self._lock:
            return fn(*a)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)


class PtyLink:
    """Two pty pairs joined by a pump thread: two processes each open a slave path, like a
    null-modem cable. ``cut()`` stops forwarding (a pulled cable)."""

    def __init__(self):
        self._fds = []
        self.paths = []
        self._masters = []
        for _ in range(2):
            m, s = os.openpty()
            tty.setraw(s)
            self._fds += [m, s]
            self._masters.append(m)
            self.paths.append(os.ttyname(s))
        self._stop = threading.Event()
        self.forwarding = True
        self._t = threading.Thread(target=self._pump, daemon=True)

    def _pump(self):
        import select

        a, b = self._masters
        peer = {a: b, b: a}
        while not self._stop.is_set():
            r, _, _ = select.select([a, b], [], [], 0.05)
            for fd in r:
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO while no process holds the slave open
                    time.sleep(0.01)
                    continue
                if data and self.forwarding:
                    os.write(peer[fd], data)

    def cut(self):
        self.forwarding = False

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)
        for fd in self._fds:
            os.close(fd)
