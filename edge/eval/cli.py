"""``edge eval``: ISO/IEC 30107-3 figures of the pipeline on a labelled dataset.

Wired into ``edge/cli.py`` by the lead through :func:`register`. Output:
a table on stdout (or JSON with ``--json``), progress on stderr. With
``--calibrate`` and no ``--out``, stdout carries only the TOML snippet (the
table goes to stderr) so ``edge eval ... --calibrate 0.05 > cal.toml`` works.
Nothing is ever written inside the dataset.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable

from edge.errors import ConfigError, EdgeError
from edge.eval import metrics as m
from edge.eval.actions import ActionManifestError
from edge.eval.dataset import DatasetError, load_dataset
from edge.eval.fusion import FusionInputError, compare_fusion, sessions_from_scored
from edge.eval.fusion import render as render_fusion
from edge.eval.report import (
    PlotUnavailable,
    Progress,
    Scorer,
    build_report,
    calibration_toml,
    plot,
    score_dataset,
)

log = logging.getLogger(__name__)

#: builds a scorer from a loaded config (``edge.pipeline.make_scorer``)
ScorerFactory = Callable[[object], Scorer]


def _rate(text: str) -> float:
    """A rate as a fraction (0.05) or a percentage (5%)."""
    t = text.strip()
    try:
        v = float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a rate such as 0.05 or 5%, got {text!r}") from err
    if not 0.0 <= v < 1.0:
        raise argparse.ArgumentTypeError(f"a BPCER target must be within [0, 1), got {text!r}")
    return v


def _threshold(text: str) -> float:
    try:
        v = float(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1], got {text!r}") from err
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"threshold must be within [0, 1], got {text!r}")
    return v


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="measure APCER/BPCER/ACER/EER/AUC on a labelled dataset (ISO/IEC 30107-3)",
        description=(
            "Score every item of DATASET with the configured pipeline and report ISO/IEC 30107-3 figures. "
            "A presentation is accepted as bona fide when score >= threshold; a live item without a face "
            "counts as a rejected bona fide, an attack without a face as a rejected attack. "
            "Items: images (one-frame sessions), videos or frame folders (full sessions)."
        ),
    )
    p.add_argument("dataset", help="dataset root (paths in the manifest are relative to it)")
    p.add_argument("--manifest", metavar="CSV",
                   help="manifest with columns file,label[,attack,repo]; default DATASET/manifest.csv if present, "
                        "else folders named live/ and spoof/")
    p.add_argument("--config", metavar="FILE", help="edge TOML config (models, quality, decision.threshold)")
    p.add_argument("--threshold", type=_threshold, metavar="T", help="threshold to report at (default: decision.threshold)")
    p.add_argument("--calibrate", type=_rate, metavar="BPCER",
                   help="calibrate the threshold for this BPCER (0.05 or 5%%) and write a [decision] TOML snippet")
    p.add_argument("--out", metavar="FILE", help="write the --calibrate snippet here instead of stdout")
    p.add_argument("--json", action="store_true", help="machine-readable JSON on stdout")
    p.add_argument("--plot", metavar="PNG", help="draw the DET curve and score histograms (needs matplotlib)")
    p.add_argument("--fusion", action="store_true",
                   help="also compare the first frame, the mean of all frames and the configured decision "
                        "logic at the --calibrate BPCER (default 5%%): in sample, held out (random halves by "
                        "group), leave-one-source-out, and a bootstrap of the gain; scores every frame of a clip")
    p.add_argument("--match", action="store_true",
                   help="1:1 instead of liveness: descriptors of the live images, genuine/impostor distances, "
                        "FMR/FNMR at thresholds and the threshold for a target FMR (docs/MATCH.md)")
    p.add_argument("--subject-regex", default=None, metavar="RE",
                   help="with --match: regex whose first group is the subject id in a file name "
                        "(default: leading digits before '_', as in NUAA); a manifest 'subject' column wins")
    g = p.add_argument_group(
        "active liveness", "with --active or --depth3d, DATASET is the shared data folder holding action-dev/ "
        "and fas-dev/ (docs/ACTIVE-EVAL.md)")
    g.add_argument("--active", action="store_true",
                   help="the challenge engine on real clips: action detection, replayed recordings (APCER), "
                        "time to verdict (simulated)")
    g.add_argument("--depth3d", action="store_true",
                   help="the 3-D check: real head turns against photos rendered as held and turned")
    g.add_argument("--draws", type=int, metavar="N",
                   help="--active: random challenges per recording (default 200); --depth3d: renders per "
                        "photo and kind (default 2)")
    g.add_argument("--k", type=int, metavar="K", help="--active: actions per challenge (default challenge.k)")
    g.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    g.add_argument("--sessions", metavar="DIR",
                   help="--active: also replay the simulated sessions written by scripts/sim_sessions.py")
    g.add_argument("--sim-draws", type=int, default=20, metavar="N",
                   help="--active: random challenges per simulated session (default 20; there are hundreds)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(func=handler)


def _active_handler(args: argparse.Namespace, out, err) -> int:
    """``--active`` / ``--depth3d``: the active-liveness studies (edge.eval.active, edge.eval.depth3d)."""
    from edge.assemble import challenge_config
    from edge.eval.meshes import default_measurer

    shared = Path(args.dataset)
    if not shared.is_dir():
        raise DatasetError(f"{shared} is not a folder: --active/--depth3d want the shared data folder "
                           "holding action-dev/ and fas-dev/")
    cfg = _load_config(args.config)
    progress = None if args.quiet else (lambda msg: print(msg, file=err, flush=True))
    measure = default_measurer(cfg)
    try:
        if args.depth3d:
            from edge.eval import depth3d

            draws = args.draws if args.draws is not None else 2
            if draws < 1:
                raise DatasetError(f"--draws must be at least 1, got {draws}")
            rep = depth3d.run(shared, measure, draws=draws, seed=args.seed,
                              threshold=cfg.challenge.depth_threshold, progress=progress)
            out.write(rep.render())
        if args.active:
            from edge.eval import active

            ch = challenge_config(cfg)
            k = args.k if args.k is not None else ch.k
            if not 1 <= k <= min(4, len(ch.actions)):
                raise DatasetError(f"--k must be within [1, {min(4, len(ch.actions))}], got {k}")
            draws = args.draws if args.draws is not None else 200
            if draws < 1:
                raise DatasetError(f"--draws must be at least 1, got {draws}")
            text = active.run(shared, measure, draws=draws, k=k, seed=args.seed,
                              sessions=Path(args.sessions) if args.sessions else None, config=ch,
                              sim_draws=args.sim_draws,
                              depth_threshold=cfg.challenge.depth_threshold, progress=progress)
            if args.depth3d:
                out.write("\n")
            out.write(text)
    finally:
        measure.close()
    return 0


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def _require_matplotlib() -> None:
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        raise PlotUnavailable(
            "--plot needs matplotlib, which is not installed; install the extra: pip install 'edge[plot]'"
        )


def _default_factory(config, *, score_to_end: bool = False) -> Scorer:
    try:
        from edge.pipeline import make_scorer
    except ImportError as err:
        raise EdgeError(
            "the scoring pipeline (edge.pipeline.make_scorer) is missing from this build, so items cannot be scored"
        ) from err
    return make_scorer(config, score_to_end=score_to_end)


def _decision_config(cfg):
    """The configured decision rule (replayed by the fusion comparison), if the config has one."""
    if getattr(cfg, "decision", None) is None:
        return None
    from edge.assemble import decision_config

    return decision_config(cfg)


def _load_config(path: str | None):
    from edge import config as cfgmod

    return cfgmod.load(path)


def handler(args: argparse.Namespace, *, scorer_factory: ScorerFactory | None = None,
            stdout=None, stderr=None) -> int:
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    try:
        if getattr(args, "active", False) or getattr(args, "depth3d", False):
            if getattr(args, "match", False) or getattr(args, "fusion", False):
                raise DatasetError("--active/--depth3d study the challenge; run --match or --fusion separately")
            return _active_handler(args, out, err)
        for opt in ("out", "plot"):
            target = getattr(args, opt, None)
            if target and _inside(Path(target), Path(args.dataset)):
                raise DatasetError(f"--{opt} {target} lies inside the dataset {args.dataset}; write it elsewhere")
        if args.plot:
            _require_matplotlib()  # fail before a long scoring run, not after it
        if getattr(args, "match", False):
            from edge.match.evaluate import run_eval

            return run_eval(args, out, err)
        dataset = load_dataset(args.dataset, args.manifest)
        cfg = _load_config(args.config)
        threshold, thr_from = args.threshold, "--threshold"
        if threshold is None:
            decision = getattr(cfg, "decision", None)
            threshold = getattr(decision, "threshold", None)
            thr_from = f"decision.threshold{' in ' + args.config if args.config else ' default'}"
        want_fusion = bool(getattr(args, "fusion", False))
        if scorer_factory is not None:
            scorer = scorer_factory(cfg)
        else:
            # The fusion comparison needs every frame of a clip scored, not only those up to the verdict.
            scorer = _default_factory(cfg, score_to_end=want_fusion)
        progress = None if args.quiet else Progress(len(dataset.items), err)
        try:
            scored = score_dataset(dataset, scorer, progress)
        finally:
            close = getattr(scorer, "close", None)
            if callable(close):
                close()
        rep = build_report(dataset, scored, threshold=threshold, threshold_from=thr_from,
                           calibrate_bpcer=args.calibrate)
        snippet = calibration_toml(rep) if args.calibrate is not None else None
        fusion = None
        if want_fusion:
            fusion = compare_fusion(sessions_from_scored(scored),
                                    target_bpcer=args.calibrate if args.calibrate is not None else 0.05,
                                    decision=_decision_config(cfg))
        if args.plot:
            plot(rep, args.plot)
            print(f"plot written to {args.plot}", file=err)
        if snippet is not None and args.out:
            Path(args.out).write_text(snippet, encoding="utf-8")
            print(f"calibration written to {args.out}", file=err)
        if args.json:
            d = rep.to_dict()
            if snippet is not None:
                d["calibration_toml"] = snippet
            if fusion is not None:
                d["fusion"] = fusion.to_dict()
            json.dump(d, out, indent=2)
            out.write("\n")
        else:
            text = rep.render() + ("\n" + render_fusion(fusion) if fusion is not None else "")
            if snippet is not None and not args.out:
                err.write(text)
                out.write(snippet)
            else:
                out.write(text)
        return 0
    except PlotUnavailable as e:
        print(f"edge eval: {e}", file=err)
        return 3
    except (DatasetError, ConfigError, ActionManifestError, m.EmptyClassError, m.UnreachableTargetError,
            FusionInputError) as e:
        print(f"edge eval: {e}", file=err)
        return 2
    except EdgeError as e:
        print(f"edge eval: {e}", file=err)
        return 1


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry (``python -m edge.eval.cli``) until the lead wires ``edge eval``."""
    parser = argparse.ArgumentParser(prog="edge")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
