"""`edge check` end to end on the shared dev set: a verdict per image, upstream's ordering."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from timescale import scaled

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FAS = SHARED / "fas-dev"
GOLDEN = SHARED / "models" / "silent-face" / "golden" / "minifasnet_v2_reference.csv"

needs_shared = pytest.mark.skipif(
    not (FAS.is_dir() and GOLDEN.is_file()), reason=f"no ../shared (fas-dev and golden reference) beside the repository ({SHARED})"
)


def auc(scores, labels):
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    pos, neg = s[y], s[~y]
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return gt / (len(pos) * len(neg))


def edge(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=scaled(300), env=env
    )


@pytest.fixture(scope="module")
def check_rows(built_models_dir, tmp_path_factory):
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    r = edge("check", "--json", "--no-progress", "--mode", "passive", str(FAS), env=env)
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


@pytest.mark.many_frames
@needs_shared
def test_active_mode_never_passes_a_still_image(built_models_dir):
    """Every dev image, live or attack, is a still: it cannot answer a challenge."""
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    r = edge("check", "--json", "--no-progress", "--mode", "active", str(FAS), env=env)
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(rows) == 204
    assert not [x for x in rows if x["verdict"] == "PASS"]
    assert {x["reason"] for x in rows} <= {"CHALLENGE_TIMEOUT", "NO_FACE_FOUND", "SPOOF_DETECTED", "NOT_ENOUGH_VOTES"} | {
        "FACE_TOO_SMALL", "FACE_TURNED", "FACE_NOT_CENTRED", "BLURRY", "TOO_DARK", "TOO_BRIGHT", "MULTIPLE_FACES", "FACE_TOO_LARGE"}
    assert all(len(x["challenge"]) == 2 for x in rows)


@needs_shared
def test_every_image_gets_a_verdict(check_rows):
    images = sorted(p for p in FAS.rglob("*") if p.suffix.lower() in {".jpg", ".png"})
    assert len(check_rows) == len(images) == 204
    assert {Path(r["input"]).resolve() for r in check_rows} == {p.resolve() for p in images}
    for r in check_rows:
        assert r["verdict"] in {"PASS", "FAIL", "NO_FACE", "TIMEOUT", "FAULT"}
        assert r["verdict"] != "FAULT"
        assert set(r) == {"input", "verdict", "reason", "frames_used", "frames_seen", "elapsed_ms", "score"}


@needs_shared
def test_auc_matches_upstream(check_rows):
    """AUC of our fused V2+V1SE scores within 0.01 of upstream's V2 on the same images."""
    ref = {row["file"]: float(row["p1_live"]) for row in csv.DictReader(GOLDEN.open())}
    ours, theirs, labels = [], [], []
    for r in check_rows:
        rel = str(Path(r["input"]).resolve().relative_to(FAS.resolve()))
        if r["score"] is None or rel not in ref:
            continue  # a frame the quality gate refused has no score
        ours.append(r["score"])
        theirs.append(ref[rel])
        labels.append("/live/" in "/" + rel)
    assert len(ours) >= 190
    a_ours, a_up = auc(ours, labels), auc(theirs, labels)
    assert abs(a_ours - a_up) <= 0.01, (a_ours, a_up)


@needs_shared
def test_default_threshold_error_rates_are_sane(check_rows):
    live = [r for r in check_rows if "/live/" in r["input"]]
    spoof = [r for r in check_rows if "/spoof/" in r["input"]]
    apcer = sum(r["verdict"] == "PASS" for r in spoof) / len(spoof)
    bpcer = sum(r["verdict"] != "PASS" for r in live) / len(live)
    assert apcer <= 0.05 and bpcer <= 0.05, (apcer, bpcer)


def test_check_table_and_missing_path(built_models_dir, tmp_path):
    from edge.demo import DEFAULT_DIR, make_demo

    clip = DEFAULT_DIR / "astronaut.avi"
    if not clip.is_file():
        make_demo(DEFAULT_DIR)
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    r = edge("check", str(clip), env=env)
    assert r.returncode == 0, r.stderr
    assert "verdict" in r.stdout and "astronaut.avi" in r.stdout and "total:" in r.stdout
    r = edge("check", str(tmp_path / "nope.jpg"), env=env)
    assert r.returncode == 2 and "an existing file or folder" in r.stderr


@pytest.mark.many_frames
@needs_shared
def test_edge_eval_on_the_dev_set(built_models_dir):
    """`edge eval` on the real pipeline: the table in human form and the figures in JSON."""
    env = dict(os.environ, EDGE_MODELS_DIR=str(built_models_dir))
    manifest = str(FAS / "manifest.csv")
    r = edge("eval", str(FAS), "--manifest", manifest, "--json", "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    overall = json.loads(r.stdout)["overall"]
    assert overall["counts"]
    assert overall["auc"] >= 0.99 and overall["eer"]["eer"] <= 0.05
    r = edge("eval", str(FAS), "--manifest", manifest, "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    for heading in ("APCER", "BPCER", "ACER", "EER", "AUC", "BPCER @ APCER <= 5%", "APCER @ BPCER <= 5%"):
        assert heading in r.stdout
