"""edge doctor on an injected tree: every check's ok and failing paths, the table and the exit code."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from edge.service import doctor as d

ROOT = Path(__file__).resolve().parents[1]
KEY_HEX = "ab" * 32


class Cfg:
    """A config stand-in: attribute access like edge.config's sections."""

    def __init__(self, **sections):
        for name, values in sections.items():
            setattr(self, name, argparse.Namespace(**values))


def gate_cfg(**over) -> Cfg:
    base = {
        "camera": {"source": "picamera2://0"},
        "trigger": {"kind": "serial"},
        "serial": {"port": "/dev/serial0", "key_file": ""},
        "relay": {"enabled": False},
        "models": {"dir": "", "variant": "float32", "detector": "blazeface_short",
                   "liveness": ["minifasnet_v2", "minifasnet_v1se"]},
        "service": {"mlock": True},
    }
    for k, v in over.items():
        base[k] = {**base.get(k, {}), **v}
    return Cfg(**base)


@pytest.fixture
def tree(tmp_path) -> tuple[d.DoctorEnv, dict[str, str]]:
    dev = tmp_path / "dev"
    dev.mkdir()
    groups: dict[str, str] = {}
    for name, group in (("video0", "video"), ("video1", "video"), ("media0", "video"),
                        ("ttyAMA0", "dialout"), ("gpiochip0", "gpio")):
        p = dev / name
        p.write_bytes(b"")
        p.chmod(0o660)
        groups[name] = group
    (dev / "serial0").symlink_to("ttyAMA0")
    etc = tmp_path / "etc/systemd"
    (etc / "journald.conf.d").mkdir(parents=True)
    (etc / "coredump.conf.d").mkdir(parents=True)
    (etc / "journald.conf").write_text("[Journal]\n#Storage=auto\n")
    (etc / "coredump.conf").write_text("[Coredump]\n#Storage=external\n")
    shutil.copy(ROOT / "systemd/journald.conf.d/edge-volatile.conf", etc / "journald.conf.d")
    shutil.copy(ROOT / "systemd/coredump.conf.d/edge.conf", etc / "coredump.conf.d")
    unit = etc / "system/edge.service"
    unit.parent.mkdir()
    unit.write_text(re.sub(r"^ExecStart=.*$", "ExecStart=/bin/true", (ROOT / "systemd/edge.service").read_text(), flags=re.M))
    key = tmp_path / "etc/edge/hmac.key"
    key.parent.mkdir(parents=True)
    key.write_text(KEY_HEX + "\n")
    key.chmod(0o600)
    swaps = tmp_path / "swaps"
    swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n")
    models = tmp_path / "models"
    models.mkdir()

    def artifact(name, variant):
        return models / f"{name}.{variant}.tflite"

    env = d.DoctorEnv(
        dev=dev, key_file=key, unit_file=unit, systemd_etc=etc, systemd_run=tmp_path / "run/systemd",
        systemd_lib=tmp_path / "usr/lib/systemd", var_log_journal=tmp_path / "var/log/journal",
        proc_swaps=swaps, rsyslogd=tmp_path / "usr/sbin/rsyslogd",
        group_of=lambda p: groups.get(p.name), is_char_device=lambda st: True,
        artifact_path=artifact, root_uid=os.getuid(),
    )
    return env, groups


def by_check(results):
    return {r.check: r for r in results}


def test_healthy_gate_all_ok(tree):
    env, _ = tree
    res = by_check(d.run_checks(env, gate_cfg()))
    not_ok = {k: (r.status, r.detail) for k, r in res.items() if r.status != d.OK}
    if env.systemd_analyze is None:
        assert not_ok == {"unit hardening": (d.UNKNOWN, "systemd-analyze not found")}
    else:
        assert not_ok == {}, not_ok
        assert "exposure 0." in res["unit hardening"].detail
    assert "ttyAMA0" in res["serial"].detail
    assert res["journald"].detail.startswith("Storage=volatile")
    assert res["coredump"].detail.startswith("Storage=none")
    assert {"model blazeface_short", "model minifasnet_v2", "model minifasnet_v1se"} <= set(res)


def test_missing_camera_and_wrong_group_fail(tree):
    env, groups = tree
    for p in env.dev.glob("video*"):
        p.unlink()
    r = d.check_camera(env, gate_cfg())
    assert r.status == d.FAIL and "no camera device" in r.detail and r.fix
    (env.dev / "video0").write_bytes(b"")
    (env.dev / "video0").chmod(0o600)
    groups["video0"] = "root"
    r = d.check_camera(env, gate_cfg())
    assert r.status == d.FAIL and "cannot open" in r.detail


def test_v4l2_source_checks_that_node(tree):
    env, _ = tree
    assert d.check_camera(env, gate_cfg(camera={"source": "v4l2:///dev/video1?width=640"})).status == d.OK
    r = d.check_camera(env, gate_cfg(camera={"source": "v4l2:///dev/video7"}))
    assert r.status == d.FAIL and "video7" in r.detail


def test_file_source_is_only_a_warning(tree):
    env, _ = tree
    assert d.check_camera(env, gate_cfg(camera={"source": "video://clip.mp4"})).status == d.WARN


def test_serial_missing_or_unreachable(tree):
    env, groups = tree
    r = d.check_serial(env, gate_cfg(serial={"port": "/dev/ttyUSB0"}))
    assert r.status == d.FAIL and "does not exist" in r.detail
    groups["ttyAMA0"] = "tty"
    (env.dev / "ttyAMA0").chmod(0o620)
    r = d.check_serial(env, gate_cfg())
    assert r.status == d.FAIL and "dialout" in r.fix
    r = d.check_serial(env, gate_cfg(trigger={"kind": "serial"}, serial={"port": ""}))
    assert r.status == d.FAIL
    assert d.check_serial(env, gate_cfg(trigger={"kind": "always"}, serial={"port": ""})).status == d.OK


def test_gpio_needed_only_for_gpio_trigger_or_relay(tree):
    env, _ = tree
    (env.dev / "gpiochip0").unlink()
    assert d.check_gpio(env, gate_cfg()).status == d.WARN
    assert d.check_gpio(env, gate_cfg(trigger={"kind": "gpio"})).status == d.FAIL
    assert d.check_gpio(env, gate_cfg(relay={"enabled": True})).status == d.FAIL


def test_models_fail_unknown_and_restore_env(tree, monkeypatch):
    env, _ = tree
    from edge.errors import ModelIntegrityError, ModelMissingError

    def bad(name, variant):
        if name == "minifasnet_v2":
            raise ModelIntegrityError("/m/minifasnet_v2.float32.tflite", "a" * 64, "b" * 64, "edge models build")
        if name == "minifasnet_v1se":
            raise ModelMissingError("model minifasnet_v1se is not built; run: edge models build")
        raise ImportError("No module named 'edge.models.registry'")

    monkeypatch.delenv("EDGE_MODELS_DIR", raising=False)
    env.artifact_path = bad
    res = by_check(d.check_models(env, gate_cfg(models={"dir": "/opt/edge/models"})))
    assert res["model blazeface_short"].status == d.UNKNOWN
    assert res["model minifasnet_v2"].status == d.FAIL and "sha256" in res["model minifasnet_v2"].detail
    assert res["model minifasnet_v1se"].status == d.FAIL
    assert "EDGE_MODELS_DIR=/opt/edge/models" in res["model minifasnet_v1se"].fix
    assert "EDGE_MODELS_DIR" not in os.environ


def test_models_real_registry_reports_missing_build(tree, tmp_path, monkeypatch):
    env, _ = tree
    pytest.importorskip("edge.models.registry")
    env.artifact_path = d._artifact_path
    empty = tmp_path / "no-models"
    empty.mkdir()
    res = d.check_models(env, gate_cfg(models={"dir": str(empty)}))
    assert all(r.status == d.FAIL for r in res), res


def test_key_file_checks(tree):
    env, _ = tree
    assert d.check_key(env, gate_cfg()).status == d.OK
    env.key_file.chmod(0o640)
    r = d.check_key(env, gate_cfg())
    assert r.status == d.FAIL and "chmod 600" in r.fix
    env.key_file.chmod(0o600)
    env.key_file.write_text("not a key\n")
    assert d.check_key(env, gate_cfg()).status == d.FAIL
    env.key_file.unlink()
    assert d.check_key(env, gate_cfg()).status == d.FAIL  # the serial link needs it
    assert d.check_key(env, gate_cfg(trigger={"kind": "always"}, serial={"port": ""})).status == d.WARN


def test_key_owned_by_someone_else_fails(tree):
    env, _ = tree
    env.root_uid = os.getuid() + 1
    r = d.check_key(env, gate_cfg())
    assert r.status == d.FAIL and "not root" in r.detail


def test_journald_and_coredump_precedence(tree):
    env, _ = tree
    etc = env.systemd_etc
    (etc / "journald.conf.d/edge-volatile.conf").unlink()
    (env.var_log_journal).mkdir(parents=True)
    r = d.check_journald(env, None)
    assert r.status == d.FAIL and "written to disk" in r.detail
    (etc / "journald.conf.d/zz-persistent.conf").write_text("[Journal]\nStorage=persistent\n")
    assert d.check_journald(env, None).status == d.FAIL
    (etc / "journald.conf.d/zz-persistent.conf").unlink()
    shutil.copy(ROOT / "systemd/journald.conf.d/edge-volatile.conf", etc / "journald.conf.d")
    assert d.check_journald(env, None).status == d.OK
    # a later drop-in (by name) wins, whichever directory it is in
    lib = env.systemd_lib / "coredump.conf.d"
    lib.mkdir(parents=True)
    (lib / "zz-vendor.conf").write_text("[Coredump]\nStorage=external\n")
    r = d.check_coredump(env, None)
    assert r.status == d.FAIL and "zz-vendor.conf" in r.detail
    (lib / "zz-vendor.conf").unlink()
    assert d.check_coredump(env, None).status == d.OK


def test_unit_missing_and_loosened(tree):
    env, _ = tree
    if env.systemd_analyze is None:
        pytest.skip("systemd-analyze not installed")
    loose = env.unit_file.read_text()
    for key in ("PrivateNetwork", "ProtectSystem", "ProtectHome", "CapabilityBoundingSet", "SystemCallFilter",
                "DynamicUser", "PrivateDevices", "DevicePolicy", "RestrictAddressFamilies", "ProtectKernelTunables",
                "ProtectKernelModules", "RestrictNamespaces", "IPAddressDeny", "MemoryDenyWriteExecute",
                "NoNewPrivileges", "ProtectProc", "ProcSubset", "ProtectClock", "ProtectHostname"):
        loose = re.sub(rf"^{key}=.*$", "", loose, flags=re.M)
    env.unit_file.write_text(loose)
    r = d.check_unit(env, None)
    assert r.status in (d.WARN, d.FAIL) and "expected <= 2.0" in r.detail
    env.unit_file.unlink()
    assert d.check_unit(env, None).status == d.WARN


def test_swap_with_and_without_mlock(tree):
    env, _ = tree
    env.proc_swaps.write_text("Filename\tType\tSize\tUsed\tPriority\n/dev/zram0 partition 1 0 100\n")
    assert d.check_swap(env, gate_cfg()).status == d.OK
    assert d.check_swap(env, gate_cfg(service={"mlock": False})).status == d.WARN


def test_rsyslog_warns(tree):
    env, _ = tree
    env.rsyslogd.parent.mkdir(parents=True)
    env.rsyslogd.write_text("")
    assert d.check_syslog(env, None).status == d.WARN


def test_cli_table_json_and_exit_code(tree, tmp_path, capsys):
    env, _ = tree
    cfg = tmp_path / "edge.toml"
    cfg.write_text((ROOT / "systemd/edge.toml.example").read_text().replace("/dev/serial0", str(env.dev / "serial0")))
    parser = argparse.ArgumentParser()
    d.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["doctor", "--config", str(cfg), "--json"])
    assert args.func is d.cmd_doctor
    env.key_file.chmod(0o644)  # one failing check
    rc = d.cmd_doctor(args, env)
    out = json.loads(capsys.readouterr().out)
    assert rc == 1 and out["ok"] is False
    statuses = {c["check"]: c["status"] for c in out["checks"]}
    assert statuses["config"] == "ok" and statuses["key file"] == "fail"
    env.key_file.chmod(0o600)
    args = parser.parse_args(["doctor", "--config", str(cfg)])
    rc = d.cmd_doctor(args, env)
    table = capsys.readouterr().out
    assert "CHECK" in table and "HOW TO FIX" in table and "0 failed" in table
    assert rc == 0


def test_bad_config_fails(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[camera]\nsource = 5\n")
    cfg, res = d.load_config(str(bad))
    assert cfg is None and res.status == d.FAIL and "camera.source" in res.detail


def test_models_with_face_matching_enabled(tree, monkeypatch):
    from edge.errors import ModelMissingError

    env, _ = tree
    monkeypatch.delenv("EDGE_MODELS_DIR", raising=False)

    def only_core(name, variant):
        if name == "dlib_resnet":
            raise ModelMissingError("model dlib_resnet (int8) is not built")
        return Path(f"/models/{name}.{variant}.tflite")

    env.artifact_path = only_core
    res = by_check(d.check_models(env, gate_cfg(match={"enabled": True, "variant": "int8"})))
    assert res["model face_mesh_v2"].status == d.OK
    assert res["model dlib_resnet"].status == d.FAIL and res["model dlib_resnet"].fix.endswith("--with face-match")
    assert "model dlib_resnet" not in by_check(d.check_models(env, gate_cfg()))
