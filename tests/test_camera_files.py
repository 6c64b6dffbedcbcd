"""image://, images://, video:// against files written here; end of stream; wiping on close."""

from __future__ import annotations

import numpy as np
import pytest

from camera_fakes import write_image, write_video
from edge.camera import open_camera
from edge.errors import CameraError, EndOfStream


def test_image_one_frame_then_end(tmp_path):
    path = write_image(tmp_path / "still.png", 77)
    cam = open_camera(str(path))
    assert cam.finite
    with cam:
        f = cam.read()
        assert f.index == 0 and f.timestamp_ns == 0 and f.image.shape == (48, 64, 3)
        assert f.image.dtype == np.uint8 and int(f.image[0, 0, 0]) == 77
        with pytest.raises(EndOfStream):
            cam.read()
    assert not f.image.any(), "close() must zero the frame buffer"


def test_image_loop_repeats_with_advancing_timestamps(tmp_path):
    path = write_image(tmp_path / "still.png", 77)
    with open_camera(f"image://{path}?loop=1&fps=10") as cam:
        stamps = [cam.read().timestamp_ns for _ in range(3)]
    assert stamps == [0, 100_000_000, 200_000_000]


def test_images_folder_sorted_each_once(tmp_path):
    for name, value in (("b.png", 20), ("a.png", 10), ("c.jpg", 30)):
        write_image(tmp_path / name, value)
    (tmp_path / "notes.txt").write_text("not an image")
    with open_camera(f"images://{tmp_path}") as cam:
        frames = []
        for _ in range(3):
            f = cam.read()
            frames.append((f.index, int(f.image[0, 0, 0]), f.image is cam.buffer))
        with pytest.raises(EndOfStream):
            cam.read()
    assert [(i, v) for i, v, _ in frames] == [(0, 10), (1, 20), (2, pytest.approx(30, abs=2))]
    assert all(same for *_, same in frames), "each image decodes into the same buffer"


def test_images_folder_with_another_size_adopts_it_and_wipes_the_old(tmp_path):
    write_image(tmp_path / "a.png", 10, size=(64, 48))
    write_image(tmp_path / "b.png", 20, size=(32, 16))
    with open_camera(f"images://{tmp_path}") as cam:
        first = cam.read().image
        second = cam.read().image
        assert second.shape == (16, 32, 3) and not first.any()
    assert not second.any()


def test_images_empty_folder_and_bad_file(tmp_path):
    with pytest.raises(CameraError, match="holds no image files"):
        open_camera(f"images://{tmp_path}").open()
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with open_camera(f"images://{tmp_path}") as cam:
        with pytest.raises(CameraError, match="broken.png.*cannot be decoded"):
            cam.read()


def test_missing_files_say_which(tmp_path):
    with pytest.raises(CameraError, match="does not exist"):
        open_camera(f"video://{tmp_path / 'x.avi'}").open()
    with pytest.raises(CameraError, match="does not exist"):
        open_camera(f"image://{tmp_path / 'x.png'}").open()


def test_video_frames_in_order_with_index_timestamps(tmp_path):
    path = write_video(tmp_path / "clip.avi", 5, fps=10.0)
    cam = open_camera(str(path))
    with cam:
        buf = cam.buffer
        got = []
        for _ in range(5):
            f = cam.read()
            assert f.image is buf
            got.append((f.index, f.timestamp_ns, int(f.image.mean() + 0.5)))
        with pytest.raises(EndOfStream):
            cam.read()
    assert [g[:2] for g in got] == [(i, i * 100_000_000) for i in range(5)]
    assert [g[2] for g in got] == pytest.approx([20, 30, 40, 50, 60], abs=2)
    assert not buf.any()


def test_video_loop_rewinds(tmp_path):
    path = write_video(tmp_path / "clip.avi", 3, fps=10.0)
    with open_camera(f"video://{path}?loop=1") as cam:
        assert not cam.finite
        frames, levels = [], []
        for _ in range(7):
            frames.append(cam.read())
            levels.append(int(frames[-1].image.mean() + 0.5))  # read now: the buffer is reused
    assert [f.index for f in frames] == list(range(7))
    assert frames[-1].timestamp_ns == 600_000_000
    assert levels == pytest.approx([20, 30, 40, 20, 30, 40, 20], abs=2)


def test_video_realtime_paces_and_skips_when_consumer_is_slow(tmp_path):
    path = write_video(tmp_path / "clip.avi", 20, fps=10.0)
    now = [0]
    slept = []

    def clock_ns():
        return now[0]

    def sleep(s):
        slept.append(s)
        now[0] += int(s * 1e9)

    cam = open_camera(f"video://{path}?realtime=1", clock_ns=clock_ns, sleep=sleep)
    with cam:
        a = cam.read()  # due at 0
        assert a.index == 0 and not slept
        b = cam.read()  # due at 100 ms: waits
        assert b.index == 1 and slept == [pytest.approx(0.1)]
        now[0] += 450_000_000  # the consumer spent 450 ms: frames 2..5 are stale
        c = cam.read()
        assert c.index == 5 and cam.skipped == 3
        assert c.timestamp_ns == 500_000_000
        assert int(c.image.mean() + 0.5) == pytest.approx(70, abs=2)


def test_close_is_idempotent_and_read_after_close_fails(tmp_path):
    path = write_video(tmp_path / "clip.avi", 2)
    cam = open_camera(str(path))
    cam.open()
    cam.read()
    cam.close()
    cam.close()
    with pytest.raises(CameraError, match="read\\(\\) before open\\(\\)"):
        cam.read()
