"""``edge cameras``: list the cameras this machine offers and the modes they support."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Callable, TextIO

from edge.camera import v4l2_info


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "cameras",
        help="list cameras (V4L2 and, on a Pi, libcamera) with formats, sizes and frame rates",
        description="List V4L2 capture devices (driver, card, pixel formats, frame sizes, frame rates) and, "
        "when picamera2 is importable, the Pi cameras libcamera sees. Each entry shows the "
        "camera.source spec that selects it.",
    )
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=handle)


def collect(
    list_v4l2: Callable[[], list[v4l2_info.V4L2Device]] = v4l2_info.list_v4l2,
    list_picamera2: Callable[[], list[dict] | None] = v4l2_info.list_picamera2,
) -> dict:
    v4l2 = list_v4l2()
    try:
        pi = list_picamera2()
    except Exception as err:  # libcamera present but broken: report it, keep the V4L2 list
        pi = [{"error": f"libcamera enumeration failed: {err}"}]
    return {"v4l2": [d.to_dict() for d in v4l2], "picamera2": pi}


def _fmt_rates(size: dict) -> str:
    if size.get("fps"):
        return "/".join(f"{r:g}" for r in size["fps"]) + " fps"
    if size.get("fps_range"):
        lo, hi = size["fps_range"]
        return f"{lo:g}-{hi:g} fps"
    return "fps ?"


def render_text(info: dict, out: TextIO) -> None:
    v4l2 = info["v4l2"]
    if not v4l2:
        out.write("V4L2: no video capture devices (/dev/video*)\n")
    for dev in v4l2:
        if "error" in dev:
            out.write(f"[{dev['index']}] {dev['device']}: {dev['error']}\n")
            continue
        out.write(f"[{dev['index']}] {dev['device']}  {dev['card']} (driver {dev['driver']}, {dev['bus_info']})\n")
        out.write(f"    spec: {dev['spec']}\n")
        for fmt in dev["formats"]:
            kind = "compressed" if fmt["compressed"] else "raw"
            out.write(f"    {fmt['fourcc']} ({fmt['description']}, {kind})\n")
            if "size_range" in fmt:
                r = fmt["size_range"]
                out.write(
                    f"      {r['min_width']}x{r['min_height']} .. {r['max_width']}x{r['max_height']} "
                    f"(step {r['step_width']}x{r['step_height']})\n"
                )
            for size in fmt["sizes"]:
                out.write(f"      {size['width']}x{size['height']}  {_fmt_rates(size)}\n")
    pi = info["picamera2"]
    if pi is None:
        out.write("libcamera: picamera2 not importable (not a Pi, or python3-picamera2 not visible in this venv)\n")
    elif not pi:
        out.write("libcamera: no Pi cameras\n")
    else:
        for cam in pi:
            if "error" in cam:
                out.write(f"libcamera: {cam['error']}\n")
                continue
            extra = ", ".join(f"{k} {v}" for k, v in cam.items() if k not in ("index", "spec"))
            out.write(f"[{cam['index']}] {cam['spec']}  {extra}\n")


def handle(args: argparse.Namespace, *, out: TextIO | None = None, err: TextIO | None = None,
           collector: Callable[[], dict] = collect) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    info = collector()
    if getattr(args, "json", False):
        json.dump(info, out, indent=2)
        out.write("\n")
    else:
        render_text(info, out)
    denied = [d["device"] for d in info["v4l2"] if "permission denied" in d.get("error", "")]
    if denied:
        err.write(
            f"edge cameras: cannot open {', '.join(denied)}: permission denied. Fix: "
            f"{v4l2_info.PERMISSION_FIX}\n"
        )
        return 1
    return 0
