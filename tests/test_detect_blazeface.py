"""BlazeFace decoding against the real float model on real images."""

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.detect.blazeface import BlazeFaceDetector, BlazeFaceOptions, ssd_anchors, weighted_nms
from edge.errors import ModelError

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAS = SHARED / "fas-dev"


@pytest.fixture(scope="module")
def detector(built_models_dir):
    from edge.models import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_MODELS_DIR", str(built_models_dir))
        path = registry.artifact_path("blazeface_short", "float32")
    with BlazeFaceDetector(path) as det:
        yield det


@pytest.fixture(scope="module")
def astronaut():
    from edge.demo import DEFAULT_DIR, astronaut_png

    data = astronaut_png(DEFAULT_DIR)
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def test_anchors_layout():
    a = ssd_anchors()
    assert a.shape == (896, 2)
    # first layer: 16x16 cells, 2 anchors each, centred on the cell
    assert tuple(a[0]) == tuple(a[1]) == (0.5 / 16, 0.5 / 16)
    assert tuple(a[511]) == (15.5 / 16, 15.5 / 16)
    # then 8x8 cells with 6 anchors each
    assert tuple(a[512]) == (0.5 / 8, 0.5 / 8) and tuple(a[517]) == (0.5 / 8, 0.5 / 8)
    assert (a >= 0).all() and (a <= 1).all()


def _check_face(face, shape):
    h, w = shape[:2]
    assert 0.5 <= face.score <= 1.0
    assert face.w > 20 and face.h > 20
    assert abs(face.w - face.h) / face.w < 0.2  # BlazeFace boxes are square to the face
    assert len(face.keypoints) == 6
    eyes_nose_mouth = face.keypoints[:4]
    for x, y in eyes_nose_mouth:  # the inner keypoints lie inside the box
        assert face.x <= x <= face.x + face.w and face.y <= y <= face.y + face.h
    (rx, ry), (lx, ly), (nx, ny), (mx, my) = eyes_nose_mouth
    assert rx < lx  # the person's right eye is on the image's left
    assert min(ry, ly) < ny < my  # eyes above nose above mouth
    assert -0.5 * face.w <= face.x and face.x + face.w <= w + 0.5 * face.w


def test_astronaut_face(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    f = faces[0]
    _check_face(f, astronaut.shape)
    # the face in skimage's astronaut portrait sits around (225, 130)
    assert 190 < f.cx < 260 and 100 < f.cy < 160


def test_letterbox_is_removed_for_any_aspect(detector, astronaut):
    """The same face padded into landscape and portrait frames maps back to the same place.

    (Padding much more shrinks the face below the short-range model's working size,
    where its box-size estimate drifts; that is the model, not the letterbox.)"""
    base = detector.detect(astronaut)[0]
    for pad in ((0, 0, 64, 64), (100, 100, 0, 0), (0, 0, 100, 100), (64, 64, 0, 0)):
        top, bottom, left, right = pad
        img = cv2.copyMakeBorder(astronaut, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(90, 90, 90))
        f = detector.detect(img)[0]
        tol = 0.1 * base.w  # a tenth of the face: the crop margin is 2.7x the face
        assert f.cx - left == pytest.approx(base.cx, abs=tol)
        assert f.cy - top == pytest.approx(base.cy, abs=tol)
        assert f.w == pytest.approx(base.w, rel=0.12)


def test_no_face_in_flat_or_noise_images(detector):
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == ()
    rng = np.random.default_rng(0)
    assert detector.detect(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)) == ()


@pytest.mark.skipif(not FAS.is_dir(), reason=f"no ../shared/fas-dev beside the repository ({FAS})")
def test_real_images_faces_found_with_keypoints_inside(detector):
    files = sorted(FAS.rglob("*.jpg"))
    assert len(files) >= 200
    missed = []
    for path in files:
        img = cv2.imread(str(path))
        faces = detector.detect(img)
        if not faces:
            missed.append(path.name)
            continue
        _check_face(max(faces, key=lambda f: f.area), img.shape)
    assert not missed, f"no face found in {missed}"


def test_bad_input_rejected(detector):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((100, 100), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect(np.zeros((100, 100, 3), np.float32))


def test_wrong_model_is_refused(built_models_dir):
    from edge.models import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_MODELS_DIR", str(built_models_dir))
        path = registry.artifact_path("minifasnet_v2", "float32")
    with pytest.raises(ModelError, match="not a short-range BlazeFace model"):
        BlazeFaceDetector(path)


def test_wipe_zeroes_input_and_buffers(detector, astronaut):
    detector.detect(astronaut)
    detector.wipe()
    view = detector._interp.tensor(detector._in.index)()
    try:
        assert not view.any()
    finally:
        del view
    assert not detector._resized.any() and not detector._rgb.any()


def test_weighted_nms_merges_overlaps():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]], np.float32)
    kps = np.zeros((3, 6, 2), np.float32)
    scores = np.array([0.9, 0.6, 0.8], np.float32)
    out = weighted_nms(boxes, kps, scores, 0.3, 10)
    assert len(out) == 2
    merged, _, s = out[0]
    assert s == pytest.approx(0.9)
    assert merged[0] == pytest.approx((0.1 * 0.9 + 0.12 * 0.6) / 1.5)
    assert len(weighted_nms(boxes, kps, scores, 0.3, 1)) == 1


def test_int8_detector_loads_and_finds_the_face(built_models_dir, astronaut):
    from edge.models import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDGE_MODELS_DIR", str(built_models_dir))
        path = registry.artifact_path("blazeface_short", "int8")
    with BlazeFaceDetector(path, BlazeFaceOptions()) as det:
        faces = det.detect(astronaut)
    assert len(faces) == 1
    _check_face(faces[0], astronaut.shape)
