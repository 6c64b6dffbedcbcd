"""Face crops for the liveness models, by upstream Silent-Face's rule.

Upstream (``src/generate_patches.py``, ``CropImage._get_new_box``) scales the
face box about its centre by ``s = min(scale, (H-1)/h, (W-1)/w)``; when the
scaled box crosses an image border it is *shifted* back inside (not clipped),
so the crop keeps its size and context; corners are truncated to integers and
the crop includes its bottom-right pixel. The model was trained on crops made
this way, so any other rule changes its scores.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge.types import FaceBox


def crop_box(src_w: int, src_h: int, box: tuple[float, float, float, float], scale: float) -> tuple[int, int, int, int]:
    """Return (left, top, right, bottom), inclusive pixel corners of the crop for ``box`` = (x, y, w, h)."""
    x, y, box_w, box_h = (float(v) for v in box)
    if box_w <= 0 or box_h <= 0:
        raise ValueError(f"face box must have a positive size, got w={box_w} h={box_h}")
    scale = min((src_h - 1) / box_h, (src_w - 1) / box_w, scale)
    new_w, new_h = box_w * scale, box_h * scale
    cx, cy = x + box_w / 2, y + box_h / 2
    left, top = cx - new_w / 2, cy - new_h / 2
    right, bottom = cx + new_w / 2, cy + new_h / 2
    if left < 0:
        right -= left
        left = 0
    if top < 0:
        bottom -= top
        top = 0
    if right > src_w - 1:
        left -= right - src_w + 1
        right = src_w - 1
    if bottom > src_h - 1:
        top -= bottom - src_h + 1
        bottom = src_h - 1
    # int() truncates toward zero, as upstream does; a shifted corner can land a hair below 0.
    return max(int(left), 0), max(int(top), 0), int(right), int(bottom)


def crop_face(image: np.ndarray, face: FaceBox, scale: float, out: np.ndarray) -> np.ndarray:
    """Cut the crop for ``face`` out of ``image`` and resize it into ``out`` (HxWx3 uint8, preallocated)."""
    h, w = image.shape[:2]
    left, top, right, bottom = crop_box(w, h, (face.x, face.y, face.w, face.h), scale)
    region = image[top : bottom + 1, left : right + 1]  # a view: no copy of the source frame
    if region.size == 0:
        raise ValueError(f"empty crop for face {face} in a {w}x{h} image")
    # Upstream resizes with cv2.resize's default (bilinear); dst= writes in place because
    # shape and dtype match the preallocated buffer.
    cv2.resize(region, (out.shape[1], out.shape[0]), dst=out, interpolation=cv2.INTER_LINEAR)
    return out
