"""Reopening a lost camera before the next session: exponential backoff with jitter.

A camera that failed mid-session (CameraLost -> FAULT verdict) is closed by the
session; the service calls :func:`open_with_retry` before the next one. Sleep
and randomness are injectable so tests run instantly and deterministically.
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from edge.camera.base import Camera
from edge.errors import CameraError, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backoff:
    """Delays ``base_delay_s * 2**k`` capped at ``max_delay_s``, each scaled by a random
    factor in ``[1 - jitter, 1]`` so several devices restarting together do not retry in step."""

    attempts: int = 5
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ConfigError("camera.retry_attempts", self.attempts, "an integer >= 1")
        if self.base_delay_s < 0:
            raise ConfigError("camera.retry_base_delay_s", self.base_delay_s, "a number >= 0")
        if self.max_delay_s < self.base_delay_s:
            raise ConfigError("camera.retry_max_delay_s", self.max_delay_s, f"a number >= {self.base_delay_s}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError("camera.retry_jitter", self.jitter, "a number 0..1")

    def delays(self, rand: Callable[[], float] = random.random) -> Iterator[float]:
        """The waits between attempts (``attempts - 1`` of them)."""
        for k in range(self.attempts - 1):
            delay = min(self.max_delay_s, self.base_delay_s * (2**k))
            yield delay * (1.0 - self.jitter * rand())


def reconnect(
    camera_factory: Callable[[], Camera],
    backoff: Backoff = Backoff(),
    *,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> Camera:
    """Create and open a camera, retrying CameraError with backoff; return it opened.

    ConfigError (a bad spec) is not retried: waiting will not fix a typo. After the
    last attempt the last CameraError propagates, its message saying how often it was tried.
    """
    delays = backoff.delays(rand)
    for attempt in range(1, backoff.attempts + 1):
        camera = camera_factory()
        try:
            camera.open()
            if attempt > 1:
                log.info("camera %s reopened on attempt %d", camera.spec, attempt)
            return camera
        except CameraError as err:
            camera.close()
            if attempt == backoff.attempts:
                raise CameraError(f"{err} (gave up after {attempt} attempts)") from err
            delay = next(delays)
            log.warning("camera %s: open attempt %d failed (%s); retrying in %.2f s", camera.spec, attempt, err, delay)
            sleep(delay)
    raise AssertionError("unreachable")


def open_with_retry(
    spec: str,
    attempts: int = 5,
    base_delay_s: float = 0.5,
    max_delay_s: float = 8.0,
    *,
    jitter: float = 0.5,
    sleep: Callable[[float], None] = time.sleep,
    rand: Callable[[], float] = random.random,
) -> Camera:
    """Parse ``spec`` (once: a ConfigError is raised immediately) and open it with retries."""
    from edge.camera import open_camera

    open_camera(spec)  # validate before the first wait
    return reconnect(
        lambda: open_camera(spec),
        Backoff(attempts, base_delay_s, max_delay_s, jitter),
        sleep=sleep,
        rand=rand,
    )
