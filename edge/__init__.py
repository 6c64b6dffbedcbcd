"""edge: on-device face-liveness runtime for embedded boards."""

__version__ = "0.1.0"

import os as _os

# OpenCV reads its decoder cap once, when cv2 loads: set it before any module of ours imports cv2, so a
# huge image is refused even where edge.camera.imagesize cannot read the header (64 Mpx; see there).
_os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(8192 * 8192))
