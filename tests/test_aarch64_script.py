"""scripts/test-aarch64.sh (a manual check, too slow for CI): what it must keep doing, checked without running it.

Its result (set-up time, tests, model hashes) is recorded in README.md ("The Pi userland, proven").
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "test-aarch64.sh"


def test_script_parses_and_prints_help():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--time-scale" in out and "debootstrap" in out


def test_binds_proc_dev_and_devpts_but_never_sys():
    text = SCRIPT.read_text()
    binds = re.findall(r"^mount --bind (\S+)", text, flags=re.M)
    assert binds == ["/proc", "/dev", "/dev/pts"], binds
    assert not re.search(r"^[^#]*mount[^\n]*(?<!/proc)/sys\b", text, flags=re.M), "/sys makes XNNPACK crash under qemu-user"


def test_scales_waits_names_emulation_and_checks_hashes():
    text = SCRIPT.read_text()
    assert "EDGE_TEST_TIME_SCALE=" in text and "EDGE_TEST_EMULATED=qemu-user" in text
    assert "edge models list" in text and "scripts/setup.sh --no-run" in text
    assert "--arch=arm64" in text and " bookworm " in text


def test_time_scale_must_be_a_number_at_least_one():
    for bad in ("x", "0.5"):
        p = subprocess.run([sys.executable, "-c", "import timescale"], cwd=REPO / "tests", capture_output=True,
                           text=True, env=dict(os.environ, EDGE_TEST_TIME_SCALE=bad))
        assert p.returncode == 1 and "EDGE_TEST_TIME_SCALE" in p.stderr
    p = subprocess.run([sys.executable, "-c", "import timescale; print(timescale.scaled(2))"], cwd=REPO / "tests",
                       capture_output=True, text=True, env=dict(os.environ, EDGE_TEST_TIME_SCALE="10"), check=True)
    assert p.stdout.strip() == "20.0"


def test_bad_options_are_refused_before_anything_runs():
    for args, why in ((["--jobs", "0"], "--jobs wants"), (["--jobs", "two"], "--jobs wants"),
                      (["--root", "/"], "refusing --root"), (["--frobnicate"], "unknown option")):
        p = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True)
        assert p.returncode == 2 and why in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_reuse_moves_the_clone_and_deals_test_files_over_jobs():
    text = SCRIPT.read_text()
    assert "fetch -q \"$REPO\" HEAD" in text and "checkout -q -f FETCH_HEAD" in text  # the committed HEAD
    assert "--reuse: no earlier root" in text
    assert "ls-files 'tests/test_*.py' 'firmware_bridge/tests/test_*.py'" in text
