"""`edge run` as an OSDP reader against ``osdp==1.6``, a pure-Python control panel independent
of libosdp, so the reader is not only tested against its own stack. osdp 1.6 installs the
same top-level ``osdp`` package as libosdp, so it lives in its own venv (``.venv-osdp16/``,
git-ignored, made here on first use; skipped with the reason where it cannot be built).

Plaintext (a reader with osdp.enforce_secure = false), Secure Channel with an SCBK derived
from a master key as osdp 1.6 derives it (AES-ECB_MK(cUID || ~cUID)), and install mode
where osdp 1.6 sets that key with KEYSET: ID, CAP, MFG START, and the VERDICT received
through osdp 1.6's generic reply handler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytest.importorskip("osdp_sys", reason="libosdp is not installed (pip install 'libosdp==3.2.9')")

REPO = Path(__file__).resolve().parents[1]
SIDE_VENV = REPO / ".venv-osdp16"
HELPER = Path(__file__).with_name("osdp16_panel.py")
sys.path.insert(0, str(REPO))

from firmware_bridge.tests.fakes import PtyLink  # noqa: E402
from timescale import scaled  # noqa: E402

MASTER_KEY = bytes(range(0xA0, 0xB0)).hex()
ADDRESS, VENDOR, MODEL, HW, SERIAL = 9, 0xFACE00, 1, 1, 0x01020304


@pytest.fixture(scope="module")
def osdp16_python() -> Path:
    py = SIDE_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import osdp, Crypto; assert osdp.ControlPanel"],
                                        capture_output=True).returncode == 0
    if not ok:
        try:
            venv.EnvBuilder(with_pip=True, clear=True).create(SIDE_VENV)
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", "osdp==1.6"],
                               capture_output=True, text=True, timeout=300)
        except Exception as err:  # no venv module, no network, no disk
            pytest.skip(f"cannot build the osdp==1.6 venv at {SIDE_VENV}: {err}")
        if r.returncode != 0:
            pytest.skip(f"cannot install osdp==1.6 into {SIDE_VENV}: {r.stderr.strip()[-300:]}")
    return py


def libosdp_cuid() -> bytes:
    """The cUID libosdp's PD sends in CCRYPT (src/osdp_sc.c): vendor code (2 low bytes), model,
    the version's second byte, the 4-byte serial, all little-endian."""
    return bytes([VENDOR & 0xFF, (VENDOR >> 8) & 0xFF, MODEL, (HW >> 8) & 0xFF]) + SERIAL.to_bytes(4, "little")


def run_pair(tmp: Path, models: Path, py: Path, mode: str, osdp_cfg: str):
    link = PtyLink().__enter__()
    cfg = tmp / "edge.toml"
    cfg.write_text(f"""
[camera]
source = "synthetic://?pattern=face&frames=3"
[liveness]
mode = "passive"  # the wire's verdict paths; the challenge is tested on its own
[trigger]
kind = "osdp"
[osdp]
port = "{link.paths[1]}"
baudrate = 115200
address = {ADDRESS}
serial_number = {SERIAL}
panel_timeout_ms = 3000
{osdp_cfg}
""")
    env = dict(os.environ, EDGE_MODELS_DIR=str(models), PYTHONPATH=str(REPO))
    rt = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(cfg)], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, cwd=REPO, env=env)
    side_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    panel = subprocess.Popen([str(py), str(HELPER), "--port", link.paths[0], "--address", str(ADDRESS), "--mode", mode,
                              "--master-key", MASTER_KEY], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             cwd=tmp, env=side_env)
    try:
        out, err = panel.communicate(timeout=scaled(60))
    finally:
        if panel.poll() is None:
            panel.kill()
        rt.send_signal(signal.SIGTERM)
        try:
            _, rt_err = rt.communicate(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            rt.kill()
            _, rt_err = rt.communicate()
        link.__exit__(None, None, None)
    events = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
    return panel.returncode, events, f"panel: {err[-2000:]}\nruntime: {rt_err[-3000:]}"


def check(rc, events, log):
    names = [e["event"] for e in events]
    assert rc == 0, (names, log)
    for n in ("online", "pdid", "pdcap", "mfg_sent", "verdict"):
        assert n in names, (names, log)
    v = next(e for e in events if e["event"] == "verdict")
    assert (v["verdict"], v["nonce_ok"], v["session"]) == ("FAIL", True, 77), v
    assert "prompt" in names
    from edge import __version__

    pid = next(e for e in events if e["event"] == "pdid")
    assert (pid["vendor_code"], pid["model"], pid["version"], pid["serial_number"]) == (VENDOR, MODEL, HW, SERIAL)
    assert pid["firmware"] == [int(x) for x in __version__.split(".")[:3]]
    caps = next(e for e in events if e["event"] == "pdcap")["caps"]
    assert caps["CommunicationSecurity"][0] == 1, caps


def test_plaintext(tmp_path, built_models_dir, osdp16_python):
    rc, events, log = run_pair(tmp_path, built_models_dir, osdp16_python, "plain", "enforce_secure = false")
    check(rc, events, log)


def test_secure_channel_with_master_key_derived_scbk(tmp_path, built_models_dir, osdp16_python):
    scbk = subprocess.run([str(osdp16_python), str(HELPER), "--derive-scbk", "--master-key", MASTER_KEY, "--cuid",
                           libosdp_cuid().hex()], capture_output=True, text=True, check=True).stdout.strip()
    key = tmp_path / "scbk.key"
    key.write_text(scbk + "\n")
    key.chmod(0o600)
    rc, events, log = run_pair(tmp_path, built_models_dir, osdp16_python, "sc", f'scbk_file = "{key}"')
    check(rc, events, log)
    secure = next(e for e in events if e["event"] == "secure")
    assert secure["cuid"] == libosdp_cuid().hex()
    assert events[-1]["secure"] is True


def test_install_mode_keyset_from_osdp16(tmp_path, built_models_dir, osdp16_python):
    keyset = tmp_path / "keyset.key"
    rc, events, log = run_pair(tmp_path, built_models_dir, osdp16_python, "install",
                               f'install_mode = true\nkeyset_file = "{keyset}"')
    check(rc, events, log)
    derived = subprocess.run([str(osdp16_python), str(HELPER), "--derive-scbk", "--master-key", MASTER_KEY, "--cuid",
                              libosdp_cuid().hex()], capture_output=True, text=True, check=True).stdout.strip()
    assert keyset.read_text().strip() == derived
    assert (keyset.stat().st_mode & 0o777) == 0o600


def test_no_session_over_the_install_key(tmp_path, built_models_dir, osdp16_python):
    """A panel that stays on the public install key SCBK-D (no KEYSET) gets REJECT 'not secure'
    for START: libosdp counts an SCBK-D channel as not secure, and so does the reader."""
    keyset = tmp_path / "keyset.key"
    rc, events, log = run_pair(tmp_path, built_models_dir, osdp16_python, "scbkd",
                               f'install_mode = true\nkeyset_file = "{keyset}"')
    names = [e["event"] for e in events]
    assert rc == 0 and "secure" in names and "mfg_sent" in names, (names, log)
    assert next(e for e in events if e["event"] == "reject")["code"] == 2
    assert "verdict" not in names and "START session" not in log and not keyset.exists()
