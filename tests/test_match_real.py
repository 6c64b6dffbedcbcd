"""1:1 with the real models: mesh alignment against dlib's, enrol -> match end to end, the wipe.

Needs the face-match build (`edge models build --with face-match`; .ci/run does it) and ../shared;
skips with the reason otherwise.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge import config as config_mod
from edge.errors import ModelError
from edge.service.wipe import is_zeroed

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "models" / "dlib-face" / "golden.npz"
LIVE = SHARED / "fas-dev" / "nuaa" / "live"


@pytest.fixture
def face_match(models_env):
    from edge.models.registry import artifact_path

    try:
        artifact_path("dlib_resnet", "float32")
    except ModelError as err:
        pytest.skip(f"face-match model not built (edge models build --with face-match): {err}")
    if not GOLDEN.is_file() or not LIVE.is_dir():
        pytest.skip(f"no golden descriptors / dev faces under {SHARED}")
    return models_env


def _cfg(**match):
    return config_mod.from_dict({"match": {"enabled": True, **match}})


def test_mesh_alignment_stays_close_to_dlibs(face_match):
    """Every 8th golden face: the mesh-aligned descriptor is near dlib's own (all 101: docs/MATCH.md)."""
    import cv2

    from edge.match.evaluate import ImageDescriber

    with np.load(GOLDEN, allow_pickle=False) as z:
        names, want = z["names"][::8], z["descriptors"][::8]
    describe = ImageDescriber.from_config(_cfg())
    try:
        dist = [np.linalg.norm(describe(cv2.imread(str(SHARED / "fas-dev" / str(n)))) - w)
                for n, w in zip(names, want)]
    finally:
        describe.close()
    assert np.median(dist) <= 0.15 and max(dist) <= 0.3, np.round(dist, 3)


def _pair():
    files = sorted(p.name for p in LIVE.iterdir())
    a = [f for f in files if f.startswith("0004_")]
    b = [f for f in files if f.startswith("0013_")]
    return LIVE / a[0], LIVE / a[5], LIVE / b[0]


def test_enrol_then_match_and_mismatch(face_match, capsys):
    from edge.match.cli import cmd_enroll, cmd_match
    from argparse import Namespace

    enrol_img, same, other = _pair()
    assert cmd_enroll(Namespace(input=str(enrol_img), source=None, config=None, hex=False)) == 0
    template = capsys.readouterr().out.strip()
    assert 180 <= len(template) <= 200  # base64 of 140 bytes, one line, nothing written anywhere
    assert cmd_match(Namespace(input=str(same), template=template, config=None)) == 0
    assert '"PASS"' in capsys.readouterr().out
    assert cmd_match(Namespace(input=str(other), template=template, config=None)) == 1
    assert '"FACE_MISMATCH"' in capsys.readouterr().out


def test_every_match_buffer_is_zero_after_a_session(face_match):
    from edge.assemble import build_pipeline
    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera
    from edge.demo import DEFAULT_DIR, make_demo
    from edge.match import template as tpl

    clip = DEFAULT_DIR / "astronaut.avi"
    if not clip.is_file():
        make_demo(DEFAULT_DIR)
    with build_pipeline(_cfg()) as p:
        m, matcher = p.match, p.match.matcher
        calls = []
        describe = matcher.describe
        matcher.describe = lambda *a: (calls.append(1), describe(*a))[1]
        request = SessionRequest(session_id=1, template=tpl.encode(np.full(128, 0.05, np.float32)))
        out = p.run_session(open_camera(f"video://{clip}"), request)
        assert out.verdict.frames_used > 0 and calls  # the descriptor really ran
        assert matcher.descriptor._interp is not None and m.descriptors == 0 and not m.active
        assert is_zeroed(m._template, m._desc, m._quality, m._mean), "match session"
        assert is_zeroed(matcher.extractor.chip, matcher.extractor._bgr, matcher._pts), "chip"
        assert is_zeroed(matcher.descriptor._input, matcher.descriptor.descriptor), "descriptor buffers"
        d = matcher.descriptor._interp
        for det in list(d.get_input_details()) + list(d.get_output_details()):
            view = d.tensor(det["index"])()
            assert is_zeroed(view.copy()), "descriptor tensors"
            del view
        lm = p.landmarks
        assert is_zeroed(lm._crop, lm._rgb, lm._points, lm._raw), "mesh buffers"


def test_bench_match_prints_the_cost_table(face_match):
    import io

    from edge.match.bench import run

    out = io.StringIO()
    assert run(runs=2, warmup=0, threads="1", out=out) == 0
    text = out.getvalue()
    assert "descriptor float32" in text and "descriptor int8" in text and "chip" in text
