"""Face chips for the descriptor: dlib's ``get_face_chip_details`` alignment driven by the face mesh.

dlib aligns a face by its 5-point shape predictor: a least-squares similarity transform maps the five
points onto a fixed template inside a ``size`` x ``size`` chip with ``padding`` (0.25) around the
face, and the chip is sampled bilinearly. Here the five points come from the 478-point face mesh
(never from dlib's 68-point predictor, whose training data forbid commercial use):

=====  ===============================================  ==========
dlib   point                                            mesh index
=====  ===============================================  ==========
0      outer corner of the eye on the image's right     263
1      inner corner of that eye                         362
2      outer corner of the eye on the image's left      33
3      inner corner of that eye                         133
4      below the nose                                   2
=====  ===============================================  ==========

Enrolment and verification must use the same alignment (``edge enroll`` does): mesh-aligned and
dlib-aligned descriptors of one image differ by about 0.1 (docs/MATCH.md).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

CHIP_SIZE = 150
PADDING = 0.25
MESH_POINTS = (263, 362, 33, 133, 2)
#: dlib's 5-point template (shape_predictor_5 order), in units of the unpadded face square.
TEMPLATE_5 = np.array([
    (0.8595674595992, 0.2134981538014),
    (0.6460604764104, 0.2289674387677),
    (0.1205750620789, 0.2137274526848),
    (0.3340850613712, 0.2290642403242),
    (0.4901123135679, 0.6277975316475),
])


def chip_points(size: int = CHIP_SIZE, padding: float = PADDING) -> np.ndarray:
    """The template's five points in chip pixels."""
    return (padding + TEMPLATE_5) / (2 * padding + 1) * size


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (Umeyama, no reflection) mapping ``src`` points onto ``dst``: 2x3 matrix."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum() / len(src)
    cov = d.T @ s / len(src)
    u, sv, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(cov) < 0:
        sign[1, 1] = -1
    r = u @ sign @ vt
    c = float(np.trace(np.diag(sv) @ sign) / var) if var > 0 else 1.0
    m = np.empty((2, 3))
    m[:, :2] = c * r
    m[:, 2] = md - c * r @ ms
    return m


def chip_to_image(points5: np.ndarray, size: int = CHIP_SIZE, padding: float = PADDING) -> np.ndarray:
    """2x3 map from chip pixels to image pixels, as dlib's ``chip_details`` + ``extract_image_chip`` build it.

    dlib keeps only the rotation and scale of the fitted similarity and a rectangle of ``size * scale``
    centred on the chip centre's image; chip pixels 0..size-1 then span that rectangle's corners.
    """
    tf = similarity(chip_points(size, padding), points5)
    px, py = tf[0, 0], tf[1, 0]  # the image of the unit vector (1, 0)
    angle, scale = math.atan2(py, px), math.hypot(px, py)
    centre = tf[:, :2] @ np.array([size / 2.0, size / 2.0]) + tf[:, 2]
    span = size * scale - 1.0  # centered_drect(width) spans width - 1 between its corners
    step = span / (size - 1)
    c, s = math.cos(angle) * step, math.sin(angle) * step
    m = np.empty((2, 3))
    m[:, :2] = ((c, -s), (s, c))
    m[:, 2] = centre - m[:, :2] @ np.array([(size - 1) / 2.0, (size - 1) / 2.0])
    return m


def mesh_points5(points_px: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """dlib's five points (5x2, image pixels) from a face mesh ((468 or 478, >=2) image pixels)."""
    if out is None:
        out = np.empty((5, 2), np.float64)
    out[:] = points_px[MESH_POINTS, :2]
    return out


class ChipExtractor:
    """Samples the 150x150 RGB chip from a BGR frame into a preallocated buffer (wiped with ``wipe``).

    When the face is much larger than the chip, dlib first shrinks the image by halves (its
    pyramid) to avoid aliasing; this does the same on the face's region only.
    """

    def __init__(self, size: int = CHIP_SIZE, padding: float = PADDING):
        self.size = size
        self.padding = padding
        self.chip = np.zeros((size, size, 3), np.uint8)  # RGB
        self._bgr = np.zeros((size, size, 3), np.uint8)
        self._pts = np.zeros((5, 2), np.float64)

    def extract(self, image_bgr: np.ndarray, points5: np.ndarray) -> np.ndarray:
        """The chip (borrowed: valid until the next ``extract`` or ``wipe``) for dlib-ordered ``points5``."""
        m = chip_to_image(points5, self.size, self.padding)
        step = math.hypot(m[0, 0], m[1, 0])  # image pixels per chip pixel
        src, temps = image_bgr, []
        if step >= 2.0:
            # dlib's pyramid_down<2> levels while the face's rectangle stays larger than the chip
            levels = int(math.floor(math.log2(step)))
            src, m, temps = _shrink_region(image_bgr, m, self.size, levels)
        try:
            cv2.warpAffine(src, m, (self.size, self.size), dst=self._bgr, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        finally:
            for t in temps:  # the shrunk face: zeroed before it goes back to the allocator
                t.fill(0)
        self.chip[...] = self._bgr[..., ::-1]
        return self.chip

    def wipe(self) -> None:
        self.chip.fill(0)
        self._bgr.fill(0)
        self._pts.fill(0)


def _shrink_region(image: np.ndarray, m: np.ndarray, size: int, levels: int):
    """Halve the chip's region of ``image`` ``levels`` times: (smallest level, the chip map into it, the
    arrays this allocated, which hold face pixels and must be zeroed by the caller)."""
    h, w = image.shape[:2]
    corners = m[:, :2] @ np.array([[0, size - 1, 0, size - 1], [0, 0, size - 1, size - 1]]) + m[:, 2:3]
    f = 1 << levels
    margin = 2 * f
    x0 = max(int(math.floor(corners[0].min())) - margin, 0)
    y0 = max(int(math.floor(corners[1].min())) - margin, 0)
    x1 = min(int(math.ceil(corners[0].max())) + margin + 1, w)
    y1 = min(int(math.ceil(corners[1].max())) + margin + 1, h)
    if x1 - x0 < 2 * f or y1 - y0 < 2 * f:
        return image, m, []
    region = image[y0:y1, x0:x1]  # a view of the frame (the camera wipes it)
    temps = []
    for _ in range(levels):
        region = cv2.pyrDown(region)  # 5-tap Gaussian then halve, like dlib's pyramid_down<2>
        temps.append(region)
    out = m.copy()
    out[:, 2] -= (x0, y0)
    out /= f  # pyrDown's output pixel i is centred on input pixel 2i
    return region, out, temps
