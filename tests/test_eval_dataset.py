"""Dataset loading: manifests, live/spoof folders and their errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.errors import EdgeError
from edge.eval.dataset import DatasetError, load_dataset, load_folders, load_manifest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def touch(root: Path, rel: str) -> Path:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"")  # content is never read while loading
    return p


def write_manifest(path: Path, rows: list[str], header="file,label,attack,repo") -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def tree(tmp_path):
    for rel in ("a/live/1.jpg", "a/live/2.png", "a/spoof/3.jpg", "b/live/clip.mp4", "b/spoof/replay/4.jpg"):
        touch(tmp_path, rel)
    (tmp_path / "b/live/frames_session").mkdir()
    touch(tmp_path, "b/live/frames_session/0001.jpg")
    return tmp_path


def test_manifest(tree):
    man = write_manifest(
        tree / "m.csv",
        [
            "a/live/1.jpg,live,,org/repo-a",
            "a/spoof/3.jpg,spoof,print (photo),org/repo-a",
            "b/spoof/replay/4.jpg,Attack,,",
            "b/live/clip.mp4,bona fide,,",
            "b/live/frames_session,LIVE,,",
        ],
    )
    ds = load_manifest(tree, man)
    assert [i.rel for i in ds.items] == [
        "a/live/1.jpg", "a/spoof/3.jpg", "b/spoof/replay/4.jpg", "b/live/clip.mp4", "b/live/frames_session"
    ]
    assert [i.label for i in ds.items] == ["live", "spoof", "spoof", "live", "live"]
    assert [i.attack for i in ds.items] == ["", "print (photo)", "unspecified", "", ""]
    assert [i.source for i in ds.items] == ["org/repo-a", "org/repo-a", "b", "b", "b"]
    assert [i.kind for i in ds.items] == ["image", "image", "image", "video", "frames"]
    assert ds.n_live == 3 and ds.n_spoof == 2 and ds.manifest == man.resolve()
    assert all(i.path.is_absolute() for i in ds.items)


def test_manifest_used_by_default_when_present(tree):
    write_manifest(tree / "manifest.csv", ["a/live/1.jpg,live,,", "a/spoof/3.jpg,spoof,,"])
    ds = load_dataset(tree)
    assert len(ds.items) == 2 and ds.manifest is not None


def test_manifest_source_column_and_bom(tree):
    p = tree / "m.csv"
    p.write_text("\ufefffile,label,source\na/live/1.jpg,live,cam1\na/spoof/3.jpg,spoof,cam2\n", encoding="utf-8")
    ds = load_manifest(tree, p)
    assert [i.source for i in ds.items] == ["cam1", "cam2"]
    assert ds.items[1].attack == "unspecified"


def test_manifest_group_column(tree):
    p = write_manifest(tree / "m.csv", ["a/live/1.jpg,live,,,person-7", "a/spoof/3.jpg,spoof,,,"],
                       header="file,label,attack,repo,group")
    ds = load_manifest(tree, p)
    assert [i.group for i in ds.items] == ["person-7", ""]
    p = write_manifest(tree / "s.csv", ["a/live/1.jpg,live,s1", "a/spoof/3.jpg,spoof,s2"], header="file,label,subject")
    assert [i.group for i in load_manifest(tree, p).items] == ["s1", "s2"]


def test_sim_sessions_writes_groups_outside_the_repo(tmp_path):
    import subprocess
    import sys

    import cv2
    import numpy as np

    src = tmp_path / "src"
    for rel in ("live/a.jpg", "spoof/b.jpg"):
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(src / rel), np.full((64, 64, 3), 128, np.uint8))
    write_manifest(src / "manifest.csv", ["live/a.jpg,live,,", "spoof/b.jpg,spoof,print,"])
    script = Path(__file__).resolve().parents[1] / "scripts" / "sim_sessions.py"
    out = tmp_path / "sessions"
    r = subprocess.run([sys.executable, str(script), str(src), str(src / "manifest.csv"), str(out),
                        "--frames", "2", "--seeds", "2"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ds = load_manifest(out, out / "manifest.csv")
    assert len(ds.items) == 4 and {i.kind for i in ds.items} == {"frames"}
    assert [i.group for i in ds.items] == ["live/a.jpg", "live/a.jpg", "spoof/b.jpg", "spoof/b.jpg"]
    assert len(list((out / ds.items[0].rel).glob("*.jpg"))) == 2
    r = subprocess.run([sys.executable, str(script), str(src), str(src / "manifest.csv"), str(script.parent / "x")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "outside the repository" in r.stderr


def test_unknown_label_names_line_and_value(tree):
    man = write_manifest(tree / "m.csv", ["a/live/1.jpg,live,,", "a/spoof/3.jpg,fake-ish,,"])
    with pytest.raises(DatasetError, match=r"m\.csv:3: unknown label 'fake-ish'.*'live'.*'spoof'") as exc:
        load_manifest(tree, man)
    assert isinstance(exc.value, ValueError) and isinstance(exc.value, EdgeError)


def test_missing_files_are_listed(tree):
    man = write_manifest(tree / "m.csv", ["a/live/1.jpg,live,,", "a/spoof/nope.jpg,spoof,,", "x/y.jpg,live,,"])
    with pytest.raises(DatasetError, match=r"2 file\(s\).*do not exist.*a/spoof/nope.jpg, x/y.jpg"):
        load_manifest(tree, man)


def test_missing_columns(tree):
    man = write_manifest(tree / "m.csv", ["a/live/1.jpg,live"], header="path,label")
    with pytest.raises(DatasetError, match="lacks column.*file"):
        load_manifest(tree, man)


def test_missing_manifest_file(tree):
    with pytest.raises(DatasetError, match="cannot read manifest"):
        load_manifest(tree, tree / "absent.csv")


def test_duplicate_and_unsupported_entries(tree):
    man = write_manifest(tree / "m.csv", ["a/live/1.jpg,live,,", "a/live/1.jpg,live,,"])
    with pytest.raises(DatasetError, match="listed twice"):
        load_manifest(tree, man)
    touch(tree, "a/live/notes.txt")
    man = write_manifest(tree / "m.csv", ["a/live/notes.txt,live,,", "a/spoof/3.jpg,spoof,,"])
    with pytest.raises(DatasetError, match="neither images, videos"):
        load_manifest(tree, man)


@pytest.mark.parametrize(
    "rows, what",
    [([], "holds no images"), (["a/live/1.jpg,live,,"], "no spoof"), (["a/spoof/3.jpg,spoof,,"], "no live")],
)
def test_empty_sets(tree, rows, what):
    with pytest.raises(DatasetError, match=what):
        load_manifest(tree, write_manifest(tree / "m.csv", rows))


def test_folders(tree):
    touch(tree, "a/live/readme.txt")  # ignored: not an image or video
    ds = load_folders(tree)
    got = {(i.rel, i.label, i.attack, i.source, i.kind) for i in ds.items}
    assert got == {
        ("a/live/1.jpg", "live", "", "a", "image"),
        ("a/live/2.png", "live", "", "a", "image"),
        ("a/spoof/3.jpg", "spoof", "unspecified", "a", "image"),
        ("b/live/clip.mp4", "live", "", "b", "video"),
        ("b/live/frames_session/0001.jpg", "live", "", "b", "image"),
        ("b/spoof/replay/4.jpg", "spoof", "replay", "b", "image"),
    }
    assert ds.manifest is None and load_dataset(tree).manifest is None


def test_folders_at_root_use_root_name(tmp_path):
    touch(tmp_path, "live/1.jpg")
    touch(tmp_path, "spoof/print/2.jpg")
    ds = load_folders(tmp_path)
    assert {i.source for i in ds.items} == {tmp_path.name}
    assert {i.attack for i in ds.items} == {"", "print"}


def test_folders_errors(tmp_path):
    with pytest.raises(DatasetError, match="not a directory"):
        load_folders(tmp_path / "absent")
    with pytest.raises(DatasetError, match="folders named live/ and spoof/"):
        load_folders(tmp_path)
    touch(tmp_path, "live/1.jpg")
    with pytest.raises(DatasetError, match="no spoof"):
        load_folders(tmp_path)


@pytest.mark.skipif(not (SHARED / "fas-dev" / "manifest.csv").is_file(), reason="../shared/fas-dev not present")
def test_fas_dev_manifest_and_folders_agree():
    root = SHARED / "fas-dev"
    man = load_dataset(root, root / "manifest.csv")
    folders = load_folders(root)
    assert (man.n_live, man.n_spoof) == (folders.n_live, folders.n_spoof) == (102, 102)
    assert {i.path for i in man.items} == {i.path for i in folders.items}
    assert len(man.sources()) == 2
