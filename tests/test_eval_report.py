"""edge eval: scoring loop, report, CLI handler and the fusion comparison, with fake scorers."""

from __future__ import annotations

import argparse
import importlib.util
import io
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

from edge.eval import cli
from edge.eval import metrics as m
from edge.eval.dataset import load_manifest
from edge.decision import DecisionConfig
from edge.eval.fusion import Session, compare_fusion, first_face, mean_of_faces, sessions_from_scored
from edge.eval.fusion import render as render_fusion
from edge.eval.report import (
    ItemResult,
    Progress,
    ScoringError,
    build_report,
    calibration_toml,
    score_dataset,
    verdict_rates,
)

# file -> (label, attack, repo, score); None = no face
ITEMS = {
    "a/live/1.jpg": ("live", "", "src-a", 0.90),
    "a/live/2.jpg": ("live", "", "src-a", 0.80),
    "a/live/3.jpg": ("live", "", "src-a", 0.40),
    "a/live/4.jpg": ("live", "", "src-a", None),
    "a/spoof/5.jpg": ("spoof", "print", "src-a", 0.10),
    "a/spoof/6.jpg": ("spoof", "print", "src-a", 0.60),
    "b/live/7.jpg": ("live", "", "src-b", 0.95),
    "b/live/8.jpg": ("live", "", "src-b", 0.70),
    "b/spoof/9.jpg": ("spoof", "screen", "src-b", 0.20),
    "b/spoof/10.jpg": ("spoof", "screen", "src-b", None),
}


@pytest.fixture
def dataset_dir(tmp_path):
    root = tmp_path / "ds"
    for rel in ITEMS:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")
    lines = ["file,label,attack,repo"] + [f"{f},{lab},{att},{repo}" for f, (lab, att, repo, _) in ITEMS.items()]
    (root / "manifest.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def fake_scorer(root: Path, verdicts: bool = False):
    def score(path: Path) -> ItemResult:
        s = ITEMS[path.relative_to(root.resolve()).as_posix()][3]
        v = None
        if verdicts:
            v = "NO_FACE" if s is None else ("PASS" if s >= 0.5 else "FAIL")
        return ItemResult(s, v, 1)

    return score


def run(args: list[str], root: Path, **kw) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="edge")
    cli.register(parser.add_subparsers(dest="command"))
    ns = parser.parse_args(["eval", *args])
    out, err = io.StringIO(), io.StringIO()
    factory = kw.pop("factory", lambda cfg: fake_scorer(root, **kw))
    code = ns.func(ns, scorer_factory=factory, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_report_figures(dataset_dir):
    ds = load_manifest(dataset_dir, dataset_dir / "manifest.csv")
    scored = score_dataset(ds, fake_scorer(dataset_dir))
    rep = build_report(ds, scored, threshold=0.5)
    o = rep.overall
    # at 0.5: live 0.4 and the no-face live are rejected -> 2/6; print 0.6 accepted -> 1/2; screen 0/2
    assert o.at_threshold.bpcer == pytest.approx(2 / 6)
    assert o.at_threshold.apcer_per_type == {"print": 0.5, "screen": 0.0}
    assert o.face_not_found.bona_fide == 1 and o.face_not_found.attack == 1
    assert rep.frames == 10
    assert [s.name for s in rep.sources] == ["src-a", "src-b"]
    assert rep.sources[0].metrics.at_threshold.bpcer == pytest.approx(2 / 4)
    # per source at the global calibrated threshold, not re-calibrated
    assert rep.sources[1].metrics.at_calibrated.threshold == o.at_calibrated.threshold
    text = rep.render()
    for needle in ("no usable face (not found, or no frame passed the quality gate): 20.0%", "only 2 presentation(s)", "APCER per attack type", "BPCER @ APCER <= 1%", "APCER @ BPCER <= 10%",
                   "EER", "AUC", "per source", "src-b", "print", "screen"):
        assert needle in text, needle
    d = json.loads(json.dumps(rep.to_dict()))
    assert d["overall"]["at_threshold"]["apcer"] == 0.5
    # aggregate only: no item path appears in the machine output
    assert not any(f in json.dumps(d) for f in ITEMS)


def test_verdict_rates():
    ds_items = [
        ("live", "", "PASS"), ("live", "", "NO_FACE"), ("spoof", "print", "PASS"), ("spoof", "print", "FAIL"),
        ("spoof", "screen", "TIMEOUT"),
    ]
    from edge.eval.dataset import Item
    from edge.eval.report import Scored

    scored = [Scored(Item(Path(f"/x/{i}"), str(i), lab, att, "s", "video"), ItemResult(None, v, 30))
              for i, (lab, att, v) in enumerate(ds_items)]
    v = verdict_rates(scored)
    assert v.bpcer == 0.5 and v.apcer_per_type == {"print": 0.5, "screen": 0.0} and v.apcer == 0.5
    assert v.kinds == {"FAIL": 1, "NO_FACE": 1, "PASS": 2, "TIMEOUT": 1}
    assert verdict_rates(scored[:-1] + [Scored(scored[-1].item, ItemResult(0.3, None, 1))]) is None


def test_cli_table(dataset_dir):
    code, out, err = run([str(dataset_dir), "--threshold", "0.5"], dataset_dir, verdicts=True)
    assert code == 0, err
    assert "configured (--threshold)" in out and "pipeline verdicts" in out and "calibrated (eer)" in out
    assert "scoring 10/10" in err  # progress goes to stderr


def test_cli_uses_config_threshold(dataset_dir, tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text("[decision]\nthreshold = 0.65\n", encoding="utf-8")
    code, out, err = run([str(dataset_dir), "--config", str(cfg), "--json", "--quiet"], dataset_dir)
    assert code == 0, err
    d = json.loads(out)
    assert d["threshold"] == 0.65 and "edge.toml" in d["threshold_from"]
    assert err == ""


def test_cli_calibrate_to_stdout_and_file(dataset_dir, tmp_path):
    code, out, err = run([str(dataset_dir), "--calibrate", "20%", "--quiet"], dataset_dir)
    assert code == 0, err
    snippet = tomllib.loads(out)  # stdout is pure TOML; the table went to stderr
    # BPCER <= 20% of 6 -> at most 1 rejection, and the no-face live is one: largest t rejecting nothing else = 0.4
    assert snippet == {"decision": {"threshold": 0.4}}
    assert "edge eval:" in err
    dest = tmp_path / "cal.toml"
    code, out, err = run([str(dataset_dir), "--calibrate", "0.2", "--out", str(dest), "--quiet"], dataset_dir)
    assert code == 0 and tomllib.loads(dest.read_text())["decision"]["threshold"] == 0.4
    assert "edge eval:" in out
    code, out, _ = run([str(dataset_dir), "--calibrate", "0.2", "--json", "--quiet"], dataset_dir)
    assert "threshold = 0.4" in json.loads(out)["calibration_toml"]


def test_cli_calibrate_unreachable(dataset_dir):
    code, out, err = run([str(dataset_dir), "--calibrate", "0.1", "--quiet"], dataset_dir)
    assert code == 2 and "unreachable" in err and out == ""


def test_cli_never_writes_into_the_dataset(dataset_dir):
    for opt in ("--out", "--plot"):
        code, _, err = run([str(dataset_dir), "--calibrate", "0.2", opt, str(dataset_dir / "x")], dataset_dir)
        assert code == 2 and "inside the dataset" in err
        assert not (dataset_dir / "x").exists()


def test_cli_dataset_errors(tmp_path):
    (tmp_path / "live").mkdir()
    code, _, err = run([str(tmp_path)], tmp_path)
    assert code == 2 and "edge eval:" in err and "holds no images" in err
    code, _, err = run([str(tmp_path), "--manifest", str(tmp_path / "nope.csv")], tmp_path)
    assert code == 2 and "cannot read manifest" in err


def test_cli_bad_arguments(dataset_dir, capsys):
    with pytest.raises(SystemExit):
        run([str(dataset_dir), "--calibrate", "1.5"], dataset_dir)
    assert "BPCER target" in capsys.readouterr().err


def test_cli_plot(dataset_dir, tmp_path):
    png = tmp_path / "det.png"
    code, _, err = run([str(dataset_dir), "--plot", str(png), "--quiet"], dataset_dir)
    if importlib.util.find_spec("matplotlib") is None:
        assert code == 3 and "pip install 'edge[plot]'" in err and not png.exists()
    else:
        assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"


def test_scorer_failures_name_the_item(dataset_dir):
    def broken(path):
        raise OSError("unreadable")

    code, _, err = run([str(dataset_dir), "--quiet"], dataset_dir, factory=lambda cfg: broken)
    assert code == 1 and "a/live/1.jpg" in err and "unreadable" in err
    ds = load_manifest(dataset_dir, dataset_dir / "manifest.csv")
    with pytest.raises(ScoringError, match="non-finite"):
        score_dataset(ds, lambda p: ItemResult(float("nan"), None, 1))


def test_scorer_is_closed(dataset_dir):
    closed = []

    class Closing:
        def __call__(self, path):
            return fake_scorer(dataset_dir)(path)

        def close(self):
            closed.append(True)

    assert run([str(dataset_dir), "--quiet"], dataset_dir, factory=lambda cfg: Closing())[0] == 0
    assert closed == [True]


def test_calibration_snippet_keeps_exact_threshold(dataset_dir):
    ds = load_manifest(dataset_dir, dataset_dir / "manifest.csv")
    rep = build_report(ds, score_dataset(ds, fake_scorer(dataset_dir)), threshold=None)
    t = tomllib.loads(calibration_toml(rep))["decision"]["threshold"]
    assert t == rep.overall.at_calibrated.threshold and rep.overall.at_threshold is None
    assert "configured (" not in rep.render()


def test_progress_without_a_terminal():
    buf = io.StringIO()
    p = Progress(20, buf)
    for i in range(1, 21):
        p(i)
    lines = buf.getvalue().splitlines()
    assert lines[-1].startswith("scoring 20/20") and len(lines) <= 11


# ---------------------------------------------------------------- fusion


def test_fusion_rules():
    assert first_face([None, 0.3, 0.9]) == 0.3 and first_face([None]) is None
    assert mean_of_faces([None, 0.2, 0.4]) == pytest.approx(0.3) and mean_of_faces([]) is None


def test_fusion_beats_single_frame_on_noisy_frames():
    rng = np.random.default_rng(7)
    sessions = []
    for src in ("s1", "s2", "s3"):
        for k in range(40):
            sessions.append(Session(True, "", src, tuple(np.clip(0.65 + 0.2 * rng.standard_normal(8), 0, 1)), f"L{src}{k}"))
            sessions.append(Session(False, "print", src, tuple(np.clip(0.35 + 0.2 * rng.standard_normal(8), 0, 1)),
                                    f"A{src}{k}"))
    cmp_ = compare_fusion(sessions, target_bpcer=0.05, decision=DecisionConfig(), bootstrap=300, splits=50)
    single, fused, decision = cmp_.rules["single_frame"], cmp_.rules["fused_mean"], cmp_.rules["decision"]
    assert fused.auc > single.auc and fused.eer < single.eer and decision.auc is None
    assert fused.apcer < single.apcer and fused.bpcer <= 0.05
    assert decision.apcer < single.apcer and decision.bpcer <= 0.05
    assert cmp_.folds == ("s1", "s2", "s3") and fused.loso_apcer < single.loso_apcer
    assert fused.held_out_apcer < single.held_out_apcer and decision.held_out_apcer < single.held_out_apcer
    # Frame noise this large: the gain is far outside the bootstrap's noise.
    assert fused.apcer_delta.high < 0 and fused.eer_delta.high < 0 and fused.eer_delta.p < 0.01
    assert cmp_.groups == 240 and cmp_.sessions == 240
    json.dumps(cmp_.to_dict())
    text = render_fusion(cmp_)
    assert "decision" in text and "bootstrap over groups" in text


def test_fusion_groups_are_resampled_together():
    # Ten sessions per group: the bootstrap draws groups, so its interval is as wide as 2 groups allow.
    sessions = [Session(True, "", "s", (0.9,), "g1")] * 10 + [Session(False, "p", "s", (0.1,), "g2")] * 10
    c = compare_fusion(sessions, bootstrap=50, splits=10)
    assert c.groups == 2 and c.sessions == 20


def test_decision_replay_matches_the_decision_at_every_threshold():
    from edge.decision import Decision
    from edge.eval.fusion import decision_accept

    rng = np.random.default_rng(3)
    cfg = DecisionConfig(window=5, pass_votes=3, fail_votes=3)
    for _ in range(30):
        frames = tuple(None if rng.random() < 0.1 else float(x) for x in rng.random(rng.integers(1, 9)))
        grid = np.linspace(0.0, 1.0, 101)
        got = decision_accept(frames, grid, cfg)
        for t, g in zip(grid, got):
            d = Decision(DecisionConfig(threshold=float(t), window=5, pass_votes=3, fail_votes=3))
            d.start(0.0)
            v = None
            for j, s in enumerate(frames):
                v = d.on_frame(j * 33.3, faces=0 if s is None else 1, score=s)
                if v is not None:
                    break
            v = v or d.on_end(1000.0)
            assert g == (v.kind.value == "PASS"), (frames, t)


def test_fusion_leave_one_source_out_by_hand():
    # source x: live 0.9, attack 0.2; source y: live 0.5, attack 0.6 (frames: single = first, fused = mean)
    sessions = [
        Session(True, "", "x", (0.9, 0.9)),
        Session(False, "print", "x", (0.2, 0.2)),
        Session(True, "", "y", (0.5, 0.5)),
        Session(False, "print", "y", (0.6, 0.6)),
    ]
    c = compare_fusion(sessions, target_bpcer=0.0, bootstrap=20, splits=4)
    r = c.rules["fused_mean"]
    # hold out x: trained on y, BPCER 0 -> t = 0.5; x: live 0.9 accepted, attack 0.2 rejected
    # hold out y: trained on x -> t = 0.9; y: live 0.5 rejected, attack 0.6 rejected
    assert (r.loso_apcer, r.loso_bpcer) == (0.0, 0.5)
    assert c.skipped == {}


def test_fusion_skips_folds_without_both_classes():
    sessions = [Session(True, "", "x", (0.9,)), Session(False, "p", "y", (0.1,)), Session(True, "", "y", (0.8,))]
    c = compare_fusion(sessions)
    assert c.folds == ("x",) and "y" in c.skipped


def test_sessions_from_scored(dataset_dir):
    ds = load_manifest(dataset_dir, dataset_dir / "manifest.csv")
    ss = sessions_from_scored(score_dataset(ds, fake_scorer(dataset_dir)))
    assert len(ss) == len(ITEMS) and ss[0].frame_scores == (0.9,) and ss[3].frame_scores == (None,)
    assert compare_fusion(ss).rules["single_frame"].auc == m.auc(
        m.Scores.from_lists([s.frame_scores[0] for s in ss if s.bona_fide],
                            [s.frame_scores[0] for s in ss if not s.bona_fide])
    )


def test_cli_fusion(dataset_dir):
    frames = {f: (None, s, s) if s is not None else (None,) for f, (_, _, _, s) in ITEMS.items()}

    def factory(cfg):
        def score(path):
            rel = path.relative_to(dataset_dir.resolve()).as_posix()
            fs = frames[rel]
            return ItemResult(mean_of_faces(fs), None, len(fs), fs)

        return score

    code, out, err = run([str(dataset_dir), "--fusion", "--quiet"], dataset_dir, factory=factory)
    assert code == 0, err
    assert "fusion at BPCER <= 5%" in out and "single_frame" in out and "fused_mean" in out
    code, out, err = run([str(dataset_dir), "--fusion", "--json", "--quiet", "--calibrate", "0.2"], dataset_dir,
                         factory=factory)
    d = json.loads(out)
    assert d["fusion"]["target_bpcer"] == 0.2
    assert set(d["fusion"]["rules"]) == {"single_frame", "fused_mean", "decision"}


def test_fusion_needs_frame_scores_from_multi_frame_items(dataset_dir):
    code, out, err = run([str(dataset_dir), "--fusion", "--quiet"], dataset_dir,
                         factory=lambda cfg: (lambda p: ItemResult(0.7, "PASS", 12)))
    assert code == 2 and "per-frame scores" in err
