"""Crop geometry against upstream Silent-Face's rule, including faces at image borders."""

import numpy as np
import pytest

from edge.liveness.crop import crop_box, crop_face
from edge.types import FaceBox


def upstream_new_box(src_w, src_h, bbox, scale):
    """Verbatim transcription of upstream CropImage._get_new_box (src/generate_patches.py)."""
    x = bbox[0]
    y = bbox[1]
    box_w = bbox[2]
    box_h = bbox[3]
    scale = min((src_h - 1) / box_h, min((src_w - 1) / box_w, scale))
    new_width = box_w * scale
    new_height = box_h * scale
    center_x, center_y = box_w / 2 + x, box_h / 2 + y
    left_top_x = center_x - new_width / 2
    left_top_y = center_y - new_height / 2
    right_bottom_x = center_x + new_width / 2
    right_bottom_y = center_y + new_height / 2
    if left_top_x < 0:
        right_bottom_x -= left_top_x
        left_top_x = 0
    if left_top_y < 0:
        right_bottom_y -= left_top_y
        left_top_y = 0
    if right_bottom_x > src_w - 1:
        left_top_x -= right_bottom_x - src_w + 1
        right_bottom_x = src_w - 1
    if right_bottom_y > src_h - 1:
        left_top_y -= right_bottom_y - src_h + 1
        right_bottom_y = src_h - 1
    return int(left_top_x), int(left_top_y), int(right_bottom_x), int(right_bottom_y)


CASES = [
    # (W, H, box, scale)
    (640, 480, (250, 150, 140, 160), 2.7),  # centred, fits
    (640, 480, (250, 150, 140, 160), 4.0),  # larger than the image: scale capped by (H-1)/h
    (640, 480, (0, 0, 100, 120), 2.7),  # top-left corner: shifted right/down
    (640, 480, (560, 380, 80, 100), 2.7),  # bottom-right corner: shifted left/up
    (640, 480, (-30, 200, 120, 130), 2.7),  # box partly outside on the left
    (640, 480, (300, 420, 100, 110), 4.0),  # bottom border
    (480, 640, (100, 50, 200, 260), 2.7),  # portrait frame
    (80, 80, (10, 10, 60, 60), 2.7),  # tiny image
    (640, 480, (250.7, 150.2, 140.4, 160.9), 2.7),  # fractional boxes (BlazeFace gives floats)
]


@pytest.mark.parametrize("w,h,box,scale", CASES)
def test_crop_box_matches_upstream(w, h, box, scale):
    assert crop_box(w, h, box, scale) == upstream_new_box(w, h, box, scale)


def test_random_boxes_match_upstream():
    rng = np.random.default_rng(1)
    for _ in range(2000):
        w, h = int(rng.integers(60, 1300)), int(rng.integers(60, 1000))
        bw, bh = float(rng.uniform(10, w)), float(rng.uniform(10, h))
        box = (float(rng.uniform(-bw / 2, w - bw / 2)), float(rng.uniform(-bh / 2, h - bh / 2)), bw, bh)
        scale = float(rng.choice([1.0, 2.7, 4.0]))
        ours = crop_box(w, h, box, scale)
        ref = upstream_new_box(w, h, box, scale)
        # Upstream can produce a corner of -0.x that int() truncates to 0 as well; both agree.
        assert ours == tuple(max(v, 0) if i < 2 else v for i, v in enumerate(ref))
        l, t, r, b = ours
        assert 0 <= l <= r <= w - 1 and 0 <= t <= b <= h - 1


def test_crop_stays_inside_and_keeps_size_at_borders():
    l, t, r, b = crop_box(640, 480, (0, 0, 100, 100), 2.7)
    assert (l, t) == (0, 0) and (r, b) == (270, 270)  # shifted, not clipped: full 2.7x context


def test_crop_face_resizes_into_buffer():
    img = np.zeros((480, 640, 3), np.uint8)
    img[100:300, 200:400] = (10, 20, 30)
    out = np.empty((80, 80, 3), np.uint8)
    res = crop_face(img, FaceBox(250, 150, 100, 100, 0.9), 1.0, out)
    assert res is out
    assert (out == (10, 20, 30)).all()


def test_bad_box_rejected():
    with pytest.raises(ValueError, match="positive size"):
        crop_box(640, 480, (10, 10, 0, 50), 2.7)
