"""The ``edge`` command line.

Exit codes (docs/EXIT_CODES.md), the same for every command:
0  success; for ``edge check`` and ``edge run``: every input or session got a verdict
   (PASS, FAIL, NO_FACE or TIMEOUT: a FAIL is an answer, not an error)
1  some input or session ended in FAULT (unreadable, undecodable, camera lost, model error),
   or a check failed
2  bad usage or configuration, reported before anything runs (one line naming the key or file)
3  a model or device could not be used at start-up (missing or tampered model, serial port)
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from pathlib import Path

from edge import __version__
from edge.camera.spec import IMAGE_EXTS, VIDEO_EXTS
from edge.errors import CameraError, ConfigError, EdgeError, ModelError

log = logging.getLogger("edge.cli")

EXIT_OK, EXIT_FAULT, EXIT_USAGE, EXIT_DEVICE = 0, 1, 2, 3

# Subcommands contributed by other modules: (module, description). A module that
# cannot be imported (an optional part missing) only loses its own command.
PLUGINS = (
    "edge.models.cli",
    "edge.camera.cli",
    "edge.service.doctor",
    "edge.eval.cli",
    "edge.bench",
    "edge.demo",
    "edge.bridge.cli",
    "edge.match.cli",
)


class _Progress:
    """A one-line progress bar on stderr, only when stderr is a terminal."""

    def __init__(self, total: int, label: str, enabled: bool | None = None):
        self.total = total
        self.label = label
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.done = 0

    def step(self) -> None:
        self.done += 1
        if self.enabled and self.total > 1:
            width = 30
            filled = int(width * self.done / self.total)
            sys.stderr.write(f"\r{self.label} [{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
            if self.done == self.total:
                sys.stderr.write("\n")
            sys.stderr.flush()


def _setup_logging(level: str, quiet: bool = False) -> None:
    logging.basicConfig(
        level=logging.WARNING if quiet else getattr(logging, level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def expand_inputs(paths: list[str]) -> list[tuple[str, str]]:
    """Map CLI inputs to (label, camera spec): files by extension, folders recursively
    (one entry per image or video inside), and explicit specs (scheme://) as given."""
    out: list[tuple[str, str]] = []
    for raw in paths:
        if "://" in raw:
            out.append((raw, raw))
            continue
        p = Path(raw)
        try:
            is_dir, is_file = p.is_dir(), p.is_file()
        except OSError as err:  # ENAMETOOLONG, EACCES on a parent folder...
            raise ConfigError("PATH", _short(raw), f"a readable file or folder ({err.strerror})") from err
        if is_dir:
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in IMAGE_EXTS | VIDEO_EXTS)
            if not found:
                raise ConfigError("PATH", raw, "a folder containing images or videos")
            out.extend(expand_inputs([str(f) for f in found]))
        elif is_file:
            ext = p.suffix.lower()
            if ext in IMAGE_EXTS:
                out.append((raw, f"image://{p}"))
            elif ext in VIDEO_EXTS:
                out.append((raw, f"video://{p}"))
            else:
                raise ConfigError("PATH", raw, "an image (" + ", ".join(sorted(IMAGE_EXTS)) + ") or a video")
        else:
            raise ConfigError("PATH", _short(raw), "an existing file or folder")
    return out


def _short(text: str, keep: int = 60) -> str:
    return text if len(text) <= keep else f"{text[:keep]}...({len(text)} characters)"


# -- commands ------------------------------------------------------------------------------
def cmd_check(args) -> int:
    from edge import config as config_mod
    from edge.assemble import build_pipeline
    from edge.camera import open_camera

    from edge.bridge.base import SessionRequest

    cfg = config_mod.load(args.config, overrides=_mode_overrides(args))
    order = _challenge_order(args, cfg)
    inputs = expand_inputs(args.paths)
    results = []
    progress = _Progress(len(inputs), "checking", enabled=None if not args.no_progress else False)
    with build_pipeline(cfg) as pipeline:
        for i, (label, spec) in enumerate(inputs, 1):
            camera = open_camera(spec)
            outcome = pipeline.run_session(camera, SessionRequest(session_id=i, challenge=order), keep_scores=True)
            row = {"input": label, **outcome.verdict.to_dict(), "score": None if outcome.score is None else round(outcome.score, 6)}
            row.pop("session_id", None)
            results.append(row)
            if args.json:
                print(json.dumps(row), flush=True)
            progress.step()
    if not args.json:
        _print_table(results)
    return EXIT_FAULT if any(r["verdict"] == "FAULT" for r in results) else EXIT_OK


def _mode_overrides(args) -> dict:
    return {"liveness": {"mode": args.mode}} if getattr(args, "mode", None) else {}


def _challenge_order(args, cfg, *, service: bool = False) -> tuple[str, ...]:
    """``--challenge blink,turn_left``: a fixed order for offline files and demos. A door draws
    its order per session (from the controller's nonce): a known order could be pre-recorded."""
    from edge.challenge import parse_actions

    text = getattr(args, "challenge", None)
    if not text:
        return ()
    if service:
        raise ConfigError("--challenge", text, "no fixed challenge in service mode (each session draws its own order)")
    if cfg.trigger.kind in ("serial", "osdp"):
        raise ConfigError("--challenge", text, f"no fixed challenge with a controller (trigger.kind = '{cfg.trigger.kind}' derives the order from its nonce)")
    if cfg.liveness.mode == "passive":
        raise ConfigError("--challenge", text, "liveness.mode 'active' or 'step_up' (or --mode active)")
    try:
        return parse_actions(text, k_max=4)
    except ValueError as err:
        raise ConfigError("--challenge", text, str(err)) from err


def _print_table(rows: list[dict]) -> None:
    if not rows:
        return
    width = min(max(len(r["input"]) for r in rows), 70)
    print(f"{'input':<{width}}  {'verdict':<8} {'reason':<17} {'score':>6} {'frames':>6} {'ms':>6}")
    for r in rows:
        name = r["input"] if len(r["input"]) <= width else "..." + r["input"][-(width - 3):]
        score = "" if r["score"] is None else f"{r['score']:.3f}"
        print(f"{name:<{width}}  {r['verdict']:<8} {r['reason']:<17} {score:>6} {r['frames_used']:>6} {r['elapsed_ms']:>6}")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    print("total: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))


def cmd_run(args) -> int:
    from edge import config as config_mod
    from edge.assemble import build_runtime

    overrides = {}
    if args.source:
        overrides.setdefault("camera", {})["source"] = args.source
    if args.sessions is not None:
        overrides.setdefault("trigger", {})["max_sessions"] = args.sessions
    overrides.update(_mode_overrides(args))
    cfg = config_mod.load(args.config, overrides=overrides)
    order = _challenge_order(args, cfg, service=args.service)
    _setup_logging(cfg.logging.level, args.quiet)
    from edge.service.signals import ShutdownSignals

    handle = None
    # Signals first: a SIGTERM during model loading must still stop us promptly.
    with ShutdownSignals(current=lambda: handle.current if handle is not None else None) as signals:
        handle = build_runtime(cfg, service=args.service, shutdown=signals.event)
        handle.runtime.pipeline.fixed_order = order
        with handle:
            rc = handle.run()
    if rc == 0 and not args.service and getattr(handle.runtime, "faults", 0):
        # A finite run (scripts, --sessions N) reports FAULTed sessions; a service's exit status
        # describes the service itself (a clean stop is 0), its verdicts go to the controller.
        return EXIT_FAULT
    return rc


def cmd_config(args) -> int:
    from edge import config as config_mod

    if args.defaults:
        sys.stdout.write(config_mod.defaults_toml())
        return 0
    cfg = config_mod.load(args.check)
    print(f"{args.check or '(defaults)'}: ok")
    if args.json:
        print(json.dumps(cfg.to_dict(), indent=2))
    return 0


def _liveness_args(p) -> None:
    p.add_argument("--mode", choices=("passive", "active", "step_up"), help="override liveness.mode")
    p.add_argument(
        "--challenge", metavar="ACTIONS",
        help="a fixed challenge order, e.g. blink,turn_left (offline files and demos; refused in service mode "
        "and with a controller). Actions: blink, turn_left, turn_right, look_up, open_mouth, smile "
        "(left/right: the person's own)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge",
        description="On-device face liveness: camera -> face -> live or attack -> door controller.",
    )
    parser.add_argument("--version", action="version", version=f"edge {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("check", help="one verdict per image, video or folder of them")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image, video, folder, or camera spec (video://..., images://DIR)")
    p.add_argument("--config", help="TOML config (default: built-in defaults)")
    p.add_argument("--json", action="store_true", help="one JSON object per input on stdout")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    _liveness_args(p)
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("run", help="the main loop: wait for a trigger, run a session, report the verdict")
    p.add_argument("--config", help="TOML config (default: built-in defaults, the bundled demo source)")
    p.add_argument("--source", help="override camera.source (e.g. video://clip.mp4, v4l2:///dev/video0)")
    p.add_argument("--sessions", type=int, help="override trigger.max_sessions (with trigger.kind = 'always')")
    p.add_argument("--service", action="store_true", help="service mode: privacy guard, no core dumps, mlock, sd_notify")
    p.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only on stderr")
    _liveness_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("config", help="print the default config, or validate a config file")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--defaults", action="store_true", help="print every key with its default as TOML")
    g.add_argument("--check", metavar="FILE", help="validate FILE (exit 2 with the key and the fix if bad)")
    p.add_argument("--json", action="store_true", help="with --check: print the resolved config as JSON")
    p.set_defaults(func=cmd_config)

    for name in PLUGINS:
        try:
            mod = importlib.import_module(name)
        except ImportError as err:
            log.debug("command module %s unavailable: %s", name, err)
            continue
        register = getattr(mod, "register", None)
        if register is not None:
            register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verbose:
        logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)
    elif args.command != "run":
        _setup_logging("WARNING")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"edge: configuration error: {err}", file=sys.stderr)
        return 2
    except (ModelError, CameraError) as err:
        print(f"edge: {err}", file=sys.stderr)
        return 3
    except EdgeError as err:
        print(f"edge: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # stdout closed early (e.g. piped into head): not an error of ours.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except RecursionError:
        print("edge: input nested too deeply to process (RecursionError); rerun with -v for details", file=sys.stderr)
        return EXIT_FAULT
    except OSError as err:  # a last resort: the known cases above name their key or file
        if args.verbose:
            raise
        name = f": {_short(str(err.filename))}" if err.filename else ""
        print(f"edge: {err.strerror or type(err).__name__}{name}; rerun with -v for details", file=sys.stderr)
        return EXIT_DEVICE


if __name__ == "__main__":
    sys.exit(main())
