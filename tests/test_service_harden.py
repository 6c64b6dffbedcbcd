"""In-process hardening, checked in child processes so the test process keeps its own limits."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from edge.service.harden import get_dumpable, swap_active
from timescale import scaled

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    from edge.service.harden import harden, get_dumpable
    r = harden()
    vmlck = 0
    for line in open("/proc/self/status"):
        if line.startswith("VmLck:"):
            vmlck = int(line.split()[1])
    print(json.dumps({"report": r.to_dict(), "ok": r.ok, "core": list(resource.getrlimit(resource.RLIMIT_CORE)),
                      "dumpable": get_dumpable(), "vmlck_kb": vmlck}))
    """
)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only process hardening")


def _run(code: str, *, preexec=None, memlock: int | None = None) -> dict:
    def pre():
        if memlock is not None:
            resource.setrlimit(resource.RLIMIT_MEMLOCK, (memlock, memlock))
        if preexec:
            preexec()

    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=scaled(60),
                         preexec_fn=pre, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_core_dumps_and_dumpable_off_in_child():
    res = _run(CHILD)
    assert res["core"] == [0, 0]
    assert res["dumpable"] == 0
    assert res["report"]["core_limit_zero"] and res["report"]["dumpable_off"]
    if res["report"]["memory_locked"]:
        assert "MCL_FUTURE" in res["report"]["lock_flags"]
        assert res["vmlck_kb"] > 0
    else:
        # unprivileged CI: locking may be refused, but then it must say why and how to fix it
        assert any("LimitMEMLOCK" in w or "mlockall" in w for w in res["report"]["warnings"])
    # the test process itself is untouched
    assert get_dumpable() == 1
    assert resource.getrlimit(resource.RLIMIT_CORE) != (0, 0) or os.environ.get("CI_CORE_ZERO")


def test_finite_memlock_unprivileged_degrades_with_warning():
    # Root (this sandbox) holds CAP_IPC_LOCK, and the venv's interpreter may not be
    # executable by an unprivileged uid, so the capability probe is overridden in the
    # child; the finite RLIMIT_MEMLOCK is real.
    code = "from edge.service import harden as h\nh._has_cap_ipc_lock = lambda status_path=None: False\n" + CHILD
    res = _run(code, memlock=64 * 1024)
    r = res["report"]
    assert r["memory_locked"] is False
    assert r["memlock_limit"] == 64 * 1024
    assert any("LimitMEMLOCK=infinity" in w for w in r["warnings"])
    assert r["core_limit_zero"] and r["dumpable_off"]  # the rest still applied
    assert res["vmlck_kb"] == 0


def test_mlockall_eperm_and_einval_paths():
    code = textwrap.dedent(
        """
        import ctypes, errno, json, resource
        from edge.service import harden as h
        class Fake:
            def __init__(self, errs):
                self.errs = list(errs); self.calls = []
                self.real = h._libc()
            def prctl(self, *a):
                return self.real.prctl(*a)
            def mlockall(self, flags):
                self.calls.append(flags)
                e = self.errs.pop(0)
                if e:
                    ctypes.set_errno(e); return -1
                return 0
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)) \\
            if resource.getrlimit(resource.RLIMIT_MEMLOCK)[1] == resource.RLIM_INFINITY else None
        out = {}
        h._has_cap_ipc_lock = lambda status_path=None: True  # reach the syscall whatever the limit
        f = Fake([errno.EPERM]); r = h.harden(libc=f)
        out["eperm"] = [r.memory_locked, r.warnings[-1], f.calls]
        f = Fake([errno.EINVAL, 0]); r = h.harden(libc=f)
        out["einval"] = [r.memory_locked, r.lock_flags, f.calls]
        f = Fake([errno.ENOMEM]); r = h.harden(libc=f)
        out["enomem"] = [r.memory_locked, r.warnings[-1]]
        print(json.dumps(out))
        """
    )
    res = _run(code)
    locked, warning, calls = res["eperm"]
    assert not locked and "not permitted" in warning and calls == [7]
    locked, flags, calls = res["einval"]
    assert locked and flags == "MCL_CURRENT|MCL_FUTURE" and calls == [7, 3]
    locked, warning = res["enomem"]
    assert not locked and "RLIMIT_MEMLOCK" in warning


def test_swap_active_parses_proc_swaps(tmp_path):
    f = tmp_path / "swaps"
    f.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    assert swap_active(str(f)) is False
    f.write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 1024 0 100\n")
    assert swap_active(str(f)) is True
    assert swap_active(str(tmp_path / "absent")) is None
