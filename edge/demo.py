"""Demo input the project owns: frames rendered from scikit-image's ``astronaut``.

A fresh machine has no camera and no face data, so ``edge demo`` renders a
short clip (a slow pan and zoom over the public-domain NASA portrait that
scikit-image ships) for ``edge run`` to work on. The portrait is taken from
scikit-image if it is installed, else extracted from its wheel (downloaded with
pip, no install, like the BlazeFace models), and pinned by sha256.

Writing these files is set-up, not a session: they hold no one's face but the
bundled portrait.
"""

from __future__ import annotations

import hashlib
import logging
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import cv2
import numpy as np

from edge.errors import EdgeError

log = logging.getLogger(__name__)

ASTRONAUT_SHA256 = "88431cd9653ccd539741b555fb0a46b61558b301d4110412b5bc28b5e3ea6cb5"
SKIMAGE_REQ = "scikit-image==0.26.0"
ASTRONAUT_IN_WHEEL = "skimage/data/astronaut.png"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "demo"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def astronaut_png(cache_dir: Path, wheel: Path | None = None) -> bytes:
    """The astronaut PNG bytes, verified against the pinned sha256."""
    cached = cache_dir / "astronaut.png"
    if cached.is_file():
        data = cached.read_bytes()
        if _sha256(data) == ASTRONAUT_SHA256:
            return data
    data = None
    try:
        import skimage  # type: ignore[import-not-found]

        path = Path(skimage.__file__).parent / "data" / "astronaut.png"
        if path.is_file():
            data = path.read_bytes()
    except ImportError:
        pass
    if data is None:
        data = _from_wheel(wheel)
    actual = _sha256(data)
    if actual != ASTRONAUT_SHA256:
        raise EdgeError(f"astronaut.png has sha256 {actual}, expected {ASTRONAUT_SHA256}; delete {cache_dir} and retry")
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached.write_bytes(data)  # persistence-ok: the bundled public portrait, set-up time only
    return data


def _from_wheel(wheel: Path | None) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", "-d", tmp, SKIMAGE_REQ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            wheels = list(Path(tmp).glob("scikit_image-*.whl"))
            if r.returncode != 0 or not wheels:
                raise EdgeError(
                    f"could not download {SKIMAGE_REQ} to take its astronaut.png ({r.stderr.strip()[-300:]}); "
                    "install scikit-image, or pass --wheel PATH to a scikit-image wheel"
                )
            wheel = wheels[0]
        with zipfile.ZipFile(wheel) as zf:
            try:
                return zf.read(ASTRONAUT_IN_WHEEL)
            except KeyError as err:
                raise EdgeError(f"{wheel} has no {ASTRONAUT_IN_WHEEL}") from err


def render_frames(portrait: np.ndarray, n: int = 90, width: int = 640, height: int = 480):
    """Yield ``n`` BGR frames: the portrait on a grey backdrop, slowly panning and zooming."""
    ph, pw = portrait.shape[:2]
    for i in range(n):
        t = i / max(1, n - 1)
        scale = 0.85 + 0.15 * t  # slow zoom in
        h = int(height * scale)
        w = int(pw * h / ph)
        small = cv2.resize(portrait, (w, h), interpolation=cv2.INTER_AREA)
        frame = np.full((height, width, 3), 96, np.uint8)
        x0 = int((width - w) / 2 + 40 * np.sin(2 * np.pi * t))
        y0 = height - h
        xs, xe = max(0, x0), min(width, x0 + w)
        frame[y0:height, xs:xe] = small[:, xs - x0 : xe - x0]
        yield frame


def make_demo(out_dir: Path = DEFAULT_DIR, *, frames: int = 90, fps: float = 30.0, wheel: Path | None = None) -> Path:
    """Write ``astronaut.avi`` (MJPG) into ``out_dir`` and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data = astronaut_png(out_dir, wheel)
    portrait = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    path = out_dir / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))  # persistence-ok: demo input
    if not writer.isOpened():
        raise EdgeError(f"cannot write {path}: OpenCV has no MJPG writer here")
    try:
        for frame in render_frames(portrait, frames):
            writer.write(frame)
    finally:
        writer.release()
    log.info("wrote %s (%d frames)", path, frames)
    return path


def _cmd(args) -> int:
    path = make_demo(Path(args.out), frames=args.frames, wheel=Path(args.wheel) if args.wheel else None)
    print(f"demo clip: {path}")
    print(f"try: edge check {path}    or    edge run --source video://{path}")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="render the bundled demo clip (no camera needed)")
    p.add_argument("--out", default=str(DEFAULT_DIR), help="output folder (default: demo/ in the repository)")
    p.add_argument("--frames", type=int, default=90, help="number of frames (30 fps)")
    p.add_argument("--wheel", help="a local scikit-image wheel to take astronaut.png from (offline set-up)")
    p.set_defaults(func=_cmd)
