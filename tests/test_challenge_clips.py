"""The challenge on real clips: one person's recorded actions stitched into a session.

From ../shared/action-dev (Zulkhuu/head-gesture-recogniton, one man, one phone): a still
stretch and a blink from ``2.yes_motion``, then a still stretch and a head turn toward the
image's right (the person's own left: ``turn_left`` in our convention) from ``1.no_motion``.
The clip answers "blink, then turn_left" and nothing else. The stitched clip is written to
pytest's temporary folder only (never into the repository).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from timescale import scaled

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
ACTION = SHARED / "action-dev"
Z1 = ACTION / "Zulkhuu_head-gesture-recogniton" / "1.no_motion_resize.mp4"
Z2 = ACTION / "Zulkhuu_head-gesture-recogniton" / "2.yes_motion_resize.mp4"

pytestmark = [
    pytest.mark.skipif(not (Z1.is_file() and Z2.is_file()), reason=f"no action-dev clips in ../shared ({ACTION})"),
    pytest.mark.many_frames,  # clips through the models: skipped under emulation
]


def _frames(path: Path, first: int, last: int):
    import cv2

    cap = cv2.VideoCapture(str(path))
    out, i = [], 0
    try:
        while i <= last:
            ok, frame = cap.read()
            if not ok:
                break
            if i >= first:
                out.append(frame)
            i += 1
    finally:
        cap.release()
    return out


@pytest.fixture(scope="module")
def answer_clip(tmp_path_factory) -> Path:
    import cv2

    # 2.yes: still 0-50, blink 55-57, still to 105; 1.no: still 120-140, turn toward the
    # image's right 143-164 (~37 degrees), back through the middle, then a still stretch.
    frames = _frames(Z2, 0, 105) + _frames(Z1, 120, 170) + _frames(Z1, 105, 140)
    h, w = frames[0].shape[:2]
    path = tmp_path_factory.mktemp("stitched") / "blink_then_turn_left.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()
    return path


@pytest.fixture(scope="module")
def active_pipeline(built_models_dir):
    os.environ["EDGE_MODELS_DIR"] = str(built_models_dir)
    from edge import config as config_mod
    from edge.assemble import build_pipeline

    with build_pipeline(config_mod.load(None, overrides={"liveness": {"mode": "active"}})) as p:
        yield p


def test_the_answered_order_passes_from_the_command_line(answer_clip, built_models_dir):
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", "check", "--json", "--no-progress", "--mode", "active",
         "--challenge", "blink,turn_left", str(answer_clip)],
        capture_output=True, text=True, timeout=scaled(300), env=env,
    )
    assert r.returncode == 0, r.stderr
    row = json.loads(r.stdout.splitlines()[-1])
    assert (row["verdict"], row["reason"]) == ("PASS", "LIVE_CONFIRMED"), row
    assert row["challenge"] == ["blink", "turn_left"]
    assert [(e["event"], e.get("action")) for e in row["events"] if e["event"] in ("prompt", "done")] == [
        ("prompt", "blink"), ("done", "blink"), ("prompt", "turn_left"), ("done", "turn_left")]


@pytest.mark.parametrize("order", [
    ("turn_left", "blink"),  # the right actions in the wrong order
    ("blink", "turn_right"),  # the other direction (the person's right)
    ("blink", "look_up"),
    ("smile", "turn_left"),
    ("open_mouth", "blink"),
    ("turn_right", "blink"),
])
def test_any_other_order_fails(answer_clip, active_pipeline, order):
    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera

    out = active_pipeline.run_session(open_camera(f"video://{answer_clip}"), SessionRequest(1, challenge=order))
    assert out.verdict.kind.value == "FAIL", out.verdict
    assert out.verdict.reason.name in ("CHALLENGE_TIMEOUT", "CHALLENGE_FAILED"), out.verdict


def test_a_frozen_frame_of_the_same_person_never_passes(active_pipeline, tmp_path):
    import cv2

    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera

    still = tmp_path / "still.png"
    assert cv2.imwrite(str(still), _frames(Z2, 30, 30)[0])  # pytest's temporary folder only
    for order in (("blink", "turn_left"), ("look_up", "smile")):
        out = active_pipeline.run_session(open_camera(f"image://{still}?loop=1&fps=30"), SessionRequest(1, challenge=order))
        # A looped still file runs until the challenge times out; a live camera frozen on one
        # frame is a camera FAULT before that (edge.camera's freeze detection).
        assert out.verdict.kind.value == "FAIL" and out.verdict.reason.name == "CHALLENGE_TIMEOUT", out.verdict


def _arrays(obj, seen=None, path="pipeline"):
    """Every numpy array reachable through the attributes of ``obj`` (one level of nesting per object)."""
    import numpy as np

    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    for name, value in vars(obj).items():
        where = f"{path}.{name}"
        if isinstance(value, np.ndarray):
            yield where, value
        elif isinstance(value, (list, tuple)):
            for i, v in enumerate(value):
                if isinstance(v, np.ndarray):
                    yield f"{where}[{i}]", v
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("edge."):
            yield from _arrays(value, seen, where)


def test_an_active_session_leaves_no_mesh_pose_blendshape_or_baseline_behind(answer_clip, active_pipeline):
    """Privacy: a session leaves every buffer of the landmark stage, the challenge engine and its
    3-D check exactly as it found it: per-person buffers (points, blendshapes, poses, baselines,
    the neutral reference) zero again, model constants (the canonical face) unchanged."""
    import numpy as np

    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera

    p = active_pipeline
    p.landmarks.wipe()
    p.challenge.wipe()
    stages = {"landmarks": p.landmarks, "challenge": p.challenge, "depth": p.challenge.depth}
    before = {w: a.copy() for label, st in stages.items() for w, a in _arrays(st, path=label)}
    assert len(before) >= 15
    out = p.run_session(open_camera(f"video://{answer_clip}"), SessionRequest(1, challenge=("blink", "turn_left")))
    assert out.verdict.kind.value == "PASS"
    after = {w: a for label, st in stages.items() for w, a in _arrays(st, path=label)}
    assert after.keys() == before.keys()
    for where, arr in after.items():
        assert np.array_equal(arr, before[where]), f"{where} changed by the session and was not wiped"
    zero = [w for w, a in before.items() if not a.any()]
    assert any("points" in w for w in zero) and any("blend" in w for w in zero) and any("baseline" in w for w in zero), zero
    assert not p.challenge.depth.has_reference


def test_edge_run_prints_the_prompts_and_the_verdict(answer_clip, built_models_dir):
    """`edge run` in active mode on a video file: a JSON line per prompt, then the verdict."""
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", "run", "--source", f"video://{answer_clip}", "--sessions", "1",
         "--challenge", "blink,turn_left", "-q"],
        capture_output=True, text=True, timeout=scaled(300), env=env,
    )
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    prompts = [x["prompt"] for x in lines if "prompt" in x]
    assert prompts[:2] == ["LOOK_AT_CAMERA", "HOLD_STILL"]
    assert prompts.index("BLINK") < prompts.index("BACK_TO_NEUTRAL") < prompts.index("TURN_LEFT"), prompts
    verdict = lines[-1]
    assert (verdict["verdict"], verdict["reason"], verdict["challenge"]) == ("PASS", "LIVE_CONFIRMED", ["blink", "turn_left"])
