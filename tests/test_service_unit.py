"""systemd/edge.service: `systemd-analyze verify` silent, `security --offline` exposure <= 2.0.

verify checks that ExecStart's binary exists, and /opt/edge/.venv/bin/edge only
exists on an installed device, so both checks run on a copy of the unit in a
temporary directory whose ExecStart is rewritten to /bin/true. Every other
line is verified as shipped.
"""

from __future__ import annotations

import configparser
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "edge.service"
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)")


def _directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


@pytest.fixture
def unit_copy(tmp_path) -> Path:
    text = UNIT.read_text()
    assert re.search(r"^ExecStart=/opt/edge/\.venv/bin/edge run --service --config ", text, re.M)
    copy = tmp_path / "edge.service"
    copy.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", text, flags=re.M))
    return copy


@needs_analyze
def test_verify_is_silent(unit_copy):
    out = subprocess.run([ANALYZE, "verify", str(unit_copy)], capture_output=True, text=True, timeout=60)
    # verify exits 0 on unknown keys and only warns: any output at all is a failure.
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr
    assert out.stdout == "", out.stdout


@needs_analyze
def test_verify_check_would_catch_a_bad_key(unit_copy):
    # The check above relies on stderr, since verify exits 0 on unknown keys: prove it speaks.
    unit_copy.write_text(unit_copy.read_text().replace("UMask=0077", "UMask=0077\nProtectEverything=yes"))
    out = subprocess.run([ANALYZE, "verify", str(unit_copy)], capture_output=True, text=True, timeout=60)
    assert "ProtectEverything" in out.stderr


@needs_analyze
def test_security_exposure_at_most_2(unit_copy):
    out = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit_copy)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for edge\.service:\s*([0-9.]+)", out.stdout)
    assert m, out.stdout + out.stderr
    score = float(m.group(1))
    print(f"systemd-analyze security --offline=true: {score}")
    assert score <= 2.0, out.stdout


def test_unit_promises():
    d = _directives(UNIT.read_text())
    one = {k: v[-1] for k, v in d.items()}
    expected = {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "5", "Restart": "on-failure",
        "RestartSec": "2", "TimeoutStopSec": "5", "LimitCORE": "0", "DynamicUser": "yes",
        "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes", "DevicePolicy": "closed",
        "PrivateNetwork": "yes", "IPAddressDeny": "any", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "NoNewPrivileges": "yes", "UMask": "0077", "ProtectProc": "invisible", "ProcSubset": "pid",
        "SystemCallArchitectures": "native", "LockPersonality": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes", "MemoryDenyWriteExecute": "yes",
        "LimitMEMLOCK": "infinity",
    }
    for key, value in expected.items():
        assert one.get(key) == value, (key, one.get(key))
    for key in ("ProtectKernelTunables", "ProtectKernelModules", "ProtectKernelLogs", "ProtectControlGroups",
                "ProtectClock", "ProtectHostname"):
        assert one.get(key) == "yes", key
    assert d["SystemCallFilter"][0] == "@system-service"
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "dialout", "gpio"}
    assert set(d["RestrictAddressFamilies"][0].split()) <= {"AF_UNIX", "AF_NETLINK"}
    assert "hmac-key:/etc/edge/hmac.key" in d["LoadCredential"]
    allowed = {v.split()[0] for v in d["DeviceAllow"]}
    for dev in ("char-video4linux", "char-media", "char-dma_heap", "char-ttyAMA", "char-ttyUSB",
                "char-ttyACM", "char-gpiochip", "char-apex"):
        assert dev in allowed, dev
    # Nothing the service could write to.
    for key in ("StateDirectory", "CacheDirectory", "LogsDirectory", "ReadWritePaths", "RuntimeDirectory"):
        assert key not in d, key


def test_dropins_parse_and_say_what_they_must():
    j = configparser.ConfigParser()
    j.read(ROOT / "systemd" / "journald.conf.d" / "edge-volatile.conf")
    assert j["Journal"]["Storage"] == "volatile"
    c = configparser.ConfigParser()
    c.read(ROOT / "systemd" / "coredump.conf.d" / "edge.conf")
    assert c["Coredump"]["Storage"] == "none"
    assert c["Coredump"]["ProcessSizeMax"] == "0"
