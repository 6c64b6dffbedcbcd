"""1:1 matching with test stages: the template format, the match session, the decision with a template."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edge.bridge.base import SessionRequest
from edge.camera import open_camera
from edge.decision import DecisionConfig
from edge.detect import StaticDetector
from edge.landmarks.base import ScriptedLandmarks, ScriptedPose
from edge.liveness import ScriptedLiveness
from edge.match import template as tpl
from edge.match.session import MatchConfig, MatchResult, MatchSession, ScriptedMatcher, combine
from edge.pipeline import Pipeline
from edge.service.wipe import is_zeroed
from edge.types import FaceBox, Reason, Verdict, VerdictKind

FACE = FaceBox(250, 150, 150, 150, 0.95)
RNG = np.random.default_rng(7)


def _descriptor(seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).normal(0, 0.09, 128).astype(np.float32)  # dlib-like: norm ~1, |x| < 0.4
    return d


OWNER = _descriptor(1)
NEAR = OWNER + np.random.default_rng(2).normal(0, 0.01, 128).astype(np.float32)  # distance ~0.11
STRANGER = _descriptor(3)  # distance ~1.4


# ---- template format ---------------------------------------------------------------------------


def test_template_round_trip_is_compact_and_close():
    raw = tpl.encode(OWNER)
    assert len(raw) == tpl.SIZE == 140
    got = tpl.decode(raw)
    assert got.model_id == 1 and "descriptor" not in repr(got)
    assert np.linalg.norm(got.descriptor - OWNER) < 0.01
    assert tpl.from_text(tpl.to_text(raw)) == raw and tpl.from_text(raw.hex()) == raw


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:-1], "140 bytes"),
    (lambda b: b + b"\0", "140 bytes"),
    (lambda b: b"XX" + b[2:], "bad magic"),
    (lambda b: b[:2] + bytes([2]) + b[3:], "version 2 is not supported"),
    (lambda b: b[:10] + bytes([b[10] ^ 1]) + b[11:], "checksum"),
])
def test_bad_templates_are_refused(mutate, message):
    with pytest.raises(tpl.TemplateError, match=message) as err:
        tpl.decode(mutate(tpl.encode(OWNER)))
    assert isinstance(err.value, ValueError) and "\n" not in str(err.value)


def test_template_of_another_model_is_refused():
    import struct
    import zlib

    raw = bytearray(tpl.encode(OWNER))
    raw[3] = 7  # another model id, checksum made valid: refused for the model, not for damage
    raw[-4:] = struct.pack("<I", zlib.crc32(bytes(raw[:-4])))
    with pytest.raises(tpl.TemplateError, match="model id 7.*not comparable"):
        tpl.decode(bytes(raw))


def test_template_text_is_bounded():
    with pytest.raises(tpl.TemplateError, match="longer than any template"):
        tpl.from_text("A" * 10_000)
    with pytest.raises(tpl.TemplateError, match="neither base64"):
        tpl.from_text("not a template!")


def test_a_non_descriptor_is_not_encoded():
    with pytest.raises(tpl.TemplateError):
        tpl.encode(np.full(128, 50.0))
    with pytest.raises(tpl.TemplateError):
        tpl.encode(np.zeros(64))


# ---- the match session and the combination -----------------------------------------------------


def _lm(size=60.0, yaw=0.0):
    lms = ScriptedLandmarks([ScriptedPose(yaw_deg=yaw)])
    out = lms.estimate(np.zeros((4, 4, 3), np.uint8), FACE)
    return dataclasses.replace(out, face_size_px=size)


def test_session_keeps_the_best_frames_and_bounds_its_work():
    m = MatchSession(ScriptedMatcher([STRANGER, STRANGER, NEAR, NEAR, NEAR]), MatchConfig(frames=2, max_runs=4))
    m.start(tpl.encode(OWNER))
    img = np.zeros((8, 8, 3), np.uint8)
    assert m.add(img, _lm(30)) and m.add(img, _lm(31))  # two poor frames of a stranger
    assert m.add(img, _lm(80)) and m.add(img, _lm(90))  # two better frames replace them
    assert not m.add(img, _lm(100))  # max_runs reached: no more descriptor work
    r = m.decide()
    assert r.matched and r.descriptors == 2 and r.distance < 0.2


def test_min_rule_and_no_descriptor():
    m = MatchSession(ScriptedMatcher([STRANGER, NEAR]), MatchConfig(rule="min"))
    m.start(tpl.encode(OWNER))
    assert m.decide() == MatchResult(None, 0)
    img = np.zeros((8, 8, 3), np.uint8)
    m.add(img, _lm(50))
    m.add(img, _lm(40))
    assert m.decide().matched  # the closest frame decides


def test_combine_table():
    live = Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 3, 100)
    spoof = Verdict(VerdictKind.FAIL, Reason.SPOOF_DETECTED, 3, 3, 100)
    yes, no, none = MatchResult(True, 3), MatchResult(False, 3), MatchResult(None, 0)
    assert combine(live, yes) == live
    assert (combine(live, no).kind, combine(live, no).reason) == (VerdictKind.FAIL, Reason.FACE_MISMATCH)
    assert combine(spoof, yes) == spoof and combine(spoof, no) == spoof
    assert (combine(live, none).kind, combine(live, none).reason) == (VerdictKind.TIMEOUT, Reason.NOT_ENOUGH_VOTES)
    assert combine(live, None) == live


def test_wipe_zeroes_template_and_descriptors():
    matcher = ScriptedMatcher([NEAR])
    m = MatchSession(matcher, MatchConfig())
    m.start(tpl.encode(OWNER))
    m.add(np.zeros((8, 8, 3), np.uint8), _lm())
    m.wipe()
    assert is_zeroed(m._template, m._desc, m._quality, m._mean) and not m.active and m.descriptors == 0


# ---- the pipeline with a template ---------------------------------------------------------------


def _pipeline(scores, descriptors, *, match=True):
    matcher = ScriptedMatcher(descriptors)
    return Pipeline(StaticDetector((FACE,)), ScriptedLiveness(scores), DecisionConfig(),
                    landmarks=ScriptedLandmarks() if match else None,
                    match=MatchSession(matcher, MatchConfig()) if match else None)


def _run(p, template=b""):
    cam = open_camera("synthetic://?pattern=black&frames=60")
    return p.run_session(cam, SessionRequest(session_id=1, template=template)).verdict


def test_live_and_match_pass():
    v = _run(_pipeline((0.9,), [NEAR]), tpl.encode(OWNER))
    assert (v.kind, v.reason) == (VerdictKind.PASS, Reason.LIVE_CONFIRMED)


def test_live_and_mismatch_fail():
    v = _run(_pipeline((0.9,), [STRANGER]), tpl.encode(OWNER))
    assert (v.kind, v.reason) == (VerdictKind.FAIL, Reason.FACE_MISMATCH)


def test_attack_and_match_fail_as_attack():
    v = _run(_pipeline((0.1,), [NEAR]), tpl.encode(OWNER))
    assert (v.kind, v.reason) == (VerdictKind.FAIL, Reason.SPOOF_DETECTED)


def test_no_template_is_liveness_only():
    p = _pipeline((0.9,), [STRANGER])
    v = _run(p)
    assert v.kind is VerdictKind.PASS and p.match.matcher.calls == 0 and p.landmarks.calls == 0


def test_live_but_no_chip_is_never_a_pass():
    v = _run(_pipeline((0.9,), [None]), tpl.encode(OWNER))
    assert (v.kind, v.reason) == (VerdictKind.TIMEOUT, Reason.NOT_ENOUGH_VOTES)


@pytest.mark.parametrize("bad", [b"\x01" * 140, tpl.encode(OWNER)[:2] + b"\x09" + tpl.encode(OWNER)[3:], b"short"])
def test_refused_template_faults_before_the_camera_opens(bad):
    p = _pipeline((0.9,), [NEAR])
    cam = open_camera("synthetic://?pattern=black&frames=60")
    v = p.run_session(cam, SessionRequest(session_id=1, template=bad)).verdict
    assert (v.kind, v.reason) == (VerdictKind.FAULT, Reason.TEMPLATE_INVALID)
    assert v.frames_seen == 0 and not cam.is_open and p.match.matcher.calls == 0


def test_template_without_matching_enabled_faults():
    v = _run(_pipeline((0.9,), [NEAR], match=False), tpl.encode(OWNER))
    assert (v.kind, v.reason) == (VerdictKind.FAULT, Reason.MODEL_ERROR)


def test_session_end_wipes_match_state(caplog):
    p = _pipeline((0.9,), [NEAR])
    caplog.set_level("DEBUG")
    v = _run(p, tpl.encode(OWNER))
    assert v.passed
    assert is_zeroed(p.match._template, p.match._desc, p.match._quality, p.match._mean, p.match.matcher._out)
    assert not p.match.active and p.match.matcher.wiped >= 1 and p.landmarks.wiped >= 1
    # no distance, descriptor or template in any log line
    assert "distance" not in caplog.text.lower() and tpl.to_text(tpl.encode(OWNER)) not in caplog.text


def test_match_config_is_validated():
    from edge import config as config_mod
    from edge.errors import ConfigError

    cfg = config_mod.from_dict({})
    assert cfg.match.enabled is False and cfg.match.threshold == 0.38  # off by default: no 100 MB download
    with pytest.raises(ConfigError, match="match.max_runs"):
        config_mod.from_dict({"match": {"frames": 4, "max_runs": 2}})
    with pytest.raises(ConfigError, match="match.rule"):
        config_mod.from_dict({"match": {"rule": "median"}})
    with pytest.raises(ValueError):
        MatchConfig(threshold=0.0)


def test_models_cli_takes_the_feature_and_refuses_unknown_ones():
    import argparse

    from edge.models.cli import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    assert parser.parse_args(["models", "build", "--with", "face-match"]).features == ["face-match"]
    assert parser.parse_args(["models", "fetch"]).features == []
    with pytest.raises(SystemExit):
        parser.parse_args(["models", "fetch", "--with", "everything"])


def test_eval_counts_pairs_and_picks_the_threshold_for_a_target_fmr():
    from edge.match.evaluate import pair_distances, subject_of, threshold_at_fmr

    assert subject_of("nuaa/live/0004_0004_01_06_03_0.jpg") == "0004" and subject_of("image_T1.jpg") is None
    desc = np.stack([OWNER, NEAR, STRANGER, np.full(128, np.nan, np.float32)])
    gen, imp = pair_distances(desc, ["a", "a", "b", "b"])  # the NaN row (no face) takes no part
    assert len(gen) == 1 and len(imp) == 2 and gen[0] < 0.2 < imp.min()
    impostor = np.arange(1, 1001) / 1000.0
    t = threshold_at_fmr(impostor, 0.01)
    assert (impostor <= t).mean() == 0.01 and 0.010 < t < 0.011  # the next impostor would exceed 1 %


def test_chip_alignment_puts_the_five_points_on_dlibs_template():
    """Five dots on a large rotated face (the pyramid path) land where the chip map says, and that is dlib's
    template up to dlib's own half-pixel corner convention (which its golden chips confirm: docs/MATCH.md)."""
    import cv2

    from edge.match.align import ChipExtractor, chip_points, chip_to_image

    want = chip_points()
    angle, scale, shift = np.radians(12.0), 2.6, np.array([300.0, 180.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]) * scale
    pts = want @ rot.T + shift
    img = np.zeros((720, 960, 3), np.uint8)
    for x, y in pts:
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), 9 * 16, (255, 255, 255), -1, cv2.LINE_AA, shift=4)
    chip = ChipExtractor().extract(img, pts)
    m = chip_to_image(pts)
    mapped = (pts - m[:, 2]) @ np.linalg.inv(m[:, :2]).T  # where the map puts the five points in the chip
    assert np.abs(mapped - want).max() < 1.0
    grey = chip[..., 0].astype(float)
    for (x, y) in mapped:
        x0, y0 = int(round(x)), int(round(y))
        patch = grey[y0 - 6:y0 + 7, x0 - 6:x0 + 7]
        ys, xs = np.mgrid[y0 - 6:y0 + 7, x0 - 6:x0 + 7]
        cy, cx = (patch * ys).sum() / patch.sum(), (patch * xs).sum() / patch.sum()
        assert abs(cx - x) < 0.25 and abs(cy - y) < 0.25, (cx, cy, x, y)


def test_missing_face_match_model_names_the_build_with_the_feature(tmp_path, monkeypatch):
    import shutil

    from edge.errors import ModelMissingError
    from edge.match.descriptor import TFLiteDescriptor
    from edge.models import registry

    shutil.copy(registry.models_dir() / "dlib_resnet.toml", tmp_path / "dlib_resnet.toml")
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    with pytest.raises(ModelMissingError, match="edge models build --with face-match"):
        TFLiteDescriptor.from_registry("int8")
