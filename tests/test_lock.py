"""requirements/lock.txt: every dependency pinned and hashed, and resolvable to wheels on the boards we ship to.

The resolution check asks pip (the one scripts/setup.sh uses) to resolve the lock with --require-hashes,
binary wheels only, for x86_64 and aarch64 under Python 3.11 (Raspberry Pi OS bookworm) and 3.13 (trixie):
a dependency without an aarch64 wheel, or whose wheel hash changed, fails here and not on the door.
It needs the package index scripts/setup.sh installs from (about 3 s per target, metadata only).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
LOCK = REPO / "requirements" / "lock.txt"
# manylinux_2_17 (CentOS 7) up to 2_36 (glibc of Debian bookworm): pip accepts exact tags only.
GLIBC_MINORS = range(17, 37)


def _pins() -> dict[str, str]:
    """name -> the requirement line (with its marker), for every pinned package."""
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)(.*?)\\?$", line)
        if m:
            pins[re.sub(r"[-_.]+", "-", m.group(1)).lower()] = line
    return pins


def _name(req: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", req).group(0)).lower()


def test_every_dependency_of_pyproject_is_pinned_with_hashes():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = [r for r in project["dependencies"] + project["optional-dependencies"]["dev"] if "python_version < '3.11'" not in r]
    pins = _pins()
    missing = [r for r in wanted if _name(r) not in pins]
    assert not missing, f"not in {LOCK.name}: {missing} (run scripts/lock.sh)"
    assert "setuptools" in pins, "the build backend must be locked: setup.sh installs with --no-build-isolation"
    # Every pin is followed by at least one hash line (pip --require-hashes refuses the file otherwise).
    blocks = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 3)[-1])
    unhashed = [b.split()[0] for b in blocks if "==" in b and "--hash=sha256:" not in b]
    assert not unhashed, unhashed


def test_no_python_version_markers_so_the_cross_checks_are_honest():
    # pip --python-version evaluates markers against the interpreter running pip, not the target:
    # a python_version-split pin would be checked for the wrong Python. Keep one version per package.
    split = [line for line in _pins().values() if "python" in line.split(";", 1)[-1] and ";" in line]
    assert not split, f"python-version-specific pins in {LOCK.name}: {split} (constrain in requirements/lock.in)"


def test_setup_installs_from_the_lock():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "--require-hashes -r requirements/lock.txt" in setup
    assert "--no-deps --no-build-isolation -e ." in setup


@pytest.mark.parametrize("python", ["3.11", "3.13"])
@pytest.mark.parametrize("arch", ["aarch64", "x86_64"])
def test_lock_resolves_to_hashed_wheels(arch, python, tmp_path):
    platforms = [a for m in GLIBC_MINORS for a in ("--platform", f"manylinux_2_{m}_{arch}")]
    cmd = [
        sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--disable-pip-version-check",
        "--ignore-installed", "--only-binary", ":all:", *platforms, "--python-version", python,
        "--target", str(tmp_path / "t"), "--require-hashes", "-r", str(LOCK),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("WARNING")]
    assert proc.returncode == 0, f"{LOCK.name} does not resolve for {arch} / Python {python}:\n" + "\n".join(errors[-15:])
