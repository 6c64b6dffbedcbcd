"""``edge doctor``: is this device ready to run the edge service?

Checks the camera, serial and GPIO device nodes (present, and reachable by the
service's groups), the model files (sha256 against their manifests), the HMAC
key file, the installed unit's hardening score, and that journald and
systemd-coredump cannot persist anything. Prints one row per check with what
to do about it; exits 1 if any check fails.

Every path is injectable (:class:`DoctorEnv`) so the checks are tested on a
temporary tree; the defaults are the real system's paths.
"""

from __future__ import annotations

import argparse
import configparser
import grp
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = ["CheckResult", "DoctorEnv", "run_checks", "register", "main", "OK", "WARN", "FAIL", "UNKNOWN"]

OK, WARN, FAIL, UNKNOWN = "ok", "warn", "fail", "unknown"
DEFAULT_CONFIG = "/etc/edge/edge.toml"
SERVICE_GROUPS = ("video", "dialout", "gpio")
DEFAULT_MODELS = ("blazeface_short", "minifasnet_v2", "minifasnet_v1se")


@dataclass(frozen=True)
class CheckResult:
    check: str
    status: str  # ok / warn / fail / unknown
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {"check": self.check, "status": self.status, "detail": self.detail, "fix": self.fix}


def _group_of(path: Path) -> str | None:
    try:
        return grp.getgrgid(path.stat().st_gid).gr_name
    except (KeyError, OSError):
        return None


def _artifact_path(name: str, variant: str) -> Path:
    from edge.models.registry import artifact_path  # lazily: another module, may be absent

    return artifact_path(name, variant, verify=True)


@dataclass
class DoctorEnv:
    """Where the checks look. Defaults are the live system."""

    dev: Path = Path("/dev")
    key_file: Path = Path("/etc/edge/hmac.key")
    unit_file: Path = Path("/etc/systemd/system/edge.service")
    systemd_etc: Path = Path("/etc/systemd")
    systemd_run: Path = Path("/run/systemd")
    systemd_lib: Path = Path("/usr/lib/systemd")
    var_log_journal: Path = Path("/var/log/journal")
    proc_swaps: Path = Path("/proc/swaps")
    rsyslogd: Path = Path("/usr/sbin/rsyslogd")
    systemd_analyze: str | None = field(default_factory=lambda: shutil.which("systemd-analyze"))
    group_of: Callable[[Path], str | None] = _group_of
    is_char_device: Callable[[os.stat_result], bool] = lambda st: stat.S_ISCHR(st.st_mode)
    artifact_path: Callable[[str, str], Path] = _artifact_path
    euid: Callable[[], int] = os.geteuid
    root_uid: int = 0  # who must own the key file


# ------------------------------------------------------------------------------------ helpers


def _cfg(cfg: Any, dotted: str, default: Any) -> Any:
    obj = cfg
    for part in dotted.split("."):
        if obj is None:
            return default
        obj = getattr(obj, part, None)
    return default if obj is None else obj


def _service_groups(env: DoctorEnv) -> tuple[str, ...]:
    try:
        text = env.unit_file.read_text()
    except OSError:
        return SERVICE_GROUPS
    m = re.findall(r"^\s*SupplementaryGroups\s*=\s*(.*)$", text, re.M)
    return tuple(" ".join(m).split()) if m else SERVICE_GROUPS


def _node_access(env: DoctorEnv, path: Path, groups: Iterable[str], want_group: str) -> CheckResult | str:
    """'' if the service can open ``path`` read-write, else a failing result/explanation."""
    try:
        st = path.stat()
    except OSError as err:
        return f"{path}: {err.strerror}"
    if not env.is_char_device(st):
        return f"{path} is not a character device"
    mode = stat.S_IMODE(st.st_mode)
    group = env.group_of(path)
    if mode & 0o006 == 0o006:
        return ""
    if group in set(groups) and mode & 0o060 == 0o060:
        return ""
    return f"{path} is {stat.filemode(st.st_mode)} group {group or st.st_gid}: the service (groups {', '.join(groups)}) cannot open it; expected group {want_group} with rw"


# ------------------------------------------------------------------------------------ checks


def check_camera(env: DoctorEnv, cfg: Any) -> CheckResult:
    source = str(_cfg(cfg, "camera.source", ""))
    scheme = source.split("://", 1)[0] if "://" in source else ""
    if source and scheme not in ("v4l2", "picamera2", ""):
        return CheckResult("camera", WARN, f"camera.source is {source!r}: not a live camera",
                           "set camera.source to picamera2://0 or v4l2:///dev/video0 for a gate")
    groups = _service_groups(env)
    if scheme == "v4l2":
        target = source.split("://", 1)[1].split("?", 1)[0]
        nodes = [Path(target)] if target.startswith("/") else [env.dev / f"video{target or 0}"]
        if str(nodes[0]).startswith("/dev/"):
            nodes = [env.dev / str(nodes[0])[5:]]
    else:
        nodes = sorted(env.dev.glob("video*"), key=lambda p: (len(p.name), p.name))
    if not nodes or not all(n.exists() for n in nodes):
        missing = ", ".join(str(n) for n in nodes) or f"{env.dev}/video*"
        return CheckResult("camera", FAIL, f"no camera device: {missing} missing",
                           "connect the camera; Pi camera: camera_auto_detect=1 in /boot/firmware/config.txt, "
                           "then `rpicam-hello --list-cameras`; USB: `v4l2-ctl --list-devices`")
    problems = [p for n in nodes if (p := _node_access(env, n, groups, "video"))]
    if scheme == "picamera2" or (not scheme and (env.dev / "media0").exists()):
        medias = sorted(env.dev.glob("media*"))
        if scheme == "picamera2" and not medias:
            problems.append(f"no {env.dev}/media* node (libcamera needs the media controller)")
        problems += [p for n in medias if (p := _node_access(env, n, groups, "video"))]
    names = ", ".join(n.name for n in nodes[:6]) + (" ..." if len(nodes) > 6 else "")
    if problems:
        return CheckResult("camera", FAIL, "; ".join(problems[:3]),
                           "the udev rules of Raspberry Pi OS give /dev/video* and /dev/media* to group video "
                           "mode 0660; check `ls -l /dev/video* /dev/media*` and /etc/udev/rules.d")
    return CheckResult("camera", OK, f"{names} reachable by group video")


def check_serial(env: DoctorEnv, cfg: Any) -> CheckResult:
    port = str(_cfg(cfg, "serial.port", ""))
    kind = str(_cfg(cfg, "trigger.kind", ""))
    if not port:
        if kind == "serial":
            return CheckResult("serial", FAIL, "trigger.kind is 'serial' but serial.port is empty",
                               "set serial.port (e.g. /dev/serial0, /dev/ttyUSB0)")
        return CheckResult("serial", OK, "no controller link configured (serial.port empty)")
    if "://" in port:
        return CheckResult("serial", WARN, f"serial.port is the URL {port!r}: a test link, not a device",
                           "use the UART device (e.g. /dev/serial0) on a gate")
    path = Path(port)
    if port.startswith("/dev/"):
        path = env.dev / port[5:]
    if not path.exists():
        hint = ("enable the UART: enable_uart=1 in /boot/firmware/config.txt and disable the serial console "
                "(sudo raspi-config nonint do_serial_hw 0; do_serial_cons 1)") if "serial" in port or "AMA" in port \
            else "plug the USB serial adapter in; see `ls /dev/ttyUSB* /dev/ttyACM*`"
        return CheckResult("serial", FAIL, f"{port} does not exist", hint)
    resolved = path.resolve()
    problem = _node_access(env, resolved, _service_groups(env), "dialout")
    if problem:
        return CheckResult("serial", FAIL, problem, f"give {resolved} to group dialout (udev), mode 0660")
    via = f" -> {resolved.name}" if resolved != path else ""
    return CheckResult("serial", OK, f"{port}{via} reachable by group dialout")


def check_gpio(env: DoctorEnv, cfg: Any) -> CheckResult:
    needed = str(_cfg(cfg, "trigger.kind", "")) == "gpio" or bool(_cfg(cfg, "relay.enabled", False))
    chips = sorted(env.dev.glob("gpiochip*"))
    if not chips:
        status = FAIL if needed else WARN
        return CheckResult("gpio", status, f"no {env.dev}/gpiochip* device",
                           "a Raspberry Pi has /dev/gpiochip0 (gpiochip4 on a Pi 5 with older kernels); "
                           "check the kernel has CONFIG_GPIO_CDEV")
    problems = [p for c in chips if (p := _node_access(env, c, _service_groups(env), "gpio"))]
    if problems:
        return CheckResult("gpio", FAIL if needed else WARN, "; ".join(problems[:2]),
                           "Raspberry Pi OS's udev rules give /dev/gpiochip* to group gpio mode 0660; "
                           "install.sh creates the group if missing")
    use = "used by the config" if needed else "not used by the config"
    return CheckResult("gpio", OK, f"{', '.join(c.name for c in chips)} reachable by group gpio ({use})")


def check_models(env: DoctorEnv, cfg: Any) -> list[CheckResult]:
    variant = str(_cfg(cfg, "models.variant", "float32"))
    names = [str(_cfg(cfg, "models.detector", DEFAULT_MODELS[0]))]
    names += list(_cfg(cfg, "models.liveness", list(DEFAULT_MODELS[1:])))
    pairs = [(name, variant) for name in names]
    if _cfg(cfg, "match.enabled", False):  # 1:1: the face mesh and the optional face-match descriptor
        pairs += [("face_mesh_v2", "float32"), ("dlib_resnet", str(_cfg(cfg, "match.variant", "float32")))]
    models_dir = str(_cfg(cfg, "models.dir", ""))
    results = []
    saved = os.environ.get("EDGE_MODELS_DIR")
    if models_dir:
        os.environ["EDGE_MODELS_DIR"] = models_dir  # the registry reads it; restored below
    try:
        for name, variant in pairs:
            label = f"model {name}"
            try:
                path = env.artifact_path(name, variant)
            except ImportError as err:
                results.append(CheckResult(label, UNKNOWN, f"model registry unavailable ({err})",
                                           "reinstall edge (pip install edge) so edge.models is present"))
                continue
            except Exception as err:  # ModelMissingError / ModelIntegrityError name the fix themselves
                build = f"sudo env EDGE_MODELS_DIR={models_dir} /opt/edge/.venv/bin/edge models build" if models_dir \
                    else "edge models build"
                if name == "dlib_resnet":
                    build += " --with face-match"
                results.append(CheckResult(label, FAIL, f"{type(err).__name__}: {err}", build))
                continue
            results.append(CheckResult(label, OK, f"{variant}: {path} (sha256 matches its manifest)"))
    finally:
        if models_dir:
            if saved is None:
                os.environ.pop("EDGE_MODELS_DIR", None)
            else:
                os.environ["EDGE_MODELS_DIR"] = saved
    return results


def check_key(env: DoctorEnv, cfg: Any) -> CheckResult:
    key_file = str(_cfg(cfg, "serial.key_file", "")) or str(env.key_file)
    path = Path(key_file)
    if path == Path("/etc/edge/hmac.key"):
        path = env.key_file
    uses_link = bool(_cfg(cfg, "serial.port", "")) or str(_cfg(cfg, "trigger.kind", "")) == "serial"
    try:
        st = path.lstat()
    except FileNotFoundError:
        if str(_cfg(cfg, "trigger.kind", "")) == "osdp" and not uses_link:
            return CheckResult("key file", OK, f"{path} absent: not used (OSDP has its own key, see the osdp checks)")
        return CheckResult("key file", FAIL if uses_link else WARN, f"{path} does not exist",
                           f"sudo scripts/install.sh generates it, or: sudo sh -c 'umask 077; python3 -c "
                           f"\"import secrets; print(secrets.token_hex(32))\" > {path}'")
    except PermissionError:
        return CheckResult("key file", UNKNOWN, f"{path}: permission denied", "run edge doctor with sudo")
    if not stat.S_ISREG(st.st_mode):
        return CheckResult("key file", FAIL, f"{path} is not a regular file", f"replace {path} with the key file itself")
    mode = stat.S_IMODE(st.st_mode)
    problems = []
    if mode & 0o077:
        problems.append(f"mode {mode:04o} lets group/others read or write it (anyone who reads it can forge a PASS)")
    if st.st_uid != env.root_uid:
        problems.append(f"owned by uid {st.st_uid}, not root")
    if problems:
        return CheckResult("key file", FAIL, f"{path}: " + "; ".join(problems),
                           f"sudo chown root:root {path} && sudo chmod 600 {path}")
    from edge.errors import KeyFileError

    try:
        from edge.bridge.keys import read_key_file

        read_key_file(path)
    except ImportError:
        pass
    except KeyFileError as err:  # before PermissionError: KeyFileError is one
        if isinstance(err.__cause__, PermissionError):
            return CheckResult("key file", UNKNOWN, f"{path} is root 0600 (content not checked: not root)",
                               "run edge doctor with sudo to check the key's format")
        return CheckResult("key file", FAIL, str(err), "regenerate it (64 hex digits) and update the controller")
    except OSError as err:
        return CheckResult("key file", UNKNOWN, f"{path}: {err.strerror}", "run edge doctor with sudo")
    return CheckResult("key file", OK, f"{path} root 0600, well-formed (passed to the service as a credential)")


def _secret_file(env: DoctorEnv, name: str, path: Path, *, required: bool, any_owner: bool = False) -> CheckResult:
    """Mode, owner and format of a 16-byte OSDP key file (SCBK or the panel's KEYSET)."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return CheckResult(name, FAIL if required else OK, f"{path} does not exist" + ("" if required else " (yet)"),
                           f"python -m edge.bridge.osdp_panel keygen {path}, then give the panel the same key"
                           if required else "")
    except PermissionError:
        return CheckResult(name, UNKNOWN, f"{path}: permission denied", "run edge doctor with sudo")
    mode = stat.S_IMODE(st.st_mode)
    # a key the panel set (KEYSET) is written by the service's own (dynamic) user
    if not stat.S_ISREG(st.st_mode) or mode & 0o077 or (st.st_uid != env.root_uid and not any_owner):
        return CheckResult(name, FAIL, f"{path}: mode {mode:04o}, uid {st.st_uid} (whoever reads it can join the "
                           "Secure Channel and forge a PASS)", f"sudo chown root:root {path} && sudo chmod 600 {path}")
    try:
        from edge.bridge.keys import read_key_file

        read_key_file(path, length=16, setting=name)
    except PermissionError:
        return CheckResult(name, UNKNOWN, f"{path} is root 0600 (content not checked: not root)", "run with sudo")
    except Exception as err:
        return CheckResult(name, FAIL, str(err), "regenerate it (32 hex digits) and set it on the panel")
    return CheckResult(name, OK, f"{path} root 0600, a 16-byte key")


def check_osdp(env: DoctorEnv, cfg: Any) -> list[CheckResult]:
    """OSDP reader mode (trigger.kind = "osdp"): libosdp, the bus device, the SCBK, secure settings."""
    if str(_cfg(cfg, "trigger.kind", "")) != "osdp":
        return [CheckResult("osdp", OK, "OSDP reader mode not configured (trigger.kind is not 'osdp')")]
    out = []
    try:
        import osdp_sys  # noqa: F401
    except ImportError:
        out.append(CheckResult("osdp", FAIL, "libosdp is not installed", "pip install 'libosdp==3.2.9' in the venv"))
    port = str(_cfg(cfg, "osdp.port", ""))
    if "://" in port or not port:
        out.append(CheckResult("osdp port", WARN if port else FAIL, f"osdp.port is {port!r}: not an RS-485 device",
                               "set osdp.port to the adapter (e.g. /dev/ttyUSB0 or /dev/ttyAMA0)"))
    else:
        path = env.dev / port[5:] if port.startswith("/dev/") else Path(port)
        problem = f"{port} does not exist" if not path.exists() else _node_access(env, path.resolve(), _service_groups(env), "dialout")
        out.append(CheckResult("osdp port", FAIL, problem, "plug the RS-485 adapter in; give it to group dialout mode 0660")
                   if problem else CheckResult("osdp port", OK, f"{port} reachable by group dialout"))
    scbk, keyset = str(_cfg(cfg, "osdp.scbk_file", "")), str(_cfg(cfg, "osdp.keyset_file", ""))
    install = bool(_cfg(cfg, "osdp.install_mode", False))
    if keyset and Path(keyset).exists():
        out.append(_secret_file(env, "osdp keyset_file", Path(keyset), required=False, any_owner=True))
    elif scbk:
        out.append(_secret_file(env, "osdp scbk_file", Path(scbk), required=True))
    elif not install:
        out.append(CheckResult("osdp scbk_file", WARN, "osdp.scbk_file is empty: the key must come as the systemd "
                               "credential osdp-scbk", "LoadCredential=osdp-scbk:/etc/edge/osdp-scbk.key in the unit"))
    if keyset:
        parent = Path(keyset).parent
        out.append(CheckResult("osdp keyset dir", OK if parent.is_dir() else FAIL, f"KEYSETs are stored in {keyset}",
                               "" if parent.is_dir() else f"create {parent} (root 0700) and add it to ReadWritePaths="))
    if not _cfg(cfg, "osdp.enforce_secure", True):
        out.append(CheckResult("osdp secure channel", WARN, "osdp.enforce_secure = false: commands are accepted in "
                               "clear and anyone on the bus can start a session or read a verdict",
                               "set osdp.enforce_secure = true on a gate"))
    if install:
        out.append(CheckResult("osdp install mode", WARN, "install mode: the reader accepts the public default key "
                               "until the panel sets one (no session runs over it)",
                               "once the panel has set its key, set osdp.install_mode = false"))
    if _cfg(cfg, "osdp.card_on_pass", False):
        out.append(CheckResult("osdp card_on_pass", WARN, "a PASS is also reported as a card read, which carries no "
                               "session nonce (the Secure Channel still authenticates it)",
                               "prefer the MFG VERDICT where the panel can read it"))
    return out


def _unit_score(env: DoctorEnv) -> tuple[float | None, str]:
    assert env.systemd_analyze
    online = (env.systemd_run / "system").is_dir() and env.unit_file == Path("/etc/systemd/system/edge.service")
    cmd = [env.systemd_analyze, "security", "--no-pager"]
    cmd += ["edge.service"] if online else ["--offline=true", str(env.unit_file)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return None, f"systemd-analyze failed: {err}"
    m = re.search(r"Overall exposure level for \S+:\s*([0-9.]+)", out.stdout)
    if not m:
        return None, (out.stderr.strip().splitlines() or ["no score in the output"])[-1]
    return float(m.group(1)), "online" if online else "offline"


def check_unit(env: DoctorEnv, cfg: Any) -> CheckResult:
    if not env.unit_file.exists():
        return CheckResult("unit hardening", WARN, f"{env.unit_file} not installed",
                           "sudo scripts/install.sh installs systemd/edge.service")
    if not env.systemd_analyze:
        return CheckResult("unit hardening", UNKNOWN, "systemd-analyze not found", "apt install systemd")
    score, how = _unit_score(env)
    if score is None:
        return CheckResult("unit hardening", UNKNOWN, how, "run: systemd-analyze security edge.service")
    detail = f"systemd-analyze security ({how}): exposure {score:.1f}"
    if score <= 2.0:
        return CheckResult("unit hardening", OK, detail)
    fix = "reinstall systemd/edge.service (scripts/install.sh) and remove drop-ins that loosen it (systemctl cat edge)"
    return CheckResult("unit hardening", WARN if score <= 5.0 else FAIL, detail + " (expected <= 2.0)", fix)


def _effective(env: DoctorEnv, name: str, section: str, key: str) -> tuple[str | None, list[str]]:
    """Value of ``key`` as systemd reads ``name``.conf plus its drop-ins, and where it came from."""
    files: list[Path] = [env.systemd_etc / f"{name}.conf"]
    dropins: dict[str, Path] = {}
    # Same-named drop-ins in /etc override /run, which override /usr/lib; all sorted by file name.
    for base in (env.systemd_lib, env.systemd_run, env.systemd_etc):
        d = base / f"{name}.conf.d"
        if d.is_dir():
            for f in d.glob("*.conf"):
                dropins[f.name] = f
    files += [dropins[k] for k in sorted(dropins)]
    value, where = None, []
    for f in files:
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment]
        try:
            parser.read(f, encoding="utf-8")
        except (configparser.Error, OSError, UnicodeDecodeError):
            continue
        if parser.has_option(section, key):
            value = parser.get(section, key).strip()
            where.append(str(f))
    return value, where


def check_journald(env: DoctorEnv, cfg: Any) -> CheckResult:
    value, where = _effective(env, "journald", "Journal", "Storage")
    src = f" (from {where[-1]})" if where else " (default)"
    storage = (value or "auto").lower()
    fix = "install systemd/journald.conf.d/edge-volatile.conf (scripts/install.sh), then systemctl restart systemd-journald"
    if storage in ("volatile", "none"):
        return CheckResult("journald", OK, f"Storage={storage}{src}: logs stay in RAM")
    if storage == "auto" and not env.var_log_journal.exists():
        return CheckResult("journald", WARN, f"Storage=auto{src} and no {env.var_log_journal}: volatile today, "
                           "persistent as soon as that directory exists", fix)
    return CheckResult("journald", FAIL, f"Storage={storage}{src}: the journal is written to disk", fix)


def check_syslog(env: DoctorEnv, cfg: Any) -> CheckResult:
    if env.rsyslogd.exists():
        return CheckResult("syslog", WARN, f"{env.rsyslogd} is installed: it copies journal messages to /var/log",
                           "sudo systemctl disable --now rsyslog (or sudo apt purge rsyslog)")
    return CheckResult("syslog", OK, "no rsyslog: nothing copies the journal to disk")


def check_coredump(env: DoctorEnv, cfg: Any) -> CheckResult:
    value, where = _effective(env, "coredump", "Coredump", "Storage")
    src = f" (from {where[-1]})" if where else " (default)"
    storage = (value or "external").lower()
    if storage == "none":
        return CheckResult("coredump", OK, f"Storage=none{src}; the unit also sets LimitCORE=0")
    return CheckResult("coredump", FAIL, f"Storage={storage}{src}: a crash could store a dump with face pixels",
                       "install systemd/coredump.conf.d/edge.conf (scripts/install.sh)")


def check_swap(env: DoctorEnv, cfg: Any) -> CheckResult:
    from edge.service.harden import swap_active

    active = swap_active(str(env.proc_swaps))
    mlock = bool(_cfg(cfg, "service.mlock", True))
    if active is None:
        return CheckResult("swap", UNKNOWN, f"cannot read {env.proc_swaps}")
    if not active:
        return CheckResult("swap", OK, "no swap: pixels cannot be paged out")
    if mlock:
        return CheckResult("swap", OK, "swap active; the service locks its memory (service.mlock, LimitMEMLOCK=infinity)")
    return CheckResult("swap", WARN, "swap active and service.mlock = false: face pixels could be paged to disk",
                       "set service.mlock = true, or disable swap (sudo dphys-swapfile swapoff; disable zram)")


CHECKS: tuple[Callable[[DoctorEnv, Any], CheckResult | list[CheckResult]], ...] = (
    check_camera, check_serial, check_gpio, check_models, check_key, check_osdp, check_unit,
    check_journald, check_syslog, check_coredump, check_swap,
)


def load_config(path: str | None) -> tuple[Any, CheckResult]:
    """The config to check against; defaults when there is no file."""
    from edge import config as config_mod

    if path is None:
        path = DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None
    if path is None:
        return config_mod.load(None), CheckResult("config", WARN, f"no {DEFAULT_CONFIG}: checked against the defaults",
                                                  "sudo scripts/install.sh installs one; or pass --config FILE")
    try:
        cfg = config_mod.load(path)
    except PermissionError:
        return None, CheckResult("config", FAIL, f"{path}: permission denied (root:root 0640)", "run edge doctor with sudo")
    except Exception as err:  # ConfigError names the key and the fix
        return None, CheckResult("config", FAIL, str(err), f"edge config --check {path}")
    return cfg, CheckResult("config", OK, f"{path} is valid")


def run_checks(env: DoctorEnv, cfg: Any) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in CHECKS:
        try:
            out = check(env, cfg)
        except Exception as err:  # a broken check must not hide the others
            out = CheckResult(check.__name__.removeprefix("check_"), UNKNOWN, f"check crashed: {type(err).__name__}: {err}")
        results.extend(out if isinstance(out, list) else [out])
    return results


def format_table(results: list[CheckResult]) -> str:
    rows = [("CHECK", "STATUS", "DETAIL", "HOW TO FIX")] + [(r.check, r.status.upper(), r.detail, r.fix) for r in results]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = []
    for r in rows:
        line = f"{r[0]:<{w0}}  {r[1]:<{w1}}  {r[2]}"
        if r[3]:
            line += f"\n{'':<{w0}}  {'':<{w1}}  -> {r[3]}"
        lines.append(line)
    fails = sum(r.status == FAIL for r in results)
    warns = sum(r.status == WARN for r in results)
    lines.append(f"\n{len(results)} checks: {fails} failed, {warns} warnings")
    return "\n".join(lines)


def cmd_doctor(args: argparse.Namespace, env: DoctorEnv | None = None) -> int:
    env = env or DoctorEnv()
    cfg, cfg_result = load_config(args.config)
    results = [cfg_result] + run_checks(env, cfg)
    if args.json:
        print(json.dumps({"ok": not any(r.status == FAIL for r in results),
                          "checks": [r.to_dict() for r in results]}, indent=2))
    else:
        print(format_table(results))
        if env.euid() != 0:
            print("(not root: some files could not be inspected; run with sudo for a full report)")
    return 1 if any(r.status == FAIL for r in results) else 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("doctor", help="check this device is ready for the edge service (devices, models, "
                                             "key, unit hardening, journald/coredump)")
    p.add_argument("--config", help=f"config to check against (default: {DEFAULT_CONFIG} if present)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_doctor)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["doctor", *(argv if argv is not None else sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
