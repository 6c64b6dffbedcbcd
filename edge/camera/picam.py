"""``picamera2://N``: Raspberry Pi CSI cameras through picamera2 (libcamera), request-based.

The ISP scales the sensor image to the detector's size, so the CPU never
resizes: ``format=RGB888`` uses the main stream (picamera2's RGB888 is B,G,R
byte order, i.e. OpenCV BGR); ``format=YUV420`` uses the lores stream (the
only lores format a Pi 4 ISP offers) and converts I420 -> BGR with cvtColor.

Per frame: capture_request() -> map the request's DMA buffer with MappedArray
(a view, no copy) -> one write into the camera's preallocated BGR buffer ->
request.release() in ``finally``. That one write is deliberate: the request
must go back to libcamera promptly (with few buffers in flight, holding it
while detection and liveness run would stall the sensor), so the frame we
lend to the pipeline cannot live in the DMA buffer. For YUV420 the write is
the colour conversion itself, so it costs no extra copy at all.

picamera2 is imported inside open(): it exists only on Raspberry Pi OS (apt
python3-picamera2), and importing this module must work everywhere.
"""

from __future__ import annotations

import concurrent.futures
import importlib
import logging
import time
from typing import Any, Callable

import cv2
import numpy as np

from edge.camera._common import BufferedCamera, FreezeGuard
from edge.errors import CameraError, CameraLost
from edge.types import Frame

log = logging.getLogger(__name__)

INSTALL_FIX = (
    "picamera2 is not importable: on Raspberry Pi OS run 'sudo apt install python3-picamera2' and create the "
    "venv with --system-site-packages so it is visible"
)


class Picamera2Camera(BufferedCamera):
    def __init__(
        self,
        spec: str,
        index: int = 0,
        *,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        format: str = "RGB888",
        module: Any = None,
        max_repeats: int = 15,
        stall_s: float | None = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(spec)
        self.index = index
        self.width, self.height, self.fps = width, height, fps
        self.format = format
        self.stream = "main" if format == "RGB888" else "lores"
        self._module = module  # tests inject a fake; None -> import picamera2 at open()
        self._cam: Any = None
        self._mapped: Any = None
        self._i420: np.ndarray | None = None
        self._guard = FreezeGuard(spec, "sensor timestamps", max_repeats, stall_s, clock)
        self._last_sensor_ts: int | None = None

    # -- open --------------------------------------------------------------------------------
    def _import(self) -> Any:
        if self._module is not None:
            return self._module
        try:
            return importlib.import_module("picamera2")
        except ImportError as err:
            raise CameraError(INSTALL_FIX) from err

    def _configuration(self, cam: Any) -> Any:
        size = (self.width, self.height)
        frame_us = int(round(1_000_000 / self.fps))
        controls = {"FrameDurationLimits": (frame_us, frame_us)}
        if self.format == "RGB888":
            return cam.create_preview_configuration(
                main={"size": size, "format": "RGB888"}, controls=controls, queue=False
            )
        # lores must not be larger than main; a main of the same size in YUV420 keeps the ISP's work minimal.
        return cam.create_preview_configuration(
            main={"size": size, "format": "YUV420"},
            lores={"size": size, "format": "YUV420"},
            controls=controls,
            queue=False,
        )

    def _open(self) -> None:
        mod = self._import()
        self._mapped = getattr(mod, "MappedArray", None)
        if self._mapped is None:
            log.warning("this picamera2 has no MappedArray; falling back to make_array (one extra copy per frame)")
        try:
            cam = mod.Picamera2(self.index)
        except (RuntimeError, IndexError, OSError) as err:
            raise CameraError(
                f"no Pi camera at index {self.index} ({err}); run 'edge cameras' (libcamera list), check the "
                "ribbon cable, that no other program (rpicam-*, another edge) holds the camera and that the user is in "
                "the video group (sudo usermod -aG video $USER, then log in again)"
            ) from err
        self._cam = cam
        try:
            cam.configure(self._configuration(cam))
            cam.start()
        except Exception as err:
            raise CameraError(f"Pi camera {self.index}: cannot configure/start {self.spec!r}: {err}") from err
        self._buf = self._alloc((self.height, self.width, 3))
        self._i420 = None
        self._guard.reset()
        self._last_sensor_ts = None

    # -- read --------------------------------------------------------------------------------
    def _wait_request(self, timeout_s: float) -> Any:
        cam = self._cam
        try:
            job = cam.capture_request(wait=False)
            if hasattr(job, "get_result"):
                return job.get_result(timeout=timeout_s)
            return cam.wait(job, timeout=timeout_s)
        except (TimeoutError, concurrent.futures.TimeoutError) as err:  # distinct classes before Python 3.11
            # The job stays queued in picamera2: cancel it, or a late frame would be captured
            # into a request nobody releases.
            cancel = getattr(cam, "cancel_all_and_flush", None)
            if cancel is not None:
                try:
                    cancel()
                except Exception:
                    log.debug("cancel_all_and_flush failed", exc_info=True)
            raise CameraLost(f"Pi camera {self.index}: no frame within {timeout_s:g} s") from err
        except Exception as err:
            raise CameraLost(f"Pi camera {self.index}: capture failed: {err}") from err

    def _to_bgr(self, array: np.ndarray) -> None:
        h, w = self.height, self.width
        buf = self._buf
        if self.format == "RGB888":
            # MappedArray already drops the row padding (a view); this is the one deliberate copy.
            np.copyto(buf, array[:h, :w])
            return
        stride = array.shape[1]
        if stride == w:
            cv2.cvtColor(array, cv2.COLOR_YUV2BGR_I420, dst=buf)
            return
        # Padded rows: cvtColor wants packed I420, so repack Y, U and V into a scratch buffer (one extra
        # copy only when the ISP pads the stride, i.e. width not a multiple of its alignment).
        if self._i420 is None:
            self._i420 = self._alloc((h * 3 // 2, w))
        i420 = self._i420
        q = h // 4  # rows of `stride` bytes per chroma plane
        np.copyto(i420[:h], array[:h, :w])
        np.copyto(i420[h : h + q].reshape(h // 2, w // 2), array[h : h + q].reshape(h // 2, stride // 2)[:, : w // 2])
        np.copyto(i420[h + q :].reshape(h // 2, w // 2), array[h + q : h + 2 * q].reshape(h // 2, stride // 2)[:, : w // 2])
        cv2.cvtColor(i420, cv2.COLOR_YUV2BGR_I420, dst=buf)

    def _read(self, timeout_s: float) -> Frame:
        request = self._wait_request(timeout_s)
        try:
            if self._mapped is not None:
                with self._mapped(request, self.stream) as mapped:
                    self._to_bgr(mapped.array)
            else:
                self._to_bgr(request.make_array(self.stream))
            metadata = request.get_metadata()
        except CameraLost:
            raise
        except Exception as err:
            raise CameraLost(f"Pi camera {self.index}: bad frame buffer: {err}") from err
        finally:
            request.release()  # always: an unreleased request starves libcamera of buffers
        sensor_ts = metadata.get("SensorTimestamp") if isinstance(metadata, dict) else None
        if isinstance(sensor_ts, int):
            self._guard.observe(sensor_ts == self._last_sensor_ts)
            self._last_sensor_ts = sensor_ts
            ts_ns = sensor_ts  # kernel buffer timestamp, CLOCK_MONOTONIC like time.monotonic_ns()
        else:
            ts_ns = time.monotonic_ns()
        index = self._index
        self._index += 1
        return Frame(self._buf, ts_ns, index)

    def _on_wipe(self) -> None:
        self._guard.reset()

    # -- close -------------------------------------------------------------------------------
    def _release(self) -> None:
        cam, self._cam = self._cam, None
        if cam is None:
            return
        try:
            cam.stop()
        finally:
            cam.close()
