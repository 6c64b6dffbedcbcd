"""The privacy guard trips for every write/network category and not for reads or local IPC."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import uuid
from pathlib import Path

import numpy as np
import pytest

from edge.errors import PrivacyViolation
from edge.service import guard as guard_mod
from edge.service.guard import GUARD, session_guard


@pytest.fixture
def armed(tmp_path, caplog):
    src = tmp_path / "model.bin"
    src.write_bytes(b"weights")
    (tmp_path / "dir").mkdir()
    GUARD.reset_counters()
    caplog.set_level(logging.WARNING, logger="edge.service.guard")
    yield tmp_path
    assert not GUARD.armed


def _listing(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


WRITES = {
    "open_w": lambda d: open(d / "new.txt", "w"),
    "open_a": lambda d: open(d / "model.bin", "ab"),
    "open_x": lambda d: open(d / "x.txt", "x"),
    "open_rplus": lambda d: open(d / "model.bin", "r+b"),
    "path_write": lambda d: (d / "p.txt").write_bytes(b"face"),
    "os_open_creat": lambda d: os.open(d / "o.bin", os.O_WRONLY | os.O_CREAT, 0o600),
    "os_open_rdwr": lambda d: os.open(d / "model.bin", os.O_RDWR),
    "np_save": lambda d: np.save(d / "crop.npy", np.zeros((4, 4), np.uint8)),
    "np_tofile": lambda d: np.zeros(3).tofile(d / "crop.bin"),
    "sqlite_file": lambda d: sqlite3.connect(d / "db.sqlite"),
}
FS_OPS = {
    "rename": lambda d: os.rename(d / "model.bin", d / "m2.bin"),
    "replace": lambda d: os.replace(d / "model.bin", d / "m2.bin"),
    "remove": lambda d: os.remove(d / "model.bin"),
    "unlink": lambda d: (d / "model.bin").unlink(),
    "mkdir": lambda d: os.mkdir(d / "newdir"),
    "makedirs": lambda d: os.makedirs(d / "a" / "b"),
    "rmdir": lambda d: os.rmdir(d / "dir"),
    "truncate": lambda d: os.truncate(d / "model.bin", 0),
    "chmod": lambda d: os.chmod(d / "model.bin", 0o644),
    "symlink": lambda d: os.symlink(d / "model.bin", d / "link"),
    "rmtree": lambda d: shutil.rmtree(d / "dir"),
}
COPIES = {
    "copyfile": lambda d: shutil.copyfile(d / "model.bin", d / "copy.bin"),
    "copy": lambda d: shutil.copy(d / "model.bin", d / "copy.bin"),
    "copy2": lambda d: shutil.copy2(d / "model.bin", d / "copy.bin"),
    "copytree": lambda d: shutil.copytree(d / "dir", d / "dir2"),
    "move": lambda d: shutil.move(d / "model.bin", d / "moved.bin"),
}


@pytest.mark.parametrize("name", list(WRITES) + list(FS_OPS) + list(COPIES))
def test_filesystem_changes_refused_and_nothing_changes(armed, caplog, name):
    op = {**WRITES, **FS_OPS, **COPIES}[name]
    before = _listing(armed)
    with session_guard():
        with pytest.raises(PrivacyViolation) as exc:
            op(armed)
    assert isinstance(exc.value, PermissionError)
    assert _listing(armed) == before
    c = GUARD.counters()
    assert c.blocked >= 1 and not c.armed
    assert any("privacy guard refused" in r.getMessage() for r in caplog.records)


def test_log_names_event_and_path_but_never_data(armed, caplog):
    secret = b"\x89PNG face-pixels-here"
    with session_guard(), pytest.raises(PrivacyViolation):
        (armed / "leak.png").write_bytes(secret)
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "open" in messages and "leak.png" in messages
    assert "face-pixels" not in messages
    assert GUARD.counters().by_category == {"file_write": 1}


def test_opencv_imwrite_refused(armed):
    cv2 = pytest.importorskip("cv2")
    with session_guard(), pytest.raises(PrivacyViolation):
        cv2.imwrite(str(armed / "face.png"), np.zeros((4, 4, 3), np.uint8))
    assert not (armed / "face.png").exists()
    assert GUARD.counters().by_event.get("cv2.imwrite") == 1


def test_reads_allowed(armed):
    with session_guard():
        assert (armed / "model.bin").read_bytes() == b"weights"
        with open(armed / "model.bin", "rb") as fh:
            assert fh.read(3) == b"wei"
        fd = os.open(armed / "model.bin", os.O_RDONLY)
        os.close(fd)
        assert sorted(p.name for p in armed.iterdir()) == ["dir", "model.bin"]
        import json  # noqa: F401  (an import reads files)
        sqlite3.connect(":memory:").close()
    assert GUARD.counters().blocked == 0


def test_char_devices_are_not_storage(armed):
    with session_guard():
        with open("/dev/null", "wb") as fh:
            fh.write(b"x")
        os.close(os.open("/dev/null", os.O_WRONLY))
    assert GUARD.counters().blocked == 0


def test_af_unix_notify_path_and_abstract_allowed(armed):
    path = str(armed / "notify")
    rx_path = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx_path.bind(path)  # bound before the session: creating the socket file is set-up
    abstract = b"\0edge-guard-" + uuid.uuid4().hex.encode()
    rx_abs = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx_abs.bind(abstract)
    from edge.service.notify import Notifier

    with session_guard():
        assert Notifier(path).watchdog()
        assert Notifier(b"\0" + abstract[1:]).ready()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(b"\0edge-guard-" + uuid.uuid4().hex.encode())  # abstract bind: no file
        s.close()
    assert rx_path.recv(64) == b"WATCHDOG=1\n"
    assert rx_abs.recv(64) == b"READY=1\n"
    rx_path.close()
    rx_abs.close()
    assert GUARD.counters().blocked == 0


def test_af_unix_bind_to_path_creates_a_file_and_is_refused(armed):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    with session_guard(), pytest.raises(PrivacyViolation):
        s.bind(str(armed / "sock"))
    s.close()
    assert not (armed / "sock").exists()


def test_loopback_allowed(armed):
    try:
        socket.getaddrinfo("localhost", 9)
    except socket.gaierror as err:  # a bare chroot (debootstrap) has no /etc/hosts; every real system does
        pytest.skip(f"'localhost' does not resolve on this system ({err}): add it to /etc/hosts")
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    with session_guard():
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.sendto(b"x", ("127.0.0.1", port))
        c.connect(("localhost", port))
        c.close()
        socket.getaddrinfo("localhost", port)
    assert server.recv(8) == b"x"
    server.close()
    assert GUARD.counters().blocked == 0


@pytest.mark.parametrize(
    "op",
    [
        lambda s: s.connect(("192.0.2.1", 9)),  # TEST-NET-1: never routed, never actually reached
        lambda s: s.sendto(b"x", ("198.51.100.7", 9)),
        lambda s: s.bind(("0.0.0.0", 0)),
        # socket.create_connection resolves through socket.getaddrinfo, which is audited.
        # (A bare sock.connect(("name", port)) resolves in C before its audit event fires;
        # the unit's PrivateNetwork=yes is what stops that lookup.)
        lambda s: socket.create_connection(("example.invalid", 80), timeout=0.1),
        lambda s: socket.getaddrinfo("example.invalid", 80),
    ],
    ids=["connect", "sendto", "bind_wildcard", "connect_by_name", "dns_lookup"],
)
def test_non_local_network_refused(armed, op):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with session_guard(), pytest.raises(PrivacyViolation):
            op(s)
    finally:
        s.close()
    assert GUARD.counters().by_category.get("network") == 1


def test_ipv6_non_loopback_refused_loopback_allowed(armed):
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python")
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        with session_guard():
            with pytest.raises(PrivacyViolation):
                s.sendto(b"x", ("2001:db8::1", 9, 0, 0))
            try:
                s.sendto(b"x", ("::1", 9, 0, 0))
            except PrivacyViolation:
                raise
            except OSError:
                pass  # no IPv6 loopback configured here; the guard allowed it
    finally:
        s.close()
    assert GUARD.counters().blocked == 1


def test_spawning_processes_refused(armed):
    with session_guard():
        with pytest.raises(PrivacyViolation):
            subprocess.run(["true"])
        with pytest.raises(PrivacyViolation):
            os.system("true")
    assert GUARD.counters().by_category.get("process") == 2


def test_guard_covers_other_threads(armed):
    import threading

    errors: list[BaseException] = []

    def writer():
        try:
            (armed / "bg.txt").write_text("x")
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    with session_guard():
        t = threading.Thread(target=writer)
        t.start()
        t.join()
    assert len(errors) == 1 and isinstance(errors[0], PrivacyViolation)


def test_disarmed_and_disabled_allow_everything(armed):
    GUARD.install()
    (armed / "before.txt").write_text("ok")  # installed but not armed
    with session_guard(enabled=False):
        (armed / "dev.txt").write_text("ok")  # dev mode: guard not armed
    with session_guard():
        pass
    (armed / "after.txt").write_text("ok")
    c = GUARD.counters()
    assert c.blocked == 0 and c.sessions == 1 and c.installed and not c.armed


def test_nested_arming_disarms_only_at_outermost(armed):
    with session_guard():
        with session_guard():
            assert GUARD.armed
        assert GUARD.armed
        with pytest.raises(PrivacyViolation):
            (armed / "x").write_text("x")
    assert not GUARD.armed
    assert GUARD.counters().sessions == 1


def test_counters_are_a_snapshot(armed):
    with session_guard(), pytest.raises(PrivacyViolation):
        os.mkdir(armed / "d2")
    snap = guard_mod.counters()
    snap.by_event["x"] = 99  # mutating a snapshot does not touch the guard
    assert "x" not in GUARD.counters().by_event
    assert snap.by_event["os.mkdir"] == 1


def test_lazy_import_mid_session_writes_no_bytecode(armed, monkeypatch):
    import importlib
    import sys

    (armed / "lazy_mod_for_guard.py").write_text("VALUE = 7\n")
    monkeypatch.syspath_prepend(str(armed))
    GUARD.install()
    assert sys.dont_write_bytecode
    with session_guard():
        mod = importlib.import_module("lazy_mod_for_guard")
    assert mod.VALUE == 7
    assert not (armed / "__pycache__").exists()
    assert GUARD.counters().blocked == 0
    sys.modules.pop("lazy_mod_for_guard", None)
