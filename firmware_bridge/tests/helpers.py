"""Test doubles for the controller side: an in-memory board with a settable clock."""

from __future__ import annotations

import os
import time
from pathlib import Path

from firmware_bridge import protocol as P
from firmware_bridge.controller import Controller, ControllerConfig
from firmware_bridge.sim import SimBoard

KEY = bytes(range(32))


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, ms: float) -> None:
        self.t += ms / 1000.0


class Rig:
    """A Controller on an in-memory board, and a runtime-side Codec to talk to it."""

    def __init__(self, key: bytes = KEY, **cfg):
        self.clock = FakeClock()
        self.rx = bytearray()  # bytes waiting for the controller
        self.tx: list[bytes] = []  # raw writes by the controller
        self.events: list[tuple[str, dict]] = []
        self.board = SimBoard(self._read, self.tx.append, clock=self.clock)
        defaults = dict(pulse_ms=1000, session_timeout_ms=5000, heartbeat_interval_ms=500, heartbeat_timeout_ms=2000,
                        start_retry_ms=300, debounce_ms=30)
        defaults.update(cfg)
        self.cfg = ControllerConfig(**defaults)
        self.ctl = Controller(self.board, key, self.cfg, on_event=lambda n, f: self.events.append((n, f)))
        # the peer's codec: what the runtime would send
        self.runtime = P.Codec(key, P.DIR_RUNTIME, [("role", "runtime")])
        self.auto_answer = True
        self.received: list[P.Message] = []  # what the runtime side decoded from the controller

    def _read(self):
        if not self.rx:
            return None
        data = bytes(self.rx)
        self.rx.clear()
        return data

    def send(self, mtype: int, payload: bytes) -> bytes:
        wire = self.runtime.encode(mtype, payload)
        self.rx += wire
        return wire

    def raw(self, data: bytes) -> None:
        self.rx += data

    def poll(self, ms: float = 0, step_ms: float = 10) -> list[P.Message]:
        """Advance the clock by ``ms`` in steps, polling; returns new frames from the controller."""
        left = ms
        while True:
            self.ctl.poll()
            if left <= 0:
                break
            d = min(step_ms, left)
            self.clock.advance(d)
            left -= d
        out = []
        while self.tx:
            out.extend(self.runtime.feed(self.tx.pop(0)))
        if self.auto_answer:
            self.rx += self.runtime.take_outbox()  # the runtime side answers HELLOs like a live peer
        self.received.extend(out)
        return out

    def names(self) -> list[str]:
        return [n for n, _ in self.events]

    def link_up(self) -> None:
        """Complete the v2 handshake (the controller's boot HELLO is already in tx)."""
        for _ in range(4):
            self.poll()
            if self.runtime.keyed and self.ctl.codec.keyed and not self.rx:
                break
        assert self.runtime.keyed and self.ctl.codec.keyed, (self.runtime.stats, self.ctl.codec.stats)
        self.poll()

    def start_session(self) -> P.Message:
        assert self.ctl.press()
        starts = [m for m in self.poll() if m.type == P.START]
        assert starts, "controller sent no START"
        return starts[-1]

    def stats(self) -> dict:
        return self.ctl.codec.stats


def result_payload(start: P.Message, verdict: int = P.V_PASS, reason: int = 1, nonce: bytes | None = None,
                   session_id: int | None = None) -> bytes:
    return P.pack_result(start.session_id if session_id is None else session_id,
                         start.nonce if nonce is None else nonce, verdict, reason, 500, 5, 7)


def random_nonce() -> bytes:
    return os.urandom(P.NONCE_LEN)


def keyed_codec(key: bytes, direction: bytes) -> P.Codec:
    """A codec that completed a handshake with a peer holding ``key`` (a forger's, with a wrong key)."""
    peer = P.DIR_CONTROLLER if direction == P.DIR_RUNTIME else P.DIR_RUNTIME
    c = P.Codec(key, direction)
    assert P.handshake(c, P.Codec(key, peer))
    return c


def until(pred, timeout=5.0, step=0.005):
    """Poll ``pred`` until it is true or ``timeout`` seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


def runtime_config(tmp: Path, port: str, source: str) -> Path:
    """A root-only key and an `edge run` config on ``port`` (the runtime's end of a pty pair) in ``tmp``."""
    key = tmp / "bridge.key"
    key.write_text(KEY.hex() + "\n")
    os.chmod(key, 0o600)
    cfg = tmp / "edge.toml"
    cfg.write_text(f'[camera]\nsource = "{source}"\n[trigger]\nkind = "serial"\n'
                   f'[serial]\nport = "{port}"\nkey_file = "{key}"\n')
    return cfg
