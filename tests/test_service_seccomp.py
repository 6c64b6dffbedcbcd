"""The unit's system call filter does not break the runtime.

systemd is not PID 1 here, so the unit itself cannot be started. Instead the
test builds the same filter the unit asks for (SystemCallFilter=@system-service,
then ~@privileged @resources, every other call failing with EPERM as
SystemCallErrorNumber=EPERM says), with the group contents taken from this
machine's `systemd-analyze syscall-filter`, loads it into a child process
through libseccomp (which systemd itself uses), and runs the service's work
under it: in-process hardening, imports, model loading, three full sessions
under the privacy guard.
"""

from __future__ import annotations

import ctypes.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
from functools import lru_cache
from pathlib import Path

import pytest
from timescale import scaled

ROOT = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze")
LIBSECCOMP = ctypes.util.find_library("seccomp")
pytestmark = [
    pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed"),
    pytest.mark.skipif(LIBSECCOMP is None, reason="libseccomp not installed"),
    pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux-only"),
]


@lru_cache(maxsize=None)
def expand(group: str) -> frozenset[str]:
    out = subprocess.run([ANALYZE, "syscall-filter", group], capture_output=True, text=True, check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:  # first line is the group's own name
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        names |= expand(item) if item.startswith("@") else {item}
    return frozenset(names)


def unit_filter() -> list[str]:
    text = (ROOT / "systemd" / "edge.service").read_text()
    lines = [ln.split("=", 1)[1].strip() for ln in text.splitlines() if ln.startswith("SystemCallFilter=")]
    allowed: set[str] = set()
    for value in lines:
        deny = value.startswith("~")
        items = value.lstrip("~").split()
        names = set().union(*(expand(i) if i.startswith("@") else {i} for i in items))
        allowed = allowed - names if deny else allowed | names
    return sorted(allowed)


CHILD = textwrap.dedent(
    r"""
    import ctypes, json, os, sys
    names = json.loads(open(sys.argv[1]).read())
    lib = ctypes.CDLL(sys.argv[2], use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    SCMP_ACT_ALLOW, EPERM = 0x7FFF0000, 1
    ctx = lib.seccomp_init(0x00050000 | EPERM)     # default: fail with EPERM
    n = 0
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0 and lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0) == 0:
            n += 1
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(38, 1, 0, 0, 0) == 0          # PR_SET_NO_NEW_PRIVS, as systemd does
    assert lib.seccomp_load(ctypes.c_void_p(ctx)) == 0, ctypes.get_errno()
    # Proof the filter is live: a @privileged call now fails with EPERM.
    denied = libc.syscall(lib.seccomp_syscall_resolve_name(b"acct"), None) != 0 and ctypes.get_errno() == EPERM

    from edge.service.harden import harden
    report = harden()
    from edge import config as config_mod
    from edge.assemble import build_pipeline
    from edge.camera import open_camera
    from edge.service.guard import GUARD, session_guard
    cfg = config_mod.load(None, overrides={"camera": {"source": sys.argv[3]}, "models": {"dir": sys.argv[4]}})
    pipeline = build_pipeline(cfg)
    verdicts = []
    for _ in range(3):
        with session_guard():
            o = pipeline.run_session(open_camera(cfg.camera.source))
        verdicts.append([o.verdict.kind.value, o.verdict.reason.name, o.verdict.frames_used])
    pipeline.close()
    print(json.dumps({"rules": n, "denied_privileged": denied, "harden": report.to_dict(),
                      "verdicts": verdicts, "blocked": GUARD.counters().blocked}))
    """
)


def test_runtime_works_under_the_units_syscall_filter(models_env, tmp_path):
    names = unit_filter()
    assert "mlockall" in names and "prctl" in names and "acct" not in names and "setrlimit" not in names
    allow = tmp_path / "allow.json"
    allow.write_text(json.dumps(names))
    clip = ROOT / "demo" / "astronaut.avi"
    source = f"video://{clip}" if clip.exists() else "synthetic://?pattern=face"
    proc = subprocess.run([sys.executable, "-c", CHILD, str(allow), LIBSECCOMP, source, str(models_env)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=scaled(600),
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["rules"] > 200 and out["denied_privileged"]
    h = out["harden"]
    assert h["core_limit_zero"] and h["dumpable_off"], h  # prlimit64 and prctl are in @system-service
    if os.geteuid() == 0:
        assert h["memory_locked"], h  # mlockall (@memlock) is allowed
    assert all(v[0] != "FAULT" for v in out["verdicts"]), out["verdicts"]
    assert out["blocked"] == 0
