"""The action-dev manifest: labelled action segments of real clips.

``actions`` cells read like ``blink@40-46;turn_left@200-260(~30)``: segments
separated by ``;``, each ``name@first-last`` (0-based decoded frames, inclusive)
with an optional parenthesised list of comma-separated details. A detail is a
nested segment (``nod@110-180(look_down@119-130,look_up@140-152)``), a rough
peak angle (``~32``, ``~15-25`` = 20, ``roll~+35``) or free text (``slow``,
``near profile``). Labels are image-based: ``turn_left`` means the nose points
toward the image's left (see ../shared/action-dev/README.md).

A malformed cell raises :class:`ActionManifestError` naming the file, the
column text and the position.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from pathlib import Path

from edge.errors import EdgeError


class ActionManifestError(EdgeError, ValueError):
    """The action manifest or one of its ``actions`` cells cannot be parsed."""


@dataclass(frozen=True)
class Segment:
    """One labelled action: frames ``start``..``end`` inclusive."""

    action: str
    start: int
    end: int
    angle_deg: float | None = None  # the rough peak angle, if labelled
    angle_axis: str = ""  # "roll" for ``roll~+35``, else ""
    notes: tuple[str, ...] = ()
    children: tuple["Segment", ...] = ()

    @property
    def frames(self) -> int:
        return self.end - self.start + 1

    def walk(self):
        """This segment, then its nested segments (depth first)."""
        yield self
        for c in self.children:
            yield from c.walk()


@dataclass(frozen=True)
class Clip:
    """One row of the manifest."""

    file: str
    segments: tuple[Segment, ...]
    frames: int
    fps: float
    width: int
    height: int

    def all_segments(self) -> tuple[Segment, ...]:
        """Every segment, nested ones included, in order of appearance."""
        return tuple(s for top in self.segments for s in top.walk())


_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RANGE = re.compile(r"(\d+)-(\d+)")
_ANGLE = re.compile(r"^(?:([A-Za-z]+)~|~)([+-]?\d+(?:\.\d+)?)(?:-(\d+(?:\.\d+)?))?$")


def _split_top(text: str, sep: str) -> list[tuple[int, str]]:
    """Split ``text`` at ``sep`` outside parentheses; (offset, piece) pairs. Unbalanced -> ValueError."""
    out, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ')' at position {i}")
        elif ch == sep and depth == 0:
            out.append((start, text[start:i]))
            start = i + 1
    if depth != 0:
        raise ValueError("unbalanced '(': a parenthesis is not closed")
    out.append((start, text[start:]))
    return out


def _parse_segment(text: str, offset: int) -> Segment:
    s = text.strip()
    lead = len(text) - len(text.lstrip())
    m = _NAME.match(s)
    if not m or len(s) <= m.end() or s[m.end()] != "@":
        raise ValueError(f"expected name@first-last at position {offset + lead}, got {s!r}")
    name = m.group(0)
    r = _RANGE.match(s, m.end() + 1)
    if not r:
        raise ValueError(f"expected a frame range first-last after {name}@ at position {offset + lead + m.end() + 1}")
    start, end = int(r.group(1)), int(r.group(2))
    if end < start:
        raise ValueError(f"{name}@{start}-{end}: the range ends before it starts")
    rest = s[r.end():]
    angle, axis, notes, children = None, "", [], []
    if rest:
        if not (rest.startswith("(") and rest.endswith(")")):
            raise ValueError(f"unexpected text {rest!r} after {name}@{start}-{end} at position {offset + lead + r.end()}")
        inner = rest[1:-1]
        base = offset + lead + r.end() + 1
        for off, piece in _split_top(inner, ","):
            p = piece.strip()
            if not p:
                continue
            if "@" in p and _NAME.match(p) and p[_NAME.match(p).end():].startswith("@"):
                children.append(_parse_segment(piece, base + off))
                continue
            a = _ANGLE.match(p)
            if a and angle is None:
                lo = float(a.group(2))
                angle = (lo + float(a.group(3))) / 2.0 if a.group(3) else lo
                axis = a.group(1) or ""
            else:
                notes.append(p)
    return Segment(name, start, end, angle, axis, tuple(notes), tuple(children))


def parse_actions(text: str) -> tuple[Segment, ...]:
    """The segments of one ``actions`` cell (ValueError with the position when malformed)."""
    segs = []
    for off, piece in _split_top(text, ";"):
        if piece.strip():
            segs.append(_parse_segment(piece, off))
    return tuple(segs)


def load_action_manifest(path: str | Path) -> list[Clip]:
    """Read an action-dev manifest (columns file, actions, frames, fps, width, height, ...)."""
    p = Path(path)
    try:
        fh = p.open(newline="", encoding="utf-8")
    except OSError as err:
        raise ActionManifestError(f"cannot read the action manifest {p}: {err}") from err
    clips = []
    with fh:
        reader = csv.DictReader(fh)
        need = {"file", "actions", "frames", "fps"}
        missing = need - set(reader.fieldnames or ())
        if missing:
            raise ActionManifestError(f"{p}: missing column(s) {', '.join(sorted(missing))}; "
                                      f"expected at least {', '.join(sorted(need))}")
        for line, row in enumerate(reader, start=2):
            try:
                segs = parse_actions(row["actions"] or "")
                clip = Clip(row["file"], segs, int(row["frames"]), float(row["fps"]),
                            int(row.get("width") or 0), int(row.get("height") or 0))
            except ValueError as err:
                raise ActionManifestError(f"{p}:{line} ({row.get('file')}): actions {row.get('actions')!r}: {err}") from err
            for s in clip.all_segments():
                if s.end >= clip.frames:
                    raise ActionManifestError(f"{p}:{line} ({clip.file}): {s.action}@{s.start}-{s.end} ends past "
                                              f"the clip's {clip.frames} frames")
            clips.append(clip)
    return clips
