"""`edge models verify` end to end on the built models: hashes, MiniFASNetV2 golden check, BlazeFace int8 agreement.

Needs ../shared beside the repository (golden crops, development images, and the weights the models are built
from); skips with the reason otherwise. The models are built once per session (tests/conftest.py).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from edge.models import cli, registry, verify

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
WEIGHTS = SHARED / "models" / "silent-face"
IMAGES = SHARED / "fas-dev"

pytestmark = pytest.mark.skipif(
    not (WEIGHTS / "golden").is_dir() or not IMAGES.is_dir(),
    reason=f"golden crops / development images not found under {SHARED} (expected ../shared beside the repo)",
)


@pytest.fixture(scope="module")
def report(built_models_dir) -> verify.VerifyReport:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(registry.ENV_MODELS_DIR, str(built_models_dir))
        return verify.run_verify(weights_dir=WEIGHTS, images_dir=IMAGES)


def figure(report: verify.VerifyReport, model: str, name: str) -> verify.Check:
    (check,) = [c for c in report.checks if c.model == model and c.figure == name]
    return check


def test_verify_passes_with_every_check_run(report):
    # only the optional face-match model may be absent (a clone set up without --with face-match)
    assert [s for s in report.skipped if not s.startswith("dlib_resnet: not built (optional")] == []
    failed = [c for c in report.checks if not c.passed]
    assert failed == [] and report.passed


def test_every_artifact_matches_its_manifest(report):
    hashes = [c for c in report.checks if c.figure.endswith("sha256")]
    # The default build's 9 artifacts must be there; optional ones (the old face_landmark, built by --model, and
    # the face-match model, built by --with face-match) are checked only when present (a clean clone has neither).
    core = [c for c in hashes if c.model not in ("face_landmark", "dlib_resnet")]
    assert len(core) == 9 and all(c.passed for c in hashes)
    assert {c.model for c in hashes} >= {"face_mesh_v2", "face_blendshapes", "face_geometry"}


def test_golden_figures_meet_the_targets(report):
    assert float(figure(report, "minifasnet_v2", "float32 max|dp|").value) <= 1e-4
    assert float(figure(report, "minifasnet_v2", "int8 live/attack agreement").value.rstrip("%")) >= 98.0
    assert float(figure(report, "minifasnet_v2", "int8 median|dp_live|").value) <= 0.02
    assert figure(report, "minifasnet_v2", "int8 golden crops").value == "204"


def test_blazeface_int8_finds_the_same_faces(report):
    assert float(figure(report, "blazeface_short", "int8 box IoU median").value) >= 0.9
    lost = figure(report, "blazeface_short", "int8 faces lost").value
    assert lost.startswith("0 of ") and int(lost.split()[-1]) >= 200  # ~one face per image


def test_cli_verify_prints_the_table_and_exits_zero(models_env, capsys):
    rc = cli.cmd_verify(argparse.Namespace(weights=WEIGHTS, images=IMAGES))
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "int8 box IoU median" in out and "float32 max|dp|" in out and out.strip().endswith("verify: PASS")


def test_cli_verify_fails_on_a_tampered_model(tmp_path, built_models_dir, monkeypatch, capsys):
    for manifest in built_models_dir.glob("*.toml"):
        (tmp_path / manifest.name).write_bytes(manifest.read_bytes())
    (tmp_path / "build").mkdir()
    for art in (built_models_dir / "build").glob("*.tflite"):
        (tmp_path / "build" / art.name).write_bytes(art.read_bytes())
    victim = tmp_path / "build" / "minifasnet_v2.int8.tflite"
    data = bytearray(victim.read_bytes())
    data[-100] ^= 0xFF
    victim.write_bytes(bytes(data))
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    rc = cli.cmd_list(argparse.Namespace())
    assert rc == 1 and "MISMATCH" in capsys.readouterr().out
    # Skip the slow image checks: the hash row alone must fail the verification.
    rc = cli.cmd_verify(argparse.Namespace(weights=tmp_path / "no-golden", images=tmp_path / "no-images"))
    out = capsys.readouterr().out
    assert rc == 1 and "(mismatch)" in out and "verify: FAIL" in out
    with pytest.raises(registry.ModelIntegrityError, match="edge models build"):
        registry.artifact_path("minifasnet_v2", "int8")
