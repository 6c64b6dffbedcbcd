"""The action-dev manifest grammar: segments, ranges, angles, notes and nested segments."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.eval.actions import ActionManifestError, Segment, load_action_manifest, parse_actions

SHARED = Path(__file__).resolve().parents[2] / "shared"


def test_simple_segments_with_angles():
    segs = parse_actions("turn_right@4-16(~26);turn_left@25-46(~32);hold@105-140")
    assert [(s.action, s.start, s.end, s.angle_deg) for s in segs] == [
        ("turn_right", 4, 16, 26.0), ("turn_left", 25, 46, 32.0), ("hold", 105, 140, None)]
    assert segs[0].frames == 13


def test_nested_segments_and_free_notes():
    text = ("hold@0-50;nod@110-180(look_down@119-130,look_up@140-152,look_down@161-175);"
            "head_circle@497-674(turn_left@497-535,look_up@506-568);blink@715-727(slow)")
    segs = parse_actions(text)
    assert [s.action for s in segs] == ["hold", "nod", "head_circle", "blink"]
    nod = segs[1]
    assert [(c.action, c.start, c.end) for c in nod.children] == [
        ("look_down", 119, 130), ("look_up", 140, 152), ("look_down", 161, 175)]
    assert [s.action for s in nod.walk()] == ["nod", "look_down", "look_up", "look_down"]
    assert segs[3].notes == ("slow",)


def test_angle_forms():
    a, b, c, d = parse_actions("turn_left@24-44(~15-25);tilt_right@30-105(roll~+35);"
                               "tilt_left@115-185(roll~-40);turn_left@100-147(~52,near profile)")
    assert a.angle_deg == 20.0 and a.angle_axis == ""
    assert b.angle_deg == 35.0 and b.angle_axis == "roll"
    assert c.angle_deg == -40.0
    assert d.angle_deg == 52.0 and d.notes == ("near profile",)


def test_notes_with_commas_and_digits_stay_notes():
    (s,) = parse_actions("wink@233-264(image-left eye,other eye squints 244-250)")
    assert s.notes == ("image-left eye", "other eye squints 244-250") and s.children == ()
    (y,) = parse_actions("yawn@0-42(head tilted back, clip starts mid-yawn)")
    assert y.notes == ("head tilted back", "clip starts mid-yawn")


def test_empty_cell_and_stray_separators():
    assert parse_actions("") == ()
    assert [s.action for s in parse_actions("blink@1-2;;blink@5-6;")] == ["blink", "blink"]


@pytest.mark.parametrize("bad, where", [
    ("blink@40", "frame range"),
    ("blink 40-46", "name@first-last"),
    ("blink@46-40", "ends before it starts"),
    ("nod@1-9(look_up@2-3", "not closed"),
    ("nod@1-9)", "unbalanced"),
    ("blink@1-2 extra", "unexpected text"),
    ("nod@1-9(look_up@x-3)", "frame range"),
])
def test_malformed_cells_name_the_problem(bad, where):
    with pytest.raises(ValueError, match=where):
        parse_actions(bad)


def test_manifest_errors_name_file_and_line(tmp_path):
    p = tmp_path / "manifest.csv"
    p.write_text("file,actions,frames,fps\na.mp4,blink@1-2,10,30\nb.mp4,blink@1,10,30\n")
    with pytest.raises(ActionManifestError, match=r"manifest.csv:3 \(b.mp4\)"):
        load_action_manifest(p)
    p.write_text("file,actions,frames,fps\na.mp4,blink@5-12,10,30\n")
    with pytest.raises(ActionManifestError, match="ends past the clip's 10 frames"):
        load_action_manifest(p)
    p.write_text("file,frames\na.mp4,10\n")
    with pytest.raises(ActionManifestError, match="missing column"):
        load_action_manifest(p)
    with pytest.raises(ActionManifestError, match="cannot read"):
        load_action_manifest(tmp_path / "absent.csv")


@pytest.mark.skipif(not (SHARED / "action-dev" / "manifest.csv").is_file(), reason=f"no {SHARED}/action-dev")
def test_the_real_manifest_parses_completely():
    clips = load_action_manifest(SHARED / "action-dev" / "manifest.csv")
    assert len(clips) == 19
    every = [s for c in clips for s in c.all_segments()]
    actions = {s.action for s in every}
    assert {"turn_left", "turn_right", "blink", "look_up", "look_down", "mouth_open", "smile", "hold"} <= actions
    circle = next(s for c in clips for s in c.segments if s.action == "head_circle")
    assert len(circle.children) == 5
    assert all(isinstance(s, Segment) and 0 <= s.start <= s.end for s in every)
