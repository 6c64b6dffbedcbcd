"""After a real session every buffer that held pixels, face geometry or scores is zero."""

import numpy as np
import pytest

from edge import config as config_mod
from edge.assemble import build_pipeline
from edge.camera import open_camera
from edge.demo import DEFAULT_DIR, make_demo
from edge.service.wipe import is_zeroed


class RecordingCamera:
    """Wraps a real camera and remembers every frame buffer it lent out."""

    def __init__(self, inner):
        self.inner = inner
        self.spec, self.finite = inner.spec, inner.finite
        self.lent = []

    @property
    def is_open(self):
        return self.inner.is_open

    def open(self):
        self.inner.open()

    def read(self, timeout_s=1.0):
        frame = self.inner.read(timeout_s)
        if not any(frame.image is b for b in self.lent):
            self.lent.append(frame.image)
        return frame

    def close(self):
        self.inner.close()


def _interp_tensors(interp):
    out = []
    for d in list(interp.get_input_details()) + list(interp.get_output_details()):
        view = interp.tensor(d["index"])()
        out.append(view.copy())  # a copy: the view must die before any invoke()
        del view
    return out


@pytest.mark.parametrize("variant", ["float32", "int8"])
def test_every_buffer_is_zero_after_a_session(models_env, variant):
    clip = DEFAULT_DIR / "astronaut.avi"
    if not clip.is_file():
        make_demo(DEFAULT_DIR)
    cfg = config_mod.from_dict({"models": {"variant": variant}})
    with build_pipeline(cfg) as pipeline:
        cam = RecordingCamera(open_camera(f"video://{clip}"))
        out = pipeline.run_session(cam, keep_scores=True)
        assert out.verdict.frames_used > 0  # frames really went through every stage
        det, liv = pipeline.detector, pipeline.liveness
        assert cam.lent and is_zeroed(*cam.lent), "camera frame buffer"
        assert is_zeroed(det._resized, det._rgb, det._mapped, det._scores, det._mask, det._raw_f), "detector buffers"
        assert is_zeroed(*_interp_tensors(det._interp)), "detector tensors"
        for m in liv._models:
            assert is_zeroed(m.crop, m.mapped, m.probs), f"{m.spec.name} crop/scores"
            assert is_zeroed(*_interp_tensors(m.interp)), f"{m.spec.name} tensors"
        assert liv.round_robin and is_zeroed(liv._last, liv._made_at) and liv._face is None, "round-robin state"
        gate_buffers = [v for v in vars(pipeline.gate).values() if isinstance(v, np.ndarray)]
        assert gate_buffers and is_zeroed(*gate_buffers), "quality gate buffers"
        assert is_zeroed(pipeline.decision._scores, pipeline.decision._refusals, pipeline._frame_scores)
        assert not cam.is_open
