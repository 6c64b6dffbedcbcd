"""Runtime configuration: TOML, validated in full before any device is opened.

Every key is declared once in :data:`SCHEMA` with its type, default, accepted
range and a human description of the accepted form. Unknown sections or keys,
wrong types and out-of-range values raise :class:`~edge.errors.ConfigError`
naming the dotted key, the bad value and what is expected. ``edge config
--defaults`` prints the whole schema as a commented TOML file.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from edge.errors import ConfigError


@dataclass(frozen=True)
class Key:
    type: type | tuple[type, ...]
    default: Any
    doc: str
    check: Callable[[Any], bool] | None = None
    expected: str | None = None  # description of the accepted form when check fails
    choices: tuple | None = None


def _rng(lo=None, hi=None, *, lo_open=False):
    def check(v):
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return hi is None or v <= hi

    return check


def _rng_text(kind, lo=None, hi=None, lo_open=False):
    if lo is not None and hi is not None:
        return f"{kind} in [{lo}, {hi}]" if not lo_open else f"{kind} in ({lo}, {hi}]"
    if lo is not None:
        return f"{kind} {'>' if lo_open else '>='} {lo}"
    return kind


def Int(default, doc, lo=None, hi=None):
    return Key(int, default, doc, _rng(lo, hi), _rng_text("an integer", lo, hi))


def Float(default, doc, lo=None, hi=None, lo_open=False):
    return Key((int, float), default, doc, _rng(lo, hi, lo_open=lo_open), _rng_text("a number", lo, hi, lo_open))


def Bool(default, doc):
    return Key(bool, default, doc, expected="true or false")


def Str(default, doc, choices=None):
    exp = ("one of " + ", ".join(repr(c) for c in choices)) if choices else "a string"
    return Key(str, default, doc, (lambda v: v in choices) if choices else None, exp, choices)


def StrList(default, doc):
    return Key(list, default, doc, lambda v: all(isinstance(x, str) and x for x in v), "a list of non-empty strings")


SCHEMA: dict[str, dict[str, Key]] = {
    "camera": {
        "source": Str(
            "synthetic://?pattern=face",
            "frame source: video://FILE, images://DIR, image://FILE, synthetic://?..., "
            "v4l2:///dev/video0?width=640&height=480&fps=30, picamera2://0, or a bare file/folder path",
        ),
        "read_timeout_s": Float(1.0, "a read that takes longer is a lost camera (FAULT)", 0.05, 10.0),
        "keep_warm": Bool(False, "keep the camera open between sessions (continuous gate mode only)"),
        "retry_attempts": Int(5, "attempts to reopen a lost camera before the next session", 1, 100),
        "freeze_frames": Int(15, "identical frames in a row that count as a frozen camera (FAULT)", 1, 300),
        "freeze_s": Float(0.9, "seconds without a new frame that count as a frozen camera (FAULT)", 0.1, 10.0),
    },
    "models": {
        "dir": Str("", "folder with the manifests and build/ (default: the repository's models/)"),
        "detector": Str("blazeface_short", "face detector manifest name"),
        "liveness": StrList(["minifasnet_v2", "minifasnet_v1se"], "liveness manifest names (scores are averaged)"),
        "liveness_schedule": Str(
            "round_robin",
            "every_frame: each liveness model on every voting frame; round_robin: one model per frame in turn, "
            "each vote fusing it with the others' scores from the frames just before on the same face",
            ("every_frame", "round_robin"),
        ),
        "variant": Str("float32", "which build of each model to load", ("float32", "int8")),
        "accelerator": Str("cpu", "where to run: cpu, or edgetpu (fails loudly if absent)", ("cpu", "edgetpu")),
        "threads": Int(1, "interpreter threads per model", 1, 8),
    },
    "detector": {
        "min_score": Float(0.5, "minimum face score", 0.0, 1.0),
        "iou_threshold": Float(0.3, "overlap above which detections merge", 0.0, 1.0),
        "max_faces": Int(4, "faces reported per frame at most", 1, 32),
        "every_n_frames": Int(3, "run the detector every n-th frame; the last boxes stand in between", 1, 30),
    },
    "quality": {
        "enabled": Bool(True, "apply the quality gate before a frame may vote"),
        "second_face_min_score": Float(0.75, "a second face counts (MULTIPLE_FACES) only above this score", 0.0, 1.0),
        "second_face_min_ratio": Float(0.5, "... and only if at least this fraction of the main face's width", 0.0, 1.0),
        "min_face_fraction": Float(0.12, "minimum face width as a fraction of the frame width", 0.0, 1.0),
        "max_face_fraction": Float(0.9, "maximum face width as a fraction of the frame width", 0.0, 1.0, lo_open=True),
        "max_yaw_deg": Float(35.0, "maximum head turn", 0.0, 90.0),
        "max_pitch_deg": Float(40.0, "maximum head tilt up/down (the least precise pose estimate)", 0.0, 90.0),
        "max_roll_deg": Float(35.0, "maximum head tilt sideways", 0.0, 90.0),
        "min_face_px": Float(32.0, "minimum face width in pixels (about 80 px / 2.7, what the liveness model sees)", 0.0),
        "centre_margin": Float(0.15, "face centre at least this fraction of the frame inside every edge", 0.0, 0.49),
        "min_inside_fraction": Float(0.85, "fraction of the face box that must lie inside the frame", 0.0, 1.0),
        "max_clipped_fraction": Float(0.5, "fraction of face pixels crushed or saturated above which exposure fails", 0.0, 1.0),
        "min_sharpness": Float(15.0, "minimum variance of the Laplacian on the 64x64 grey face", 0.0),
        "min_brightness": Float(40.0, "minimum mean grey level of the face", 0.0, 255.0),
        "max_brightness": Float(220.0, "maximum mean grey level of the face", 0.0, 255.0),
    },
    "liveness": {
        "mode": Str(
            "active",
            "passive: the liveness models alone; active: a random challenge of face actions read from the face "
            "mesh with a 3-D check, the liveness models still voting on every frame (the door default); "
            "step_up: passive first, the challenge only when the passive evidence is not clear",
            ("passive", "active", "step_up"),
        ),
        "step_up_low": Float(0.2, "step_up: a passive FAIL whose mean score is below this stands", 0.0, 1.0),
        "step_up_high": Float(0.9, "step_up: a passive PASS whose mean score is at or above this stands", 0.0, 1.0),
    },
    "challenge": {
        "k": Int(2, "actions asked per session, drawn without repeats", 1, 4),
        "actions": StrList(
            ["blink", "turn_left", "turn_right", "look_up", "open_mouth", "smile"],
            "the actions to draw from (turn_left/right: the person's own left/right)",
        ),
        "require_pose": Bool(True, "every challenge holds a head movement (turn_left, turn_right or look_up), so the 3-D check always runs"),
        "baseline_ms": Int(400, "neutral face measured this long before the first prompt", 100, 5000),
        "reaction_ms": Int(200, "motion starting sooner than this after a prompt was not caused by it (ignored)", 0, 2000),
        "response_ms": Int(3000, "time to complete an action after its prompt", 500, 20000),
        "neutral_ms": Int(2500, "time to come back to a neutral face after an action", 200, 20000),
        "max_gap_ms": Int(500, "the face may be lost this long (else FACE_CHANGED)", 0, 5000),
        "turn_deg": Float(15.0, "head turn left/right that completes turn_left/turn_right, from the neutral pose", 5.0, 60.0),
        "look_up_deg": Float(12.0, "chin-up pitch that completes look_up, from the neutral pose", 5.0, 60.0),
        "blink_delta": Float(0.18, "rise of the eyes' mean blink score over the neutral face that counts as closed (both eyes)", 0.05, 1.0),
        "mouth_delta": Float(0.30, "rise of the jaw-open score that completes open_mouth", 0.05, 1.0),
        "smile_delta": Float(0.35, "rise of the smile score that completes smile", 0.05, 1.0),
        "depth_threshold": Float(
            0.018, "3-D check: residual of one homography over the face's rigid points, in eye-corner distances, "
            "at or above which a head movement is 3-D", 0.0, 1.0, lo_open=True,
        ),
    },
    "decision": {
        "threshold": Float(0.5, "live score at or above which a frame votes live", 0.0, 1.0),
        "window": Int(5, "votes at most: split votes are decided by the mean of this many", 1, 100),
        "pass_votes": Int(3, "live votes in a row (and a mean at or above threshold) that give an early PASS", 1, 100),
        "fail_votes": Int(3, "attack votes in a row that give an early FAIL", 1, 100),
        "timeout_ms": Int(3000, "session time budget", 100, 60000),
        "no_face_ms": Int(2000, "NO_FACE when no face was seen this long", 100, 60000),
        "min_votes_at_end": Int(1, "votes needed to decide when a finite source ends", 1, 100),
    },
    "trigger": {
        "kind": Str("always", "what starts a session (osdp: the panel, over OSDP; see [osdp])", ("always", "serial", "gpio", "osdp")),
        "max_sessions": Int(0, "with kind=always: stop after this many sessions (0 = run forever)", 0),
        "pause_ms": Int(0, "with kind=always: pause between sessions", 0, 600000),
        "gpio_pin": Int(27, "with kind=gpio: BCM pin of the trigger input", 0, 53),
        "gpio_pull_up": Bool(True, "with kind=gpio: input pulled up (trigger shorts to ground)"),
        "gpio_bounce_ms": Int(50, "with kind=gpio: debounce time", 0, 5000),
    },
    "output": {
        "stdout": Bool(True, "print each verdict as a JSON line on stdout"),
    },
    "serial": {
        "port": Str("", "controller link: /dev/ttyAMA0, /dev/ttyUSB0, a pty path or any pyserial URL (loop://)"),
        "baudrate": Int(115200, "serial speed", 1200, 4000000),
        "key_file": Str("", "HMAC key file (root-only; 64 hex characters or 32 raw bytes)"),
        "key_credential": Str("hmac-key", "systemd credential name used when $CREDENTIALS_DIRECTORY is set"),
        "heartbeat_interval_s": Float(0.25, "heartbeat period", 0.05, 60.0),
        "heartbeat_timeout_s": Float(0.75, "controller silence after which the link is lost", 0.1, 600.0),
        "result_retry_ms": Int(200, "RESULT is repeated at this period until ACKed", 10, 10000),
        "result_timeout_ms": Int(3000, "how long RESULT is repeated when START carried no deadline", 100, 60000),
    },
    "relay": {
        "enabled": Bool(False, "drive a door relay on PASS from this board's GPIO"),
        "pin": Int(17, "BCM pin of the relay output", 0, 53),
        "active_high": Bool(True, "relay energised when the pin is high"),
        "pulse_ms": Int(1500, "how long the relay stays energised after PASS", 10, 60000),
    },
    # OSDP reader mode (docs/OSDP.md): this device is an OSDP peripheral (PD) on the panel's RS-485 bus
    "osdp": {
        "port": Str("", "RS-485 adapter: /dev/ttyUSB0, /dev/ttyAMA0, a pty path or any pyserial URL"),
        "baudrate": Int(9600, "bus speed (OSDP: 9600, 19200, 38400, 57600, 115200 or 230400)", 9600, 230400),
        "address": Int(0, "this reader's address on the bus (0-126; each reader on a bus has its own)", 0, 126),
        "scbk_file": Str("", "Secure Channel base key file (root-only; 32 hex digits or 16 raw bytes)"),
        "scbk_credential": Str("osdp-scbk", "systemd credential name of the SCBK, used when $CREDENTIALS_DIRECTORY is set"),
        "keyset_file": Str("", "where a key set by the panel (KEYSET) is stored and read back first; empty: KEYSET refused"),
        "install_mode": Bool(False, "accept the panel's default key (SCBK-D) until it sets one with KEYSET; no session runs meanwhile"),
        "enforce_secure": Bool(True, "refuse everything but ID, CAP and the Secure Channel handshake in clear"),
        "vendor_code": Int(0xFACE00, "3-byte vendor code (IEEE OUI) reported in PDID and used for the MFG payloads", 0, 0xFFFFFF),
        "model": Int(1, "model number reported in PDID", 0, 255),
        "hardware_version": Int(1, "hardware version reported in PDID", 0, 255),
        "serial_number": Int(0, "serial number reported in PDID (0: derived from the board's serial)", 0, 0xFFFFFFFF),
        "panel_timeout_ms": Int(2000, "panel silence after which a running session is cancelled (no verdict is sent late)", 200, 60000),
        "result_timeout_ms": Int(3000, "how long a verdict waits for the panel's poll when START carried no deadline", 100, 60000),
        "card_on_pass": Bool(False, "also report a card read on PASS (for panels that understand only card reads)"),
        "card_facility": Int(0, "with card_on_pass: 26-bit Wiegand (H10301) facility code", 0, 255),
        "card_number": Int(0, "with card_on_pass: 26-bit Wiegand (H10301) card number", 0, 65535),
        "keypad_on_other": Str("", "with card_on_pass: keys (0-9, *, #) reported on any verdict but PASS; empty: nothing"),
        "led_red_pin": Int(-1, "BCM pin of this device's own red LED (-1: none); with the green one, amber = both", -1, 53),
        "led_green_pin": Int(-1, "BCM pin of this device's own green LED (-1: none); reported in PDCAP when set", -1, 53),
    },
    "service": {
        "guard": Bool(True, "refuse file writes and non-local sockets while a session runs (service mode)"),
        "mlock": Bool(True, "lock memory so face pixels never reach swap (service mode)"),
        "watchdog": Bool(True, "ping systemd's watchdog from the main loop when WATCHDOG_USEC is set"),
    },
    "logging": {
        "level": Str("INFO", "log level", ("DEBUG", "INFO", "WARNING", "ERROR")),
    },
    "match": {
        "enabled": Bool(False, "1:1 face comparison when a session request carries a template "
                        "(needs the face-match models: edge models build --with face-match)"),
        "variant": Str("float32", "descriptor model build (int8: several times faster, distances within ~0.03)",
                       ("float32", "int8")),
        "threshold": Float(0.38, "largest descriptor distance that matches; calibrated on the dev faces, "
                           "calibrate on your population (edge eval --match, docs/MATCH.md)", 0.05, 1.5),
        "frames": Int(3, "best-quality frames whose descriptors are compared", 1, 16),
        "rule": Str("mean", "mean: distance of the frames' mean descriptor; min: the closest frame", ("mean", "min")),
        "max_runs": Int(6, "descriptor computations per session at most (cost bound)", 1, 64),
    },
}


def _section_class(name: str, keys: dict[str, Key]):
    fields = [(k, Any, dataclasses.field(default=_copy_default(spec.default))) for k, spec in keys.items()]
    return dataclasses.make_dataclass(name.capitalize() + "Config", fields, frozen=True)


def _copy_default(v):
    return tuple(v) if isinstance(v, list) else v


_SECTIONS = {name: _section_class(name, keys) for name, keys in SCHEMA.items()}


@dataclass(frozen=True)
class Config:
    camera: Any
    models: Any
    detector: Any
    quality: Any
    liveness: Any
    challenge: Any
    decision: Any
    trigger: Any
    output: Any
    serial: Any
    relay: Any
    service: Any
    logging: Any
    match: Any
    source: str | None = None  # file the config came from
    osdp: Any = None

    def to_dict(self) -> dict:
        return {name: dataclasses.asdict(getattr(self, name)) for name in SCHEMA}


def _check_value(dotted: str, spec: Key, value: Any, source: str | None) -> Any:
    # bool is an int subclass in Python; TOML keeps them apart, so must we.
    types = spec.type if isinstance(spec.type, tuple) else (spec.type,)
    ok_type = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
    if not ok_type:
        raise ConfigError(dotted, value, spec.expected or _type_name(spec.type), source=source)
    if spec.check is not None and not spec.check(value):
        raise ConfigError(dotted, value, spec.expected or "a valid value", source=source)
    if isinstance(value, list):
        return tuple(value)
    if float in types and isinstance(value, int):
        return float(value)
    return value


def _type_name(t) -> str:
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}.get(t, str(t))


def from_dict(data: dict, *, source: str | None = None) -> Config:
    """Validate a parsed TOML document (every problem names its key) and build a Config."""
    if not isinstance(data, dict):
        raise ConfigError("<root>", data, "a TOML table", source=source)
    for section in data:
        if section not in SCHEMA:
            raise ConfigError(section, data[section], "a known section: " + ", ".join(f"[{s}]" for s in SCHEMA), source=source)
    sections = {}
    for name, keys in SCHEMA.items():
        raw = data.get(name, {})
        if not isinstance(raw, dict):
            raise ConfigError(name, raw, f"a table [{name}]", source=source)
        values = {}
        for key, value in raw.items():
            if key not in keys:
                near = ", ".join(sorted(keys))
                raise ConfigError(f"{name}.{key}", value, f"a known key ([{name}] takes: {near})", source=source)
            values[key] = _check_value(f"{name}.{key}", keys[key], value, source)
        sections[name] = _SECTIONS[name](**values)
    _check_relations(sections, source)
    return Config(**sections, source=source)


def _check_relations(s: dict, source: str | None) -> None:
    d = s["decision"]
    for key in ("pass_votes", "fail_votes"):
        if getattr(d, key) > d.window:
            raise ConfigError(f"decision.{key}", getattr(d, key), f"at most decision.window ({d.window})", source=source)
    if d.no_face_ms > d.timeout_ms:
        raise ConfigError("decision.no_face_ms", d.no_face_ms, f"at most decision.timeout_ms ({d.timeout_ms})", source=source)
    m = s["match"]
    if m.max_runs < m.frames:
        raise ConfigError("match.max_runs", m.max_runs, f"at least match.frames ({m.frames})", source=source)
    q = s["quality"]
    if q.min_face_fraction >= q.max_face_fraction:
        raise ConfigError(
            "quality.min_face_fraction", q.min_face_fraction, f"less than quality.max_face_fraction ({q.max_face_fraction})", source=source
        )
    if q.min_brightness >= q.max_brightness:
        raise ConfigError("quality.min_brightness", q.min_brightness, f"less than quality.max_brightness ({q.max_brightness})", source=source)
    if s["models"].accelerator == "edgetpu" and s["models"].variant != "int8":
        raise ConfigError(
            "models.variant", s["models"].variant, "'int8' with models.accelerator = 'edgetpu' (the Edge TPU runs full-int8 models only)", source=source
        )
    if not s["models"].liveness:
        raise ConfigError("models.liveness", [], "at least one liveness model name", source=source)
    if s["trigger"].kind == "serial" and not s["serial"].port:
        raise ConfigError("serial.port", "", "a device path or URL when trigger.kind = 'serial'", source=source)
    lv = s["liveness"]
    if lv.step_up_low > lv.step_up_high:
        raise ConfigError("liveness.step_up_low", lv.step_up_low, f"at most liveness.step_up_high ({lv.step_up_high})", source=source)
    ch = s["challenge"]
    from edge.challenge import ACTIONS, POSE_ACTIONS

    for a in ch.actions:
        if a not in ACTIONS:
            raise ConfigError("challenge.actions", list(ch.actions), "a list of " + ", ".join(ACTIONS), source=source)
    if len(set(ch.actions)) != len(ch.actions):
        raise ConfigError("challenge.actions", list(ch.actions), "each action at most once", source=source)
    if ch.k > len(ch.actions):
        raise ConfigError("challenge.k", ch.k, f"at most the number of challenge.actions ({len(ch.actions)})", source=source)
    if ch.require_pose and not set(ch.actions) & set(POSE_ACTIONS):
        raise ConfigError(
            "challenge.require_pose", True, "false, or challenge.actions holding one of " + ", ".join(POSE_ACTIONS), source=source
        )
    o = s["osdp"]
    if s["trigger"].kind == "osdp" and not o.port:
        raise ConfigError("osdp.port", "", "a device path or URL when trigger.kind = 'osdp'", source=source)
    if o.install_mode and not o.keyset_file:
        raise ConfigError("osdp.keyset_file", "", "a root-only file path with osdp.install_mode = true (where the panel's key is kept)", source=source)
    if o.keypad_on_other and (len(o.keypad_on_other) > 16 or set(o.keypad_on_other) - set("0123456789*#")):
        raise ConfigError("osdp.keypad_on_other", o.keypad_on_other, "at most 16 of 0-9, * and #", source=source)
    if not s["camera"].source.strip():
        raise ConfigError("camera.source", s["camera"].source, "a camera spec such as video://clip.mp4", source=source)


# A config is a few KiB; a huge file is a mistake (or an attack on the parser), refused before parsing.
MAX_CONFIG_BYTES = 1024 * 1024


def load(path: str | Path | None = None, *, overrides: dict | None = None) -> Config:
    """Load and validate a TOML config file (``None``: the defaults)."""
    data: dict = {}
    src = None
    if path is not None:
        src = str(path)
        if len(src) > 120:
            src = f"{src[:60]}...({len(src)} characters)"
        try:
            with open(path, "rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)
            if len(raw) > MAX_CONFIG_BYTES:
                raise ConfigError("<file>", src, f"a TOML file of at most {MAX_CONFIG_BYTES // 1024} KiB", source=src)
            data = tomllib.loads(raw.decode("utf-8"))
        except FileNotFoundError as err:
            raise ConfigError("<file>", src, "an existing TOML file (see: edge config --defaults)", source=src) from err
        except IsADirectoryError as err:
            raise ConfigError("<file>", src, "a TOML file, not a folder", source=src) from err
        except OSError as err:  # permissions, ENAMETOOLONG, I/O errors
            raise ConfigError("<file>", src, f"a readable TOML file ({err.strerror})", source=src) from err
        except UnicodeDecodeError as err:
            raise ConfigError(
                "<file>", src, f"UTF-8 text (TOML requires it; byte {err.start} is not), e.g. re-save it as UTF-8",
                source=src) from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError("<file>", src, f"valid TOML ({err})", source=src) from err
        except RecursionError as err:  # tomllib parses nested arrays/tables recursively
            raise ConfigError("<file>", src, "valid TOML without arrays or tables nested hundreds deep", source=src) from err
    if overrides:
        data = merge(data, overrides)
    cfg = from_dict(data, source=src)
    if path is not None:
        cfg = _resolve_relative_source(cfg, Path(path).resolve().parent)
    return cfg


_FILE_SCHEMES = ("image://", "images://", "video://")


def _resolve_relative_source(cfg: Config, base: Path) -> Config:
    """File sources in a config file are relative to that file, not to the working directory,
    so a config works the same from a shell, a test and a systemd unit."""
    src = cfg.camera.source
    prefix = next((p for p in _FILE_SCHEMES if src.startswith(p)), "")
    if not prefix and "://" in src:
        return cfg
    rest = src[len(prefix):]
    path_part, sep, query = rest.partition("?")
    if not path_part or Path(path_part).is_absolute():
        return cfg
    resolved = prefix + str((base / path_part).resolve()) + sep + query
    return dataclasses.replace(cfg, camera=dataclasses.replace(cfg.camera, source=resolved))


def merge(base: dict, extra: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in extra.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = v
    return out


def defaults_toml() -> str:
    """The full schema as a commented TOML document with every default."""
    lines = ["# edge configuration: every key with its default. Delete what you do not change.", ""]
    for name, keys in SCHEMA.items():
        lines.append(f"[{name}]")
        for key, spec in keys.items():
            lines.append(f"# {spec.doc}" + (f" ({spec.expected})" if spec.expected and spec.type is not bool else ""))
            lines.append(f"{key} = {_toml_value(spec.default)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return repr(v)
