"""Shared fixtures. Keep this file small: fixtures used by one test module belong in that module."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def _up_to_date(models: Path) -> bool:
    from edge.models import registry

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(registry.ENV_MODELS_DIR, str(models))
        for m in registry.list_manifests():
            if m.optional:  # not built by default (edge models build --model NAME)
                continue
            for variant in m.artifacts:
                try:
                    registry.artifact_path(m.name, variant)
                except registry.ModelError:
                    return False
    return True


@pytest.fixture(scope="session")
def built_models_dir(tmp_path_factory) -> Path:
    """A models folder (manifests + build/) whose artifacts all match their manifests.

    The repository's models/ when it is up to date (scripts/setup.sh builds it), else a
    fresh `edge models build` into a temporary copy (about 15 s). Skips without ../shared,
    which holds the MiniFASNet weights and the calibration sets.
    """
    repo_models = REPO / "models"
    if os.environ.get("EDGE_MODELS_DIR") is None and _up_to_date(repo_models):
        return repo_models
    if not (SHARED / "models" / "silent-face").is_dir() or not (SHARED / "fas-dev").is_dir():
        pytest.skip(f"models not built and no ../shared beside the repo ({SHARED}) to build them from")
    from edge.models import build, registry

    tmp = tmp_path_factory.mktemp("models")
    for manifest in repo_models.glob("*.toml"):
        (tmp / manifest.name).write_bytes(manifest.read_bytes())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(registry.ENV_MODELS_DIR, str(tmp))
        report = build.build_all(
            cache_dir=repo_models / "cache",
            weights_dir=SHARED / "models" / "silent-face",
            calibration_dir=SHARED / "fas-dev",
        )
    bad = [r for r in report.results if r.status not in ("built", "up-to-date")]
    if bad:
        pytest.fail(f"model build did not reproduce the manifests: {bad}")
    return tmp


@pytest.fixture
def models_env(built_models_dir, monkeypatch) -> Path:
    """Point the registry (EDGE_MODELS_DIR) at the built models for one test."""
    monkeypatch.setenv("EDGE_MODELS_DIR", str(built_models_dir))
    return built_models_dir


def pytest_collection_modifyitems(config, items):
    """Under emulation (scripts/test-aarch64.sh sets EDGE_TEST_EMULATED) skip, by name, what it cannot afford.

    qemu-user runs floating point in software: the models run 150-300x slower than natively (BlazeFace 0.26 s,
    the face mesh 1.0 s a frame) and numpy's float64 more so. Three marks name what that rules out:
    ``requantizes`` re-runs a real model's calibration pass (about 40 min each; the emulated set-up ran that
    very pass and its artifacts matched their pinned sha256); ``many_frames`` pushes clips or the whole dev
    set through the active pipeline (the golden-output tests, the passive check of the dev set and the short
    mesh tests, which do run, check the models on aarch64); ``realtime`` runs sessions against wall-clock
    deadlines (the watchdog, the controller's), which a frame of about 2 s cannot meet.
    """
    emulated = os.environ.get("EDGE_TEST_EMULATED")
    if not emulated:
        return
    reasons = {
        "requantizes": f"re-quantizes a real model: about 40 min under {emulated} emulation (software floating "
        "point); the emulated set-up's sha256 check of the int8 artifacts covers the quantizer",
        "many_frames": f"pushes clips or the whole dev set through the active pipeline: half an hour or more under "
        f"{emulated} emulation (software floating point); the golden, dev-set and mesh tests check the models here",
        "realtime": f"runs sessions at camera speed against wall-clock deadlines (watchdog, controller): under "
        f"{emulated} emulation a frame takes about 2 s, so the deadlines rightly pass first",
    }
    for item in items:
        for marker, reason in reasons.items():
            if item.get_closest_marker(marker):
                item.add_marker(pytest.mark.skip(reason=reason))
                break
