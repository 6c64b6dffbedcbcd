"""A serial port that never receives anything (the fuzz test feeds the parser directly)."""

from __future__ import annotations

import threading


class NullSerial:
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
