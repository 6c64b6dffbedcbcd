"""sd_notify against a real AF_UNIX datagram receiver; watchdog timing and hang detection."""

from __future__ import annotations

import os
import socket
import statistics
import threading
import time
import uuid

import pytest

from edge.service.notify import Notifier, Watchdog, notify_address, watchdog_interval_s


class Receiver:
    """A stand-in for PID 1's notify socket: records (monotonic time, message)."""

    def __init__(self, address: str | bytes):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, n: int, timeout_s: float = 2.0) -> list[str]:
        end = time.monotonic() + timeout_s
        while len(self.messages) < n and time.monotonic() < end:
            time.sleep(0.01)
        return [m for _, m in self.messages]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


@pytest.fixture
def path_receiver(tmp_path):
    path = str(tmp_path / "notify")
    r = Receiver(path)
    yield path, r
    r.close()


@pytest.fixture
def abstract_receiver():
    name = f"edge-test-{uuid.uuid4().hex}"
    r = Receiver(b"\0" + name.encode())
    yield "@" + name, r
    r.close()


def test_address_parsing():
    assert notify_address(None) is None
    assert notify_address("") is None
    assert notify_address("/run/systemd/notify") == "/run/systemd/notify"
    assert notify_address("@abc") == b"\0abc"
    assert notify_address("relative/path") is None


def test_noop_without_notify_socket():
    n = Notifier.from_env({})
    assert not n.enabled
    assert n.ready() is False
    assert n.watchdog() is False
    wd = Watchdog.from_env(n, {"WATCHDOG_USEC": "1000000"})
    assert not wd.enabled
    wd.kick()
    with wd:
        pass  # no thread started, nothing raised


@pytest.mark.parametrize("fixture", ["path_receiver", "abstract_receiver"])
def test_messages_reach_receiver(fixture, request):
    value, rx = request.getfixturevalue(fixture)
    with Notifier.from_env({"NOTIFY_SOCKET": value}) as n:
        assert n.enabled
        assert n.ready("models loaded")
        assert n.status("waiting for trigger")
        assert n.watchdog()
        assert n.stopping()
        msgs = rx.wait_for(4)
    assert msgs == [
        "READY=1\nSTATUS=models loaded\n",
        "STATUS=waiting for trigger\n",
        "WATCHDOG=1\n",
        "STOPPING=1\n",
    ]


def test_send_failure_does_not_raise(tmp_path):
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.ready() is False
    assert n.watchdog() is False
    n.close()
    n.close()  # idempotent


def test_multiline_assignment_refused(path_receiver):
    value, _ = path_receiver
    with Notifier.from_env({"NOTIFY_SOCKET": value}) as n, pytest.raises(ValueError):
        n.status("two\nlines")


def test_watchdog_interval_from_env():
    me = str(os.getpid())
    assert watchdog_interval_s({}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "5000000"}) == pytest.approx(2.5)
    assert watchdog_interval_s({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": me}) == pytest.approx(2.5)
    # Inherited from a parent: not ours to ping.
    assert watchdog_interval_s({"WATCHDOG_USEC": "5000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "junk"}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "0"}) is None


def _watchdog_pings(rx: Receiver) -> list[float]:
    return [t for t, m in rx.messages if m == "WATCHDOG=1\n"]


@pytest.mark.parametrize("fixture", ["path_receiver", "abstract_receiver"])
def test_watchdog_pings_at_half_the_timeout_and_stops_when_loop_hangs(fixture, request):
    value, rx = request.getfixturevalue(fixture)
    timeout_us = 400_000  # WatchdogSec=0.4 -> expect a ping every ~0.2 s
    env = {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": str(timeout_us), "WATCHDOG_PID": str(os.getpid())}
    n = Notifier.from_env(env)
    wd = Watchdog.from_env(n, env)
    assert wd.enabled and wd.interval_s == pytest.approx(0.2)

    hung = threading.Event()
    done = threading.Event()

    def main_loop():
        while not done.is_set():
            if not hung.is_set():
                wd.kick()
            time.sleep(0.02)

    loop = threading.Thread(target=main_loop, daemon=True)
    with wd:
        loop.start()
        time.sleep(1.5)
        healthy = _watchdog_pings(rx)
        hung.set()
        t_hang = time.monotonic()
        time.sleep(1.5)
        after = [t for t in _watchdog_pings(rx) if t > t_hang]
    done.set()
    loop.join(1)
    n.close()

    assert len(healthy) >= 4, healthy
    gaps = [b - a for a, b in zip(healthy, healthy[1:])]
    # Generous bounds on a shared 2-core box: the median gap is ~half the timeout,
    # and no gap reaches the full timeout (which is when systemd would act).
    assert 0.1 <= statistics.median(gaps) <= 0.3, gaps
    assert max(gaps) < timeout_us / 1e6, gaps
    # A hung loop: at most the ping already due within the stale window, then silence
    # for longer than WatchdogSec, so systemd would restart the service.
    assert all(t - t_hang <= 0.5 for t in after), after
    assert wd.withheld >= 3


def test_watchdog_resumes_when_loop_recovers(path_receiver):
    value, rx = path_receiver
    env = {"NOTIFY_SOCKET": value, "WATCHDOG_USEC": "200000"}
    n = Notifier.from_env(env)
    wd = Watchdog.from_env(n, env)
    with wd:
        time.sleep(0.5)  # never kicked after start(): pings stop
        stale_pings = wd.pings
        for _ in range(25):
            wd.kick()
            time.sleep(0.02)
    n.close()
    assert stale_pings <= 2  # the kick made by start() may still count once or twice
    assert wd.pings > stale_pings


def test_max_block_keeps_kicks_fresh(path_receiver):
    value, _ = path_receiver
    n = Notifier.from_env({"NOTIFY_SOCKET": value})
    assert Watchdog(n, 2.5).max_block_s(default=5.0) == pytest.approx(1.25)
    assert Watchdog(n, None).max_block_s(default=5.0) == 5.0


def test_module_level_notify_and_default_watchdog(path_receiver, monkeypatch):
    from edge.service import notify as notify_mod

    value, rx = path_receiver
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    monkeypatch.setenv("WATCHDOG_USEC", "3000000")
    monkeypatch.setattr(notify_mod, "_default", None)
    assert notify_mod.notify("READY=1", "STATUS=waiting for a trigger")
    wd = Watchdog.from_env()
    assert wd.enabled and wd.interval_s == pytest.approx(1.5)
    assert rx.wait_for(1) == ["READY=1\nSTATUS=waiting for a trigger\n"]
    notify_mod.default_notifier().close()
    monkeypatch.setattr(notify_mod, "_default", None)
