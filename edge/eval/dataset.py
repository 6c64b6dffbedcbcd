"""Evaluation datasets: a manifest CSV, or folders named ``live/`` and ``spoof/``.

Manifest (the format of ``fas-dev/manifest.csv``): a CSV with a header and at
least the columns ``file`` (path relative to the dataset root), ``label``
(``live`` or ``spoof``; ``bonafide``/``bona fide``/``attack`` are accepted as
synonyms, case-insensitive) and ``attack`` (attack type, may be empty; empty on
a spoof row means ``unspecified``). An optional ``repo`` or ``source`` column
names the item's source, used for per-source figures; without it the source
is the first component of ``file``. An optional ``group`` (or ``subject``)
column names what several presentations share when they are not independent
(one person, or the one image simulated sessions were made from): the fusion
comparison resamples and splits by group. Other columns are ignored.

Without a manifest, every directory named ``live`` or ``spoof`` below the root
(at any depth) contributes its images and videos, recursively. The attack type
of a file under ``spoof/`` is its first sub-directory below ``spoof`` (e.g.
``spoof/print/x.jpg`` -> ``print``), else ``unspecified``; the source is the
first path component below the root when that is not the label directory.

An item is one presentation: an image (a one-frame session), a video file or
a directory of frames (a full session). Frame directories can only be named by
a manifest, since in folder mode a sub-directory is an attack type.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from edge.camera.spec import IMAGE_EXTS, VIDEO_EXTS  # what the camera sources can read
from edge.errors import EdgeError

LIVE, SPOOF = "live", "spoof"
_LABELS = {
    "live": LIVE,
    "bonafide": LIVE,
    "bona fide": LIVE,
    "bona_fide": LIVE,
    "spoof": SPOOF,
    "attack": SPOOF,
}
UNSPECIFIED = "unspecified"
MANIFEST_NAME = "manifest.csv"


class DatasetError(EdgeError, ValueError):
    """A dataset or manifest is malformed, incomplete or empty."""


@dataclass(frozen=True)
class Item:
    """One presentation of the dataset."""

    path: Path  # absolute
    rel: str  # path relative to the dataset root, as written in the manifest
    label: str  # LIVE or SPOOF
    attack: str  # attack type; "" for live
    source: str
    kind: str  # "image", "video" or "frames"
    group: str = ""  # shared by presentations that are not independent ("" = its own)

    @property
    def bona_fide(self) -> bool:
        return self.label == LIVE


@dataclass(frozen=True)
class Dataset:
    root: Path
    items: tuple[Item, ...]
    manifest: Path | None = None

    @property
    def n_live(self) -> int:
        return sum(1 for i in self.items if i.bona_fide)

    @property
    def n_spoof(self) -> int:
        return len(self.items) - self.n_live

    def sources(self) -> tuple[str, ...]:
        return tuple(sorted({i.source for i in self.items}))


def _kind(path: Path) -> str | None:
    if path.is_dir():
        return "frames"
    ext = path.suffix.lower()
    if ext in IMAGE_EXTS:
        return "image"
    if ext in VIDEO_EXTS:
        return "video"
    return None


def normalise_label(raw: str, where: str) -> str:
    label = _LABELS.get(raw.strip().lower())
    if label is None:
        raise DatasetError(
            f"{where}: unknown label {raw!r}; use 'live' (bona fide) or 'spoof' (attack)"
        )
    return label


def load_manifest(root: Path | str, manifest: Path | str) -> Dataset:
    """Read a manifest CSV; ``file`` entries are relative to ``root``."""
    root = Path(root)
    manifest = Path(manifest)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} is not a directory; pass the folder the manifest's paths start from")
    try:
        fh = manifest.open(newline="", encoding="utf-8-sig")
    except OSError as err:
        raise DatasetError(f"cannot read manifest {manifest}: {err.strerror}; check the --manifest path") from err
    with fh:
        reader = csv.DictReader(fh)
        cols = {c.strip().lower(): c for c in (reader.fieldnames or [])}
        missing = [c for c in ("file", "label") if c not in cols]
        if missing:
            raise DatasetError(
                f"manifest {manifest} lacks column(s) {', '.join(missing)}; its header must name at least "
                "file,label (and attack, optionally repo or source)"
            )
        src_col = cols.get("repo") or cols.get("source")
        group_col = cols.get("group") or cols.get("subject")
        items: list[Item] = []
        absent: list[str] = []
        unknown_kind: list[str] = []
        seen: set[str] = set()
        for lineno, row in enumerate(reader, start=2):
            rel = (row.get(cols["file"]) or "").strip()
            if not rel:
                raise DatasetError(f"{manifest}:{lineno}: empty 'file' entry")
            where = f"{manifest}:{lineno}"
            label = normalise_label(row.get(cols["label"]) or "", where)
            if rel in seen:
                raise DatasetError(f"{where}: {rel} is listed twice; each presentation must appear once")
            seen.add(rel)
            path = root / rel
            if not path.exists():
                absent.append(rel)
                continue
            kind = _kind(path)
            if kind is None:
                unknown_kind.append(rel)
                continue
            attack = ""
            if label == SPOOF:
                attack = (row.get(cols["attack"]) or "").strip() if "attack" in cols else ""
                attack = attack or UNSPECIFIED
            source = (row.get(src_col) or "").strip() if src_col else ""
            if not source:
                source = Path(rel).parts[0] if len(Path(rel).parts) > 1 else "."
            group = (row.get(group_col) or "").strip() if group_col else ""
            items.append(Item(path.resolve(), rel, label, attack, source, kind, group))
    if absent:
        head = ", ".join(absent[:3]) + (" ..." if len(absent) > 3 else "")
        raise DatasetError(
            f"{len(absent)} file(s) listed in {manifest} do not exist below {root}: {head}; "
            "check the dataset root (paths in the manifest are relative to it)"
        )
    if unknown_kind:
        head = ", ".join(unknown_kind[:3]) + (" ..." if len(unknown_kind) > 3 else "")
        raise DatasetError(
            f"{len(unknown_kind)} file(s) in {manifest} are neither images, videos nor frame folders: {head}; "
            f"supported: {', '.join(sorted(IMAGE_EXTS | VIDEO_EXTS))} or a directory of frames"
        )
    return _checked(Dataset(root.resolve(), tuple(items), manifest.resolve()), f"manifest {manifest}")


def load_folders(root: Path | str) -> Dataset:
    """Collect every image/video below directories named ``live`` or ``spoof``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset {root} is not a directory")
    items: list[Item] = []
    seen: set[Path] = set()
    for label_dir in sorted(p for p in root.rglob("*") if p.is_dir() and p.name.lower() in (LIVE, SPOOF)):
        label = label_dir.name.lower()
        if any(part.lower() in (LIVE, SPOOF) for part in label_dir.relative_to(root).parts[:-1]):
            continue  # nested label folder: its files are reached from the outer one
        for path in sorted(label_dir.rglob("*")):
            if not path.is_file() or path in seen:
                continue
            kind = _kind(path)
            if kind is None:
                continue
            seen.add(path)
            rel_label = path.relative_to(label_dir).parts
            attack = ""
            if label == SPOOF:
                attack = rel_label[0] if len(rel_label) > 1 else UNSPECIFIED
            rel_root = label_dir.relative_to(root).parts
            source = rel_root[0] if len(rel_root) > 1 else root.resolve().name
            items.append(Item(path.resolve(), str(path.relative_to(root)), label, attack, source, kind))
    return _checked(Dataset(root.resolve(), tuple(items)), f"dataset {root} (folders named live/ and spoof/)")


def _checked(ds: Dataset, what: str) -> Dataset:
    if not ds.items:
        raise DatasetError(
            f"{what} holds no images or videos; expected a manifest with file,label,attack columns "
            "or folders named live/ and spoof/"
        )
    if ds.n_live == 0:
        raise DatasetError(f"{what} has no live (bona fide) items; BPCER cannot be measured without them")
    if ds.n_spoof == 0:
        raise DatasetError(f"{what} has no spoof (attack) items; APCER cannot be measured without them")
    return ds


def load_dataset(root: Path | str, manifest: Path | str | None = None) -> Dataset:
    """A manifest if given (or ``root/manifest.csv`` exists), else the live/spoof folders."""
    root = Path(root)
    if manifest is None and (root / MANIFEST_NAME).is_file():
        manifest = root / MANIFEST_NAME
    if manifest is not None:
        return load_manifest(root, manifest)
    return load_folders(root)
