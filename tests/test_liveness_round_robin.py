"""MiniFASNetEnsemble's round-robin schedule: one model per frame, each vote still an ensemble vote."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.liveness import minifasnet as mf
from edge.types import FaceBox

FACE = FaceBox(x=100.0, y=80.0, w=120.0, h=120.0, score=0.9)
MOVED = FaceBox(x=104.0, y=82.0, w=118.0, h=121.0, score=0.9)  # next frame, same person
OTHER = FaceBox(x=400.0, y=80.0, w=120.0, h=120.0, score=0.9)  # someone else, elsewhere


class FakeModel:
    """Stands in for one interpreter: returns a scripted score per call and records its calls."""

    def __init__(self, spec, threads, edgetpu):
        self.spec = spec
        self.calls = 0
        self.wiped = 0

    def run(self, image, face):
        self.calls += 1
        return (0.2 if self.spec.name == "a" else 0.8) + 0.01 * self.calls

    def wipe(self):
        self.wiped += 1

    def close(self):
        pass


@pytest.fixture
def ensemble(monkeypatch):
    monkeypatch.setattr(mf, "_Model", FakeModel)
    specs = [mf.LivenessModelSpec("a", Path("a"), 2.7), mf.LivenessModelSpec("b", Path("b"), 4.0)]
    return mf.MiniFASNetEnsemble(specs, round_robin=True)


IMAGE = np.zeros((4, 4, 3), np.uint8)


def test_first_call_runs_every_model_then_one_per_call(ensemble):
    a, b = ensemble._models
    s1 = ensemble.score(IMAGE, FACE)
    assert (a.calls, b.calls) == (1, 1)
    assert s1.per_model == pytest.approx((0.21, 0.81)) and s1.live == pytest.approx(0.51)
    s2 = ensemble.score(IMAGE, MOVED)
    assert (a.calls, b.calls) == (2, 1)  # only a ran; b's score from the frame before stands in
    assert s2.per_model == pytest.approx((0.22, 0.81)) and s2.live == pytest.approx((0.22 + 0.81) / 2)
    ensemble.score(IMAGE, FACE)
    assert (a.calls, b.calls) == (2, 2)
    ensemble.score(IMAGE, FACE)
    assert (a.calls, b.calls) == (3, 2)


def test_a_new_face_runs_every_model(ensemble):
    a, b = ensemble._models
    ensemble.score(IMAGE, FACE)
    ensemble.score(IMAGE, OTHER)  # no overlap: the old scores belong to someone else
    assert (a.calls, b.calls) == (2, 2)
    ensemble.score(IMAGE, OTHER)
    assert (a.calls, b.calls) == (3, 2)


def test_wipe_forgets_the_round(ensemble):
    a, b = ensemble._models
    ensemble.score(IMAGE, FACE)
    ensemble.score(IMAGE, FACE)
    ensemble.wipe()
    assert not ensemble._last.any() and ensemble._face is None and ensemble._calls == 0
    assert a.wiped == b.wiped == 1
    ensemble.score(IMAGE, FACE)  # a new session starts with the full ensemble
    assert (a.calls, b.calls) == (3, 2)


def test_every_frame_schedule_runs_both_always(monkeypatch):
    monkeypatch.setattr(mf, "_Model", FakeModel)
    specs = [mf.LivenessModelSpec("a", Path("a"), 2.7), mf.LivenessModelSpec("b", Path("b"), 4.0)]
    e = mf.MiniFASNetEnsemble(specs)
    for _ in range(3):
        e.score(IMAGE, FACE)
    assert [m.calls for m in e._models] == [3, 3]


def test_one_model_has_no_round(monkeypatch):
    monkeypatch.setattr(mf, "_Model", FakeModel)
    e = mf.MiniFASNetEnsemble([mf.LivenessModelSpec("a", Path("a"), 2.7)], round_robin=True)
    assert e.round_robin is False
    e.score(IMAGE, FACE)
    e.score(IMAGE, FACE)
    assert e._models[0].calls == 2


def test_config_selects_the_schedule(models_env):
    from edge import config
    from edge.assemble import build_pipeline

    cfg = config.load(None, overrides={"models": {"liveness_schedule": "every_frame"}})
    with build_pipeline(cfg) as p:
        assert p.liveness.round_robin is False
    with build_pipeline(config.load(None)) as p:  # the default
        assert p.liveness.round_robin is True


def test_bad_schedule_names_the_key():
    from edge import config
    from edge.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        config.load(None, overrides={"models": {"liveness_schedule": "sometimes"}})
    assert "models.liveness_schedule" in str(err.value) and "round_robin" in str(err.value)
