"""``edge enroll`` and ``edge match``: make and test 1:1 templates from the command line.

``edge enroll`` runs a liveness session (an image, a video or a camera) with the descriptor on, and
prints the template (base64, or hex with ``--hex``) on stdout only when the session PASSes; nothing is
written anywhere. The template is biometric data: store it on the card or in the controller, never on
the device. ``edge match IMAGE --template T`` runs the same session against a template and prints the
verdict (and, for testing, the distance).
"""

from __future__ import annotations

import json
import sys


def register(subparsers) -> None:
    p = subparsers.add_parser("enroll", help="liveness check, then print a 1:1 template on stdout (nothing written)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("input", nargs="?", metavar="IMAGE", help="image or video of the person (or a camera spec)")
    src.add_argument("--source", metavar="CAMERA", help="camera spec, e.g. v4l2:///dev/video0 or picamera2://0")
    p.add_argument("--config", help="TOML config (models, quality, decision, [match])")
    p.add_argument("--hex", action="store_true", help="print hex instead of base64")
    p.set_defaults(func=cmd_enroll)

    p = subparsers.add_parser("match", help="liveness + 1:1 comparison of IMAGE against a template (testing)")
    p.add_argument("input", metavar="IMAGE", help="image or video (or a camera spec)")
    p.add_argument("--template", required=True, metavar="T", help="template as printed by `edge enroll` (base64 or hex)")
    p.add_argument("--config", help="TOML config")
    p.set_defaults(func=cmd_match)


def _spec(text: str) -> str:
    from edge.cli import expand_inputs
    from edge.errors import ConfigError

    specs = expand_inputs([text])
    if len(specs) != 1:
        raise ConfigError("IMAGE", text, "one image, video or camera spec (not a folder of several)")
    return specs[0][1]


def _pipeline(config_path, spec: str):
    from edge import config as config_mod
    from edge.assemble import build_pipeline

    cfg = config_mod.load(config_path, overrides={"match": {"enabled": True}})
    # A still image cannot answer a challenge: its liveness check is the passive models'. A clip
    # or a camera runs the configured mode (by default the person answers the challenge).
    return build_pipeline(cfg, mode="passive" if spec.startswith("image://") else None)


def cmd_enroll(args) -> int:
    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera
    from edge.match import template as tpl

    spec = args.source or _spec(args.input)
    with _pipeline(args.config, spec) as pipeline:
        got: list[bytes] = []
        pipeline.match.start_enrol(got.append)
        out = pipeline.run_session(open_camera(spec), SessionRequest(session_id=1, origin="enroll"))
    v = out.verdict
    if not v.passed or not got:
        print(f"edge enroll: no template: the session ended {v.kind.value} ({v.reason.name}); "
              "enrolment needs a live, well-lit, frontal face", file=sys.stderr)
        return 1
    raw = got[-1]
    print(raw.hex() if args.hex else tpl.to_text(raw), flush=True)
    return 0


def cmd_match(args) -> int:
    from edge.bridge.base import SessionRequest
    from edge.camera import open_camera
    from edge.match import template as tpl

    raw = tpl.from_text(args.template)
    tpl.decode(raw)  # refuse a bad template here with its reason, before any model loads
    spec = _spec(args.input)
    with _pipeline(args.config, spec) as pipeline:
        results = []
        pipeline.match.observer = results.append
        out = pipeline.run_session(open_camera(spec), SessionRequest(session_id=1, origin="match", template=raw))
    row = out.verdict.to_dict()
    row.pop("session_id", None)
    if results and results[-1].matched is not None:
        row["distance"] = round(results[-1].distance, 4)  # a testing tool: never on the wire or in a log
        row["threshold"] = pipeline.match.config.threshold
    print(json.dumps(row), flush=True)
    return 0 if out.verdict.passed else 1
