"""Process hardening from the inside: no core dumps, memory kept out of swap.

Called once at service start, before any frame exists. The unit already sets
LimitCORE=0 and LimitMEMLOCK=infinity; doing it again from inside the process
covers `edge run` started by hand or by another supervisor.

- ``RLIMIT_CORE = 0`` (soft and hard) so no core file can be written;
- ``prctl(PR_SET_DUMPABLE, 0)`` so the kernel does not dump us and other
  processes of the same UID cannot ptrace us or read /proc/<pid>/mem;
- ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`` so face pixels never
  reach swap. MCL_ONFAULT (Linux 4.4+) locks pages as they are touched rather
  than populating every reserved mapping up front, which matters on a 512 MB
  Pi Zero 2. Where locking is not permitted the runtime continues with a
  warning: refusing to start over swap would lock the door for everyone.

Note on RLIMIT_MEMLOCK: with MCL_FUTURE and a finite limit, any allocation
that would push locked memory past the limit *fails* (numpy raises
MemoryError mid-session). So an unprivileged process with a finite limit does
not attempt MCL_FUTURE at all; the unit sets LimitMEMLOCK=infinity.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import resource
import sys
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["HardenReport", "harden", "harden_process", "get_dumpable", "swap_active"]

PR_GET_DUMPABLE = 3
PR_SET_DUMPABLE = 4
# Same values on arm, aarch64 and x86 (asm-generic); PowerPC/SPARC differ but are not targets.
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
CAP_IPC_LOCK = 14


@dataclass(frozen=True)
class HardenReport:
    core_limit_zero: bool  # soft RLIMIT_CORE is 0 (hard too unless a seccomp filter refused)
    dumpable_off: bool  # PR_GET_DUMPABLE returns 0
    memory_locked: bool  # mlockall succeeded
    lock_flags: str = ""  # e.g. "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT"
    memlock_limit: int | None = None  # soft RLIMIT_MEMLOCK in bytes; None = unlimited
    swap_active: bool | None = None  # None = unknown
    warnings: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """Everything applied; memory counts as fine if there is no swap to leak into."""
        return self.core_limit_zero and self.dumpable_off and (self.memory_locked or self.swap_active is False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "core_limit_zero": self.core_limit_zero,
            "dumpable_off": self.dumpable_off,
            "memory_locked": self.memory_locked,
            "lock_flags": self.lock_flags,
            "memlock_limit": self.memlock_limit,
            "swap_active": self.swap_active,
            "warnings": list(self.warnings),
        }


def _libc() -> Any:
    name = ctypes.util.find_library("c")
    return ctypes.CDLL(name, use_errno=True)


def get_dumpable(libc: Any = None) -> int | None:
    """PR_GET_DUMPABLE for this process (0, 1 or 2); None where prctl is unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    libc = libc or _libc()
    value = libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
    return None if value < 0 else int(value)


def swap_active(proc_swaps: str = "/proc/swaps") -> bool | None:
    """True if any swap area (zram included) is in use; None if unknown."""
    try:
        with open(proc_swaps, encoding="ascii", errors="replace") as fh:
            lines = [ln for ln in fh.read().splitlines()[1:] if ln.strip()]
    except OSError:
        return None
    return bool(lines)


def _has_cap_ipc_lock(status_path: str = "/proc/self/status") -> bool:
    try:
        with open(status_path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False


def _disable_core_dumps(warnings: list[str]) -> bool:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (OSError, ValueError) as err:
        # A seccomp filter may refuse setrlimit; lowering soft alone still works then.
        try:
            _, hard = resource.getrlimit(resource.RLIMIT_CORE)
            resource.setrlimit(resource.RLIMIT_CORE, (0, hard))
        except (OSError, ValueError):
            pass
        warnings.append(f"setrlimit(RLIMIT_CORE, 0) failed: {err}; set LimitCORE=0 in the unit")
    return resource.getrlimit(resource.RLIMIT_CORE)[0] == 0


def _disable_dumpable(libc: Any, warnings: list[str]) -> bool:
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        warnings.append(f"prctl(PR_SET_DUMPABLE, 0) failed: {os.strerror(err)}")
    return get_dumpable(libc) == 0


def _lock_memory(libc: Any, warnings: list[str]) -> tuple[bool, str, int | None]:
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = None if soft == resource.RLIM_INFINITY else int(soft)
    if limit is not None and not _has_cap_ipc_lock():
        warnings.append(
            f"memory not locked: RLIMIT_MEMLOCK is {limit} bytes and the process lacks CAP_IPC_LOCK, "
            "and MCL_FUTURE under a finite limit makes later allocations fail; face pixels could reach "
            "swap. Fix: LimitMEMLOCK=infinity in the unit (systemd/edge.service sets it) or `ulimit -l unlimited`"
        )
        return False, "", limit
    attempts = [
        (MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT, "MCL_CURRENT|MCL_FUTURE|MCL_ONFAULT"),
        (MCL_CURRENT | MCL_FUTURE, "MCL_CURRENT|MCL_FUTURE"),  # kernels before 4.4 reject ONFAULT
    ]
    last_err = 0
    for flags, name in attempts:
        if libc.mlockall(flags) == 0:
            return True, name, limit
        last_err = ctypes.get_errno()
        if last_err != errno.EINVAL:
            break
    if last_err in (errno.EPERM, errno.ENOMEM, errno.EAGAIN):
        why = {
            errno.EPERM: "not permitted (seccomp filter or no CAP_IPC_LOCK)",
            errno.ENOMEM: "RLIMIT_MEMLOCK too small for the current mappings",
            errno.EAGAIN: "some memory could not be locked",
        }[last_err]
        warnings.append(f"mlockall failed: {why}; face pixels could reach swap. "
                        "Fix: LimitMEMLOCK=infinity in the unit, or disable swap on the device")
    else:
        warnings.append(f"mlockall failed: {os.strerror(last_err)}")
    return False, "", limit


def harden(*, lock_memory: bool = True, libc: Any = None) -> HardenReport:
    """Apply the in-process hardening; never raises, reports what held.

    Call before loading models (so the model buffers are locked too) and only
    in the process that will handle frames: it changes process-wide state.
    """
    warnings: list[str] = []
    if not sys.platform.startswith("linux"):
        return HardenReport(False, False, False, warnings=("process hardening is only implemented on Linux",))
    libc = libc or _libc()
    core = _disable_core_dumps(warnings)
    dumpable = _disable_dumpable(libc, warnings)
    locked, flags, limit = _lock_memory(libc, warnings) if lock_memory else (False, "", None)
    swap = swap_active()
    report = HardenReport(core, dumpable, locked, flags, limit, swap, tuple(warnings))
    for w in warnings:
        log.warning("harden: %s", w)
    log.info("harden: core dumps %s, dumpable %s, memory %s (swap %s)",
             "off" if core else "ON", "off" if dumpable else "ON",
             f"locked ({flags})" if locked else "not locked",
             {True: "active", False: "none", None: "unknown"}[swap])
    return report


def harden_process(*, mlock: bool = True) -> HardenReport:
    """What ``edge run --service`` calls: :func:`harden` with config key ``service.mlock``."""
    return harden(lock_memory=mlock)
