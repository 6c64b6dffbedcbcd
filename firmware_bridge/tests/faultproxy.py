"""A fault-injecting serial line: two pty pairs joined by a frame-aware pump.

The controller side opens ``proxy.controller_path``, the runtime side
``proxy.runtime_path`` (two processes, or two threads, each with a real tty).
Every frame (bytes up to and including a 0x00 delimiter) that crosses is, at the
rates set per direction, dropped, duplicated, delayed, reordered (held back and
sent after the next frame) or corrupted (one bit flipped), from a seeded RNG so
a run reproduces. Direction "C" is controller -> runtime, "R" runtime -> controller.

Targeted faults for tests: ``drop_next("R", P.HELLO)`` drops the next HELLO the
runtime sends. Either side may close and reopen its path (a restart): the pty
masters stay with the proxy, and bytes written while nobody listens are lost,
as on a real line.

    with FaultProxy(seed=1, rates={"C": Rates(drop=0.01, corrupt=0.005), "R": ...}) as proxy:
        ... open proxy.controller_path / proxy.runtime_path ...
        proxy.counts   # {"C": {"frames": n, "drop": n, ...}, "R": {...}}
"""

from __future__ import annotations

import heapq
import os
import random
import select
import threading
import time
import tty
from dataclasses import dataclass

from firmware_bridge import protocol as P

FAULTS = ("drop", "dup", "delay", "reorder", "corrupt")


@dataclass(frozen=True)
class Rates:
    drop: float = 0.0
    dup: float = 0.0
    delay: float = 0.0  # probability of holding a frame back delay_ms (uniform 0..delay_ms)
    reorder: float = 0.0
    corrupt: float = 0.0
    delay_ms: float = 50.0


def frame_type(frame: bytes) -> int | None:
    """Message type of one wire frame (delimiter included), or None if it does not decode."""
    try:
        raw = P.cobs_decode(frame.rstrip(b"\x00"))
    except P.ProtocolError:
        return None
    return raw[1] if len(raw) > 1 else None


class FaultProxy:
    def __init__(self, seed: int = 0, rates: dict[str, Rates] | None = None):
        self.rng = random.Random(seed)
        self.rates = {"C": Rates(), "R": Rates()}
        self.rates.update(rates or {})
        self._fds: list[int] = []
        masters, paths = [], []
        for _ in range(2):
            m, s = os.openpty()
            tty.setraw(s)
            os.set_blocking(m, False)
            self._fds += [m, s]
            masters.append(m)
            paths.append(os.ttyname(s))
        self._m_ctl, self._m_rt = masters
        self.controller_path, self.runtime_path = paths
        # bytes read from the controller's master go to the runtime's master, and back
        self._dir = {self._m_ctl: "C", self._m_rt: "R"}
        self._out = {"C": self._m_rt, "R": self._m_ctl}
        self._buf = {"C": bytearray(), "R": bytearray()}
        self._held: dict[str, tuple[float, bytes] | None] = {"C": None, "R": None}
        self._queue: list[tuple[float, int, str, bytes]] = []
        self._n = 0
        self._targeted: list[list] = []  # [direction, mtype, count]
        self.counts = {d: {"frames": 0, **{f: 0 for f in FAULTS}, "targeted": 0, "unwritten": 0} for d in "CR"}
        self.log: list[tuple[float, str, int | None]] = []  # (time, direction, type) of delivered frames
        self.keep_log = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._pump, name="fault-proxy", daemon=True)

    # ------------------------------------------------------------ control

    def drop_next(self, direction: str, mtype: int, count: int = 1) -> None:
        with self._lock:
            self._targeted.append([direction, mtype, count])

    def set_rates(self, direction: str, rates: Rates) -> None:
        with self._lock:
            self.rates[direction] = rates

    def __enter__(self) -> "FaultProxy":
        self._t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._t.is_alive():
            self._t.join(2)
        for fd in self._fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = []

    # ------------------------------------------------------------ pump

    def _schedule(self, at: float, direction: str, data: bytes) -> None:
        self._n += 1
        heapq.heappush(self._queue, (at, self._n, direction, data))

    def _write(self, direction: str, data: bytes) -> None:
        try:
            os.write(self._out[direction], data)
        except (BlockingIOError, OSError):
            self.counts[direction]["unwritten"] += 1  # nobody listening, or the line is full
        if self.keep_log:
            self.log.append((time.monotonic(), direction, frame_type(data)))

    def _on_frame(self, direction: str, frame: bytes, now: float) -> None:
        c = self.counts[direction]
        c["frames"] += 1
        with self._lock:
            r = self.rates[direction]
            for t in self._targeted:
                if t[0] == direction and t[2] > 0 and frame_type(frame) == t[1]:
                    t[2] -= 1
                    c["targeted"] += 1
                    return
        rng = self.rng
        if rng.random() < r.drop:
            c["drop"] += 1
            return
        if rng.random() < r.corrupt and len(frame) > 1:
            c["corrupt"] += 1
            b = bytearray(frame)
            i = rng.randrange(len(b) - 1)  # never the delimiter: corruption, not resync
            b[i] ^= 1 << rng.randrange(8)
            frame = bytes(b)
        at = now
        if rng.random() < r.delay:
            c["delay"] += 1
            at = now + rng.uniform(0, r.delay_ms) / 1000.0
        copies = 2 if rng.random() < r.dup else 1
        if copies == 2:
            c["dup"] += 1
        held = self._held[direction]
        if held is None and rng.random() < r.reorder:
            c["reorder"] += 1
            self._held[direction] = (now + 0.05, frame * copies)  # sent after the next frame
            return
        self._schedule(at, direction, frame * copies)
        if held is not None:
            self._held[direction] = None
            self._schedule(at, direction, held[1])

    def _pump(self) -> None:
        while not self._stop.is_set():
            now = time.monotonic()
            for d in "CR":
                held = self._held[d]
                if held is not None and held[0] <= now:
                    self._held[d] = None
                    self._schedule(now, d, held[1])
            while self._queue and self._queue[0][0] <= now:
                _, _, d, data = heapq.heappop(self._queue)
                self._write(d, data)
            timeout = 0.05
            if self._queue:
                timeout = min(timeout, max(0.0, self._queue[0][0] - now))
            try:
                ready, _, _ = select.select([self._m_ctl, self._m_rt], [], [], timeout)
            except (OSError, ValueError):
                return
            for fd in ready:
                try:
                    data = os.read(fd, 4096)
                except BlockingIOError:
                    continue
                except OSError:  # EIO: nobody holds the slave open (a side is restarting)
                    time.sleep(0.005)
                    continue
                d = self._dir[fd]
                buf = self._buf[d]
                buf += data
                now = time.monotonic()
                while True:
                    i = buf.find(b"\x00")
                    if i < 0:
                        if len(buf) > 4 * P.MAX_ENCODED:
                            self._schedule(now, d, bytes(buf))  # junk without delimiters: pass it on
                            buf.clear()
                        break
                    frame = bytes(buf[: i + 1])
                    del buf[: i + 1]
                    self._on_frame(d, frame, now)
