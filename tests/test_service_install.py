"""scripts/install.sh: syntax, --dry-run changes nothing, a fake-root install and uninstall.

The fake root (--root DIR) installs every file the real install does (unit,
drop-ins, config, key, model manifests) with the real modes, but skips apt,
the venv, groupadd and systemctl.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "install.sh"
BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="bash not installed")


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([BASH, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def _tree(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_bash_syntax():
    subprocess.run([BASH, "-n", str(SCRIPT)], check=True)


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck():
    out = subprocess.run(["shellcheck", "-S", "warning", str(SCRIPT)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_help():
    out = _sh("--help")
    assert "--uninstall" in out.stdout and "--dry-run" in out.stdout


def test_bad_option_is_usage_error():
    assert _sh("--frobnicate", check=False).returncode == 2


def test_dry_run_changes_nothing(tmp_path):
    out = _sh("--dry-run", "--root", str(tmp_path), "--no-venv")
    assert _tree(tmp_path) == []
    text = out.stdout
    for what in ("/etc/systemd/system/edge.service", "/etc/systemd/journald.conf.d/edge-volatile.conf",
                 "/etc/systemd/coredump.conf.d/edge.conf", "/etc/edge/edge.toml", "/etc/edge/hmac.key"):
        assert what in text, what
    assert "Dry run: nothing was changed" in text


def test_fake_root_install_is_complete_private_and_idempotent(tmp_path):
    _sh("--root", str(tmp_path), "--no-venv")
    unit = tmp_path / "etc/systemd/system/edge.service"
    assert unit.read_bytes() == (ROOT / "systemd/edge.service").read_bytes()
    assert _mode(unit) == 0o644
    j = tmp_path / "etc/systemd/journald.conf.d/edge-volatile.conf"
    c = tmp_path / "etc/systemd/coredump.conf.d/edge.conf"
    assert "Storage=volatile" in j.read_text() and "Storage=none" in c.read_text()
    cfg = tmp_path / "etc/edge/edge.toml"
    assert _mode(cfg) == 0o640
    assert cfg.read_text() == (ROOT / "systemd/edge.toml.example").read_text()
    key = tmp_path / "etc/edge/hmac.key"
    assert _mode(key) == 0o600
    if os.geteuid() == 0:
        assert key.stat().st_uid == 0 and cfg.stat().st_uid == 0
    from edge.bridge.keys import read_key_file

    secret = read_key_file(key)
    assert len(secret) == 32
    assert sorted(p.name for p in (tmp_path / "opt/edge/models").glob("*.toml")) == \
        sorted(p.name for p in (ROOT / "models").glob("*.toml"))
    assert not list(tmp_path.rglob(".hmac.key.*"))  # no temp file left behind

    # Second run keeps the key and a locally edited config.
    cfg.write_text(cfg.read_text() + "\n# local edit\n")
    key.chmod(0o644)  # loosened by hand: the installer tightens it again
    out = _sh("--root", str(tmp_path), "--no-venv")
    assert read_key_file(key) == secret and _mode(key) == 0o600
    assert cfg.read_text().endswith("# local edit\n")
    assert "exists: left as it is" in out.stdout


def test_example_config_validates():
    from edge import config as config_mod

    cfg = config_mod.load(str(ROOT / "systemd/edge.toml.example"))
    assert cfg.trigger.kind == "serial"
    assert cfg.serial.key_credential == "hmac-key"
    assert cfg.models.dir.startswith("/")  # the service sees the config in $CREDENTIALS_DIRECTORY


def test_uninstall_keeps_config_unless_purged(tmp_path):
    _sh("--root", str(tmp_path), "--no-venv")
    out = _sh("--uninstall", "--root", str(tmp_path))
    assert not (tmp_path / "etc/systemd/system/edge.service").exists()
    assert not (tmp_path / "etc/systemd/journald.conf.d/edge-volatile.conf").exists()
    assert not (tmp_path / "etc/systemd/coredump.conf.d/edge.conf").exists()
    assert not (tmp_path / "opt/edge").exists()
    assert (tmp_path / "etc/edge/hmac.key").exists()
    assert "--purge" in out.stdout
    dry = _sh("--uninstall", "--purge", "--dry-run", "--root", str(tmp_path))
    assert (tmp_path / "etc/edge/hmac.key").exists() and "would run: rm -rf" in dry.stdout
    _sh("--uninstall", "--purge", "--root", str(tmp_path))
    assert not (tmp_path / "etc/edge").exists()


def test_purge_needs_uninstall(tmp_path):
    assert _sh("--purge", "--root", str(tmp_path), check=False).returncode == 2


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the refusal to run unprivileged on the real root")
def test_refuses_real_install_without_root():
    out = _sh("--no-apt", check=False)
    assert out.returncode == 1 and "run as root" in out.stderr
