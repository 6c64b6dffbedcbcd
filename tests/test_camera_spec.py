"""camera.source spec grammar: every backend's form, and one asserted message per kind of mistake."""

from __future__ import annotations

import pytest

from edge.camera import open_camera, parse_spec
from edge.camera.files import ImageCamera, ImagesCamera, VideoCamera
from edge.camera.picam import Picamera2Camera
from edge.camera.synthetic import SyntheticCamera
from edge.camera.v4l2 import V4L2Camera
from edge.errors import ConfigError


def test_schemes_map_to_backends_and_touch_nothing(tmp_path):
    missing = tmp_path / "nope"
    # None of these exists: construction must not look for the file or device.
    assert isinstance(open_camera(f"image://{missing}.png"), ImageCamera)
    assert isinstance(open_camera(f"images://{missing}"), ImagesCamera)
    assert isinstance(open_camera(f"video://{missing}.avi"), VideoCamera)
    assert isinstance(open_camera("synthetic://"), SyntheticCamera)
    assert isinstance(open_camera("v4l2:///dev/video9"), V4L2Camera)
    assert isinstance(open_camera("picamera2://1"), Picamera2Camera)
    cam = open_camera(f"video://{missing}.avi")
    assert not cam.is_open and cam.spec == f"video://{missing}.avi"


def test_bare_paths_pick_backend_by_extension_or_folder(tmp_path):
    assert parse_spec(str(tmp_path / "a.JPG")).scheme == "image"
    assert parse_spec(str(tmp_path / "clip.mp4")).scheme == "video"
    assert parse_spec(str(tmp_path)).scheme == "images"


def test_defaults_and_typed_values():
    s = parse_spec("synthetic://?width=320&height=240&fps=15&pattern=face&frames=10&fail_after=3&freeze_after=4")
    assert dict(s.options) == {
        "width": 320, "height": 240, "fps": 15.0, "pattern": "face", "frames": 10, "fail_after": 3,
        "freeze_after": 4, "seed": 0, "realtime": False,
    }
    v = parse_spec("v4l2:///dev/video2?width=1280&height=720&fps=30&format=mjpg")
    assert v.target == "/dev/video2" and v.options["format"] == "MJPG"
    assert parse_spec("v4l2://3").target == "/dev/video3"
    p = parse_spec("picamera2://0?format=yuv420&width=320&height=240")
    assert p.target == "0" and p.options["format"] == "YUV420"
    assert parse_spec("picamera2://").target == "0"
    assert parse_spec("video://a%20b.avi?loop=1&realtime=true").target == "a b.avi"
    assert parse_spec("video:///abs/clip.avi").target == "/abs/clip.avi"


@pytest.mark.parametrize(
    "spec, value, expected_part",
    [
        ("synthetic://?fps=abc", "fps=abc", "fps=<a number 0.1..240>"),
        ("synthetic://?width=9", "width=9", "width=<an integer 16..8192>"),
        ("synthetic://?pattern=stripes", "pattern=stripes", "pattern=<one of noise|black|face>"),
        ("synthetic://?colour=red", "colour=red", "an option of synthetic:// among width, height, fps"),
        ("synthetic://?width=320&width=640", "width=640", "each option at most once"),
        ("synthetic://?width", "width", "key=value pairs joined by '&'"),
        ("synthetic://cam?width=320", "cam", "nothing between 'synthetic://' and '?'"),
        ("video://clip.avi?fps=10", "fps=10", "an option of video:// among loop, realtime"),
        ("video://clip.avi?loop=2", "loop=2", "loop=<0 or 1>"),
        ("video://", "video://", "a path after the scheme"),
        ("v4l2://camera", "camera", "a device path or index"),
        ("v4l2:///dev/video0?format=MJPEG", "format=MJPEG", "a four-character code such as MJPG or YUYV"),
        ("picamera2://front", "front", "a camera index"),
        ("picamera2://0?format=NV12", "format=NV12", "one of RGB888|YUV420"),
        ("picamera2://0?format=YUV420&height=241", "height=241", "an even height for format=YUV420"),
        ("rtsp://host/stream", "rtsp://", "a scheme among image://, images://, video://"),
        ("notes.txt", "notes.txt", "or a bare path to an image file"),
        ("", "", "a spec such as"),
    ],
)
def test_bad_specs_name_key_part_and_form(spec, value, expected_part):
    with pytest.raises(ConfigError) as info:
        open_camera(spec)
    err = info.value
    assert err.key == "camera.source"
    assert err.value == value
    assert expected_part in err.expected
    assert "config key 'camera.source'" in str(err) and repr(value) in str(err)


def test_loss_tuning_overrides_fit_every_scheme(tmp_path):
    for spec in (f"image://{tmp_path}/a.png", f"images://{tmp_path}", f"video://{tmp_path}/a.avi",
                 "synthetic://", "v4l2://0", "picamera2://0"):
        open_camera(spec, max_repeats=30, stall_s=0.5)  # no TypeError for any backend
    assert open_camera("v4l2://0", max_repeats=30, stall_s=0.5)._content_guard.max_repeats == 30
