"""Issue 12 finding 9: the unit's DeviceAllow= device classes granted every USB and serial node
(and Coral's) whatever the config used. install.sh now writes a drop-in naming exactly the
configured camera, serial port, GPIO chip and (with accelerator = edgetpu) /dev/apex_0;
`systemd-analyze verify` stays silent and `security` <= 2.0 with it."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.config import from_dict
from edge.service.devices import device_allow, render_dropin

ROOT = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze not installed (apt install systemd)")


def _specs(d: dict, sys_root="/nonexistent"):
    return [s for s, _ in device_allow(from_dict(d), sys_root=sys_root)]


def test_exactly_the_configured_nodes(tmp_path):
    # a Pi 5's header chip, found by its label; another chip (an expander) is not the header
    for n, label in ((0, "pinctrl-rp1"), (10, "gpio-brcmvirt")):
        d = tmp_path / f"sys/bus/gpio/devices/gpiochip{n}"
        d.mkdir(parents=True)
        (d / "label").write_text(label + "\n")
    cfg = {"camera": {"source": "v4l2:///dev/video2?width=640"}, "trigger": {"kind": "serial"},
           "serial": {"port": "/dev/ttyUSB1"}, "relay": {"enabled": True}}
    assert _specs(cfg, str(tmp_path)) == ["/dev/video2", "/dev/ttyUSB1", "/dev/gpiochip0"]
    # nothing by class: no other USB / serial node, no Coral
    assert not any(s.startswith("char-") for s in _specs(cfg, str(tmp_path)))
    edgetpu = {"camera": {"source": "synthetic://?pattern=face"},
               "models": {"accelerator": "edgetpu", "variant": "int8"}}
    assert _specs(edgetpu) == ["/dev/apex_0"]
    assert _specs({"camera": {"source": "synthetic://"}}) == []
    assert _specs({"camera": {"source": "picamera2://0"}, "trigger": {"kind": "gpio"}}) == [
        "char-video4linux", "char-media", "char-dma_heap", "/dev/gpiochip0"]


def _unit_with_dropin(tmp_path, cfg: dict) -> Path:
    text = (ROOT / "systemd" / "edge.service").read_text()
    unit = tmp_path / "edge.service"
    unit.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", text, flags=re.M))
    (tmp_path / "edge.service.d").mkdir()
    (tmp_path / "edge.service.d" / "devices.conf").write_text(render_dropin(from_dict(cfg)))
    return unit


CFG = {"camera": {"source": "v4l2:///dev/video0"}, "trigger": {"kind": "serial"},
       "serial": {"port": "/dev/ttyAMA0"}, "relay": {"enabled": True}}


@needs_analyze
def test_unit_with_the_dropin_verifies_silently_and_scores_at_most_2(tmp_path):
    unit = _unit_with_dropin(tmp_path, CFG)
    out = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "" and out.stdout == "", out.stderr
    sec = subprocess.run([ANALYZE, "security", "--offline=true", "--no-pager", str(unit)],
                         capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for edge\.service:\s*([0-9.]+)", sec.stdout)
    assert m, sec.stdout + sec.stderr
    print(f"systemd-analyze security --offline=true with devices.conf: {m.group(1)}")
    assert float(m.group(1)) <= 2.0
    # the drop-in is in effect: the ACL lists the named nodes and none of the unit's classes
    line = [x for x in sec.stdout.splitlines() if "DeviceAllow" in x][0]
    assert "/dev/ttyAMA0" in line and "/dev/video0" in line and "usb_device" not in line and "ttyUSB" not in line


@needs_analyze
def test_verify_would_catch_a_bad_key_in_the_dropin(tmp_path):
    unit = _unit_with_dropin(tmp_path, CFG)
    with open(tmp_path / "edge.service.d" / "devices.conf", "a") as f:
        f.write("DeviceAllowEverything=yes\n")
    out = subprocess.run([ANALYZE, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert "DeviceAllowEverything" in out.stderr


def test_install_writes_the_dropin_from_the_installed_config(tmp_path):
    subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--root", str(tmp_path), "--no-venv"],
                   check=True, capture_output=True, text=True, timeout=120)
    dropin = tmp_path / "etc/systemd/system/edge.service.d/devices.conf"
    text = dropin.read_text()
    assert text.startswith("# Written by scripts/install.sh from /etc/edge/edge.toml")
    assert "\nDeviceAllow=\n" in text and "usb_device" not in text and "ttyUSB" not in text
    subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--uninstall", "--root", str(tmp_path)],
                   check=True, capture_output=True, text=True, timeout=120)
    assert not dropin.exists()
