"""Runtime privacy guard: no file writes and no off-host sockets during a session.

A Python audit hook (PEP 578) sees every file open, rename, remove, mkdir,
shutil copy, socket connect/sendto/bind, DNS lookup and process spawn that
Python code makes, whoever makes it (our code, numpy.save, a logging
FileHandler opened lazily, a third-party library). While a session runs in
service mode the guard is *armed* and refuses those operations by raising
:class:`~edge.errors.PrivacyViolation` from the hook, which aborts the
operation before it happens. The attempt is logged (event name and a
sanitised target: the path or address only, never data) and counted.

Audit hooks cannot be removed once added, so the hook is installed once and
switched: disarmed it returns on its first line. It is process-wide, so a
session armed in the main thread also guards every other thread (a stray
background writer is exactly what it should catch).

What stays allowed while armed:
- reading files (models are loaded before a session, but a lazy import reads
  ``.py``/``.pyc`` files at any time);
- opening existing character devices, FIFOs and sockets for writing (the
  camera's DMA heap, the serial port, /dev/null): they are not storage;
- AF_UNIX datagrams and connections (sd_notify, journald), abstract AF_UNIX
  binds, netlink (udev), and loopback addresses.

Limits: C code that calls the libc directly (cv2.imwrite, LiteRT) raises no  # persistence-ok: the guard refusing writes
audit event. The guard wraps OpenCV's file writers so they do, and the unit's
ProtectSystem=strict with no writable directory is the backstop below it.
Likewise ``sock.connect(("host.name", port))`` resolves the name in C before
its audit event fires (the connect itself is still refused); the unit's
PrivateNetwork=yes is what keeps that lookup off the wire.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import socket
import stat
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

from edge.errors import PrivacyViolation

log = logging.getLogger(__name__)

__all__ = ["PrivacyGuard", "GuardCounters", "GUARD", "session_guard", "install", "counters"]

FILE = "file_write"  # open for write/append/create/truncate
FS = "fs_modify"  # rename, replace, remove, mkdir, rmdir, link, chmod, utime, truncate
COPY = "copy"  # shutil copies, moves, archives
NETWORK = "network"  # non-local connect/sendto/bind, DNS lookups of non-local names
PROCESS = "process"  # spawning programs (they are outside the hook's reach)

_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_MAX_TARGET = 200


@dataclass(frozen=True)
class GuardCounters:
    """A snapshot of what the guard refused since the process started (or reset)."""

    blocked: int
    by_category: dict[str, int] = field(default_factory=dict)
    by_event: dict[str, int] = field(default_factory=dict)
    sessions: int = 0  # how many times the guard was armed
    armed: bool = False
    installed: bool = False


def _target(value: Any) -> str:
    """A printable, bounded rendering of a path or address. Never file contents."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    text = str(value) if not isinstance(value, str) else value
    text = text.replace("\0", "@")  # abstract socket names start with NUL
    return text if len(text) <= _MAX_TARGET else text[:_MAX_TARGET] + "..."


def _is_device_like(path: Any) -> bool:
    """True if ``path`` (or fd) is an existing char device, FIFO or socket: not storage."""
    try:
        st = os.fstat(path) if isinstance(path, int) else os.stat(path)
    except (OSError, TypeError, ValueError):
        return False  # absent: opening it for write would create a file
    return stat.S_ISCHR(st.st_mode) or stat.S_ISFIFO(st.st_mode) or stat.S_ISSOCK(st.st_mode)


def _is_local_host(host: Any) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard/loopback, no lookup
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    if host.lower() in ("localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"):
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False  # a name that needs resolving: a DNS query leaves the box
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def _socket_allowed(sock: Any, address: Any, *, binding: bool) -> bool:
    family = getattr(sock, "family", None)
    if family == socket.AF_UNIX:
        # connect/sendto to a local socket is IPC (sd_notify, journald). Binding to
        # a *path* creates a file; binding abstract ('\0name') or autobind ('') does not.
        if not binding:
            return True
        return isinstance(address, (bytes, str)) and (len(address) == 0 or address[:1] in ("\0", b"\0"))
    if family == getattr(socket, "AF_NETLINK", object()):
        return True  # talks to the local kernel (udev monitor)
    if family in (socket.AF_INET, socket.AF_INET6):
        if address is None:
            return True  # sendmsg on a connected socket: its connect() was checked
        host = address[0] if isinstance(address, tuple) and address else address
        if binding and host in ("", "0.0.0.0", "::"):
            return False  # wildcard bind listens on every interface
        return _is_local_host(host)
    return False  # packet, CAN, Bluetooth, ...: not local IPC


class PrivacyGuard:
    """The switchable audit hook. Use the module singleton :data:`GUARD`."""

    def __init__(self) -> None:
        self._installed = False
        self._depth = 0  # nested arming (session inside a guarded block)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._blocked = 0
        self._by_category: dict[str, int] = {}
        self._by_event: dict[str, int] = {}
        self._sessions = 0
        self._handlers: dict[str, Callable[[tuple], tuple[str, str] | None]] = {
            "open": self._on_open,
            "os.rename": lambda a: (FS, f"{_target(a[0])} -> {_target(a[1])}"),
            "os.remove": lambda a: (FS, _target(a[0])),
            "os.rmdir": lambda a: (FS, _target(a[0])),
            "os.mkdir": lambda a: (FS, _target(a[0])),
            "os.link": lambda a: (FS, f"{_target(a[0])} -> {_target(a[1])}"),
            "os.symlink": lambda a: (FS, f"{_target(a[0])} -> {_target(a[1])}"),
            "os.truncate": lambda a: None if _is_device_like(a[0]) else (FS, _target(a[0])),
            "os.chmod": lambda a: (FS, _target(a[0])),
            "os.chown": lambda a: (FS, _target(a[0])),
            "os.utime": lambda a: (FS, _target(a[0])),
            "os.setxattr": lambda a: (FS, _target(a[0])),
            "os.removexattr": lambda a: (FS, _target(a[0])),
            "shutil.copyfile": lambda a: (COPY, f"{_target(a[0])} -> {_target(a[1])}"),
            "shutil.copymode": lambda a: (COPY, f"{_target(a[0])} -> {_target(a[1])}"),
            "shutil.copystat": lambda a: (COPY, f"{_target(a[0])} -> {_target(a[1])}"),
            "shutil.copytree": lambda a: (COPY, f"{_target(a[0])} -> {_target(a[1])}"),
            "shutil.move": lambda a: (COPY, f"{_target(a[0])} -> {_target(a[1])}"),
            "shutil.rmtree": lambda a: (FS, _target(a[0])),
            "shutil.make_archive": lambda a: (COPY, _target(a[0])),
            "shutil.unpack_archive": lambda a: (COPY, _target(a[0])),
            "shutil.chown": lambda a: (FS, _target(a[0])),
            "sqlite3.connect": lambda a: None if a[0] in (":memory:", "", b":memory:") else (FILE, _target(a[0])),
            "cv2.imwrite": lambda a: (FILE, _target(a[0])),  # persistence-ok: the guard refusing writes
            "cv2.VideoWriter": lambda a: (FILE, _target(a[0])),  # persistence-ok: the guard refusing writes
            "socket.connect": lambda a: None if _socket_allowed(a[0], a[1], binding=False) else (NETWORK, _target(a[1])),
            "socket.sendto": lambda a: None if _socket_allowed(a[0], a[1], binding=False) else (NETWORK, _target(a[1])),
            "socket.sendmsg": lambda a: None if _socket_allowed(a[0], a[1], binding=False) else (NETWORK, _target(a[1])),
            "socket.bind": lambda a: None if _socket_allowed(a[0], a[1], binding=True) else (NETWORK, _target(a[1])),
            "socket.getaddrinfo": lambda a: None if _is_local_host(a[0]) else (NETWORK, _target(a[0])),
            "socket.gethostbyname": lambda a: None if _is_local_host(a[0]) else (NETWORK, _target(a[0])),
            "socket.gethostbyname_ex": lambda a: None if _is_local_host(a[0]) else (NETWORK, _target(a[0])),
            "socket.gethostbyaddr": lambda a: None if _is_local_host(a[0]) else (NETWORK, _target(a[0])),
            "subprocess.Popen": lambda a: (PROCESS, _target(a[0])),
            "os.system": lambda a: (PROCESS, _target(a[0])),
            "os.exec": lambda a: (PROCESS, _target(a[0])),
            "os.posix_spawn": lambda a: (PROCESS, _target(a[0])),
            "os.spawn": lambda a: (PROCESS, _target(a[1]) if len(a) > 1 else "?"),
            "pty.spawn": lambda a: (PROCESS, _target(a[0])),
        }

    # --- switching ---------------------------------------------------------

    def install(self) -> "PrivacyGuard":
        """Add the audit hook (once per process; it stays for the process's life)."""
        with self._lock:
            if not self._installed:
                sys.addaudithook(self._hook)
                self._installed = True
                # A module first imported mid-session would try to cache its bytecode:
                # a refused write and a warning for nothing. Service mode never caches.
                sys.dont_write_bytecode = True
                _audit_opencv_writers()
                log.debug("privacy guard installed (disarmed)")
        return self

    @property
    def installed(self) -> bool:
        return self._installed

    @property
    def armed(self) -> bool:
        return self._depth > 0

    def arm(self) -> None:
        self.install()
        _audit_opencv_writers()  # cv2 may have been imported after install()
        with self._lock:
            self._depth += 1
            if self._depth == 1:
                self._sessions += 1

    def disarm(self) -> None:
        with self._lock:
            if self._depth == 0:
                return
            self._depth -= 1

    @contextmanager
    def session(self) -> Iterator["PrivacyGuard"]:
        self.arm()
        try:
            yield self
        finally:
            self.disarm()

    # --- counters ----------------------------------------------------------

    def counters(self) -> GuardCounters:
        with self._lock:
            return GuardCounters(
                blocked=self._blocked,
                by_category=dict(self._by_category),
                by_event=dict(self._by_event),
                sessions=self._sessions,
                armed=self._depth > 0,
                installed=self._installed,
            )

    def reset_counters(self) -> None:
        with self._lock:
            self._blocked = 0
            self._by_category.clear()
            self._by_event.clear()
            self._sessions = 0

    # --- the hook ----------------------------------------------------------

    def _hook(self, event: str, args: tuple) -> None:
        if self._depth == 0:
            return
        handler = self._handlers.get(event)
        if handler is None:
            return
        if getattr(self._local, "busy", False):
            return  # our own logging/stat calls below; never recurse
        self._local.busy = True
        try:
            try:
                verdict = handler(args)
            except Exception:  # a malformed event must not crash the caller
                verdict = (FILE if event == "open" else FS, "?")
            if verdict is None:
                return
            category, target = verdict
            with self._lock:
                self._blocked += 1
                self._by_category[category] = self._by_category.get(category, 0) + 1
                self._by_event[event] = self._by_event.get(event, 0) + 1
            log.warning("privacy guard refused %s (%s) on %s during a session", event, category, target)
        finally:
            self._local.busy = False
        raise PrivacyViolation(
            errno.EPERM,
            f"privacy guard: {event} on {target} refused while a liveness session runs "
            f"(no file writes or off-host sockets in service mode)",
        )

    @staticmethod
    def _on_open(args: tuple) -> tuple[str, str] | None:
        path, mode, flags = (tuple(args) + (None, None, None))[:3]
        writing = bool(flags is not None and flags & _WRITE_FLAGS)
        if isinstance(mode, str) and any(c in mode for c in "wax+"):
            writing = True
        if not writing:
            return None
        if _is_device_like(path):
            return None
        return FILE, _target(path)


GUARD = PrivacyGuard()


def install() -> PrivacyGuard:
    """Install the (disarmed) hook. Call once at service start-up."""
    return GUARD.install()


@contextmanager
def session_guard(enabled: bool = True) -> Iterator[PrivacyGuard]:
    """Arm the guard for the body (one session). ``enabled=False`` is a no-op (dev mode)."""
    if not enabled:
        yield GUARD
        return
    with GUARD.session() as guard:
        yield guard


def counters() -> GuardCounters:
    return GUARD.counters()


_WRAPPED_ATTR = "__edge_audited__"


def _audit_opencv_writers() -> None:
    """Make OpenCV's C-level file writers raise audit events the hook can refuse.

    cv2.imwrite/imwritemulti/VideoWriter write through libc and are invisible  # persistence-ok: the guard refusing writes
    to PEP 578. Only patched if cv2 is already imported: we never import it.
    """
    cv2 = sys.modules.get("cv2")
    if cv2 is None:
        return
    for name, event in (("imwrite", "cv2.imwrite"), ("imwritemulti", "cv2.imwrite"),  # persistence-ok: the guard refusing writes
                        ("VideoWriter", "cv2.VideoWriter")):  # persistence-ok: the guard refusing writes
        original = getattr(cv2, name, None)
        if original is None or getattr(original, _WRAPPED_ATTR, False):
            continue

        def wrapper(*args: Any, __original: Any = original, __event: str = event, **kwargs: Any) -> Any:
            target = args[0] if args else kwargs.get("filename")
            if target is not None:
                sys.audit(__event, target)
            return __original(*args, **kwargs)

        setattr(wrapper, _WRAPPED_ATTR, True)
        wrapper.__name__ = name
        wrapper.__doc__ = getattr(original, "__doc__", None)
        try:
            setattr(cv2, name, wrapper)
        except (AttributeError, TypeError):  # pragma: no cover - read-only module attribute
            log.debug("could not wrap cv2.%s for the privacy guard", name)
