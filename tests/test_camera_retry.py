"""Reopening a lost camera before the next session: backoff, jitter, what is (not) retried."""

from __future__ import annotations

import pytest

from edge.camera import Backoff, open_with_retry, reconnect
from edge.errors import CameraError, ConfigError


class Flaky:
    """A camera whose open() fails ``failures`` times (a USB camera re-enumerating)."""

    opened_total = 0

    def __init__(self, log, failures):
        self.spec = "fake://flaky"
        self.log = log
        self.failures = failures
        self.closed = 0

    def open(self):
        self.log.append("open")
        if len(self.log) <= self.failures:
            raise CameraError("camera /dev/video0 does not exist (unplugged?)")

    def close(self):
        self.closed += 1


def test_backoff_doubles_caps_and_jitters():
    b = Backoff(attempts=6, base_delay_s=0.5, max_delay_s=3.0, jitter=0.5)
    assert list(b.delays(lambda: 0.0)) == [0.5, 1.0, 2.0, 3.0, 3.0]
    assert list(b.delays(lambda: 1.0)) == [0.25, 0.5, 1.0, 1.5, 1.5]


def test_reconnect_retries_until_open():
    log, sleeps = [], []
    cams = []

    def factory():
        cams.append(Flaky(log, failures=2))
        return cams[-1]

    cam = reconnect(factory, Backoff(attempts=5, base_delay_s=0.1, max_delay_s=1.0, jitter=0.0), sleep=sleeps.append)
    assert cam is cams[-1] and len(cams) == 3
    assert sleeps == [0.1, 0.2]
    assert [c.closed for c in cams] == [1, 1, 0], "failed attempts are closed, the good one is returned open"


def test_reconnect_gives_up_with_the_last_error():
    log, sleeps = [], []
    with pytest.raises(CameraError, match="unplugged.*gave up after 3 attempts"):
        reconnect(lambda: Flaky(log, failures=99), Backoff(attempts=3, base_delay_s=1, max_delay_s=1, jitter=0),
                  sleep=sleeps.append)
    assert sleeps == [1, 1] and log == ["open"] * 3


def test_open_with_retry_rejects_a_bad_spec_at_once():
    sleeps = []
    with pytest.raises(ConfigError):
        open_with_retry("synthetic://?fps=0", sleep=sleeps.append)
    assert sleeps == []


def test_open_with_retry_real_camera_after_missing_file(tmp_path):
    sleeps = []
    with pytest.raises(CameraError, match="gave up after 2 attempts"):
        open_with_retry(f"video://{tmp_path / 'gone.avi'}", attempts=2, base_delay_s=0.01, sleep=sleeps.append,
                        rand=lambda: 0.0)
    assert sleeps == [0.01]
    cam = open_with_retry("synthetic://?width=32&height=16", sleep=sleeps.append)
    assert cam.is_open
    cam.close()


def test_backoff_validation_names_config_keys():
    with pytest.raises(ConfigError, match="camera.retry_attempts"):
        Backoff(attempts=0)
    with pytest.raises(ConfigError, match="camera.retry_jitter"):
        Backoff(jitter=2)
