"""The device nodes a configuration uses, as a systemd drop-in (``DeviceAllow=``).

The unit (systemd/edge.service) allows device *classes* so that it starts on any
board; scripts/install.sh then writes ``edge.service.d/devices.conf``, which resets
that list and names exactly what /etc/edge/edge.toml uses: the camera, the serial
port to the controller, the GPIO chip (trigger input or relay) and, with
``models.accelerator = "edgetpu"``, /dev/apex_0. A USB serial adapter, a USB camera
or a second serial port the configuration does not name stay closed.

    python -m edge.service.devices --config /etc/edge/edge.toml     # prints the drop-in

libcamera (``picamera2://``) opens a changing set of /dev/media*, /dev/video*,
/dev/v4l-subdev* and /dev/dma_heap/* nodes, so a CSI camera keeps its three
device classes; every other source is named by path.
"""

from __future__ import annotations

import argparse
import glob
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

# libcamera's nodes, by class (resolved from /proc/devices when the service starts)
LIBCAMERA_CLASSES = ("char-video4linux", "char-media", "char-dma_heap")
EDGETPU_PCIE = "/dev/apex_0"


def _camera_nodes(source: str) -> list[tuple[str, str]]:
    if source.startswith("picamera2:"):
        return [(c, "camera (libcamera)") for c in LIBCAMERA_CLASSES]
    if source.startswith("v4l2:"):
        path = urlsplit(source).path or "/dev/video0"
        return [(path, "camera (V4L2)")]
    if source.startswith("/dev/"):
        return [(source.split("?", 1)[0], "camera (V4L2)")]
    return []  # files, folders, synthetic://: no device


def gpio_chips(sys_root: str = "/") -> list[str]:
    """The GPIO chip(s) of the SoC header: the /dev/gpiochipN whose label names a pin controller
    (pinctrl-rp1 on a Pi 5, pinctrl-bcm2711/bcm2835 before). /dev/gpiochip0 if none is found."""
    found = []
    for dev in sorted(glob.glob(os.path.join(sys_root, "sys/bus/gpio/devices/gpiochip*"))):
        try:
            label = Path(dev, "label").read_text().strip()
        except OSError:
            continue
        if label.startswith("pinctrl-"):
            found.append("/dev/" + os.path.basename(dev))
    return found or ["/dev/gpiochip0"]


def device_allow(cfg, *, sys_root: str = "/") -> list[tuple[str, str]]:
    """(DeviceAllow spec, why) for every node this configuration uses, in a stable order."""
    out: list[tuple[str, str]] = []
    out += _camera_nodes(cfg.camera.source)
    if cfg.trigger.kind == "serial":
        port = cfg.serial.port
        if port.startswith("/dev/"):
            out.append((port, "serial link to the controller"))
            real = os.path.realpath(port)
            if real != port and real.startswith("/dev/"):
                out.append((real, f"serial link ({port} points here)"))
    if cfg.trigger.kind == "gpio" or cfg.relay.enabled:
        for chip in gpio_chips(sys_root):
            out.append((chip, "GPIO (trigger input / relay)"))
    if cfg.models.accelerator == "edgetpu":
        out.append((EDGETPU_PCIE, "Coral Edge TPU (PCIe)"))
    seen: set[str] = set()
    uniq = []
    for spec, why in out:
        if spec not in seen:
            seen.add(spec)
            uniq.append((spec, why))
    return uniq


def render_dropin(cfg, config_path: str = "/etc/edge/edge.toml", *, sys_root: str = "/") -> str:
    lines = [
        f"# Written by scripts/install.sh from {config_path}: exactly the device nodes that",
        "# configuration uses. Re-run install.sh after changing camera.source, serial.port,",
        "# the GPIO trigger/relay or models.accelerator (or edit this file and daemon-reload).",
        "[Service]",
        "# an empty assignment drops the unit's device classes",
        "DeviceAllow=",
    ]
    last = None
    for spec, why in device_allow(cfg, sys_root=sys_root):
        if why != last:
            lines.append(f"# {why}")
            last = why
        lines.append(f"DeviceAllow={spec} rw")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.service.devices", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="the service's edge.toml")
    ap.add_argument("--as", dest="shown", default=None, help="the config's path as the drop-in's comment names it")
    args = ap.parse_args(argv)
    from edge.config import load
    from edge.errors import EdgeError

    try:
        cfg = load(args.config)
    except (EdgeError, OSError, ValueError) as err:
        print(f"edge.service.devices: {err}", file=sys.stderr)
        return 2
    sys.stdout.write(render_dropin(cfg, args.shown or args.config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
