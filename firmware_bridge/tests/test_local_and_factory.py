"""always trigger, stdout sink, fan-out, and open_bridge() from BridgeConfig / edge.config."""

from __future__ import annotations

import io
import json
import os
import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edge.bridge.base import SessionRequest, Trigger, VerdictSink
from edge.bridge.factory import BridgeConfig, open_bridge
from edge.bridge.local import AlwaysTrigger, JsonLinesSink, MultiSink
from edge.errors import ConfigError, KeyFileError
from edge.types import Reason, Verdict, VerdictKind

from .helpers import KEY


def _pass(sid=1):
    return Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 5, 321, sid)


def test_always_trigger_counts_and_exhausts():
    t = AlwaysTrigger(max_sessions=3)
    ids = [t.wait(0.1).session_id for _ in range(3)]
    assert ids == [1, 2, 3] and t.exhausted
    assert t.wait(0.01) is None
    forever = AlwaysTrigger()
    assert all(forever.wait(0) is not None for _ in range(100)) and not forever.exhausted
    forever.close()
    assert forever.exhausted and forever.wait(0) is None


def test_always_trigger_pause_between_sessions():
    t = AlwaysTrigger(pause_s=0.2)
    assert t.wait(0.5) is not None  # the first starts at once
    t0 = time.monotonic()
    assert t.wait(0.05) is None  # still pausing
    r = t.wait(1.0)
    assert r is not None and r.session_id == 2 and time.monotonic() - t0 >= 0.15


def test_json_lines_sink_one_object_per_verdict():
    buf = io.StringIO()
    sink = JsonLinesSink(buf)
    sink.prompt(SessionRequest(1), None)
    sink.result(SessionRequest(1), _pass(1))
    sink.result(SessionRequest(2), Verdict(VerdictKind.NO_FACE, Reason.NO_FACE_FOUND, 0, 9, 2000, 2))
    lines = buf.getvalue().splitlines()
    assert [json.loads(x) for x in lines] == [_pass(1).to_dict(), Verdict(VerdictKind.NO_FACE, Reason.NO_FACE_FOUND, 0, 9, 2000, 2).to_dict()]


class _Boom:
    def prompt(self, r, p):
        raise OSError("gone")

    def result(self, r, v):
        raise OSError("gone")

    def close(self):
        pass


def test_multi_sink_delivers_to_all_then_raises_first_error():
    buf = io.StringIO()
    multi = MultiSink([_Boom(), JsonLinesSink(buf)])
    with pytest.raises(OSError):
        multi.result(SessionRequest(1), _pass())
    assert json.loads(buf.getvalue())["verdict"] == "PASS"
    multi.fault(Reason.CAMERA_LOST)  # sinks without fault() are skipped
    multi.close()


def test_bridge_config_validation():
    with pytest.raises(ConfigError, match="trigger.kind"):
        BridgeConfig(trigger="telepathy")
    with pytest.raises(ConfigError, match="serial.port"):
        BridgeConfig(trigger="serial", sinks=("serial",))
    with pytest.raises(ConfigError, match="trigger.kind"):
        BridgeConfig(trigger="always", sinks=("serial",), serial_port="loop://")
    with pytest.raises(ConfigError, match="heartbeat_timeout_s"):
        BridgeConfig(trigger="serial", sinks=("serial",), serial_port="loop://", heartbeat_interval_s=2, heartbeat_timeout_s=1)
    with pytest.raises(ConfigError, match="gpio_active_high"):
        BridgeConfig(trigger="gpio", trigger_pull_up=None)
    info = dict(BridgeConfig(board="rpi", os_name="Debian", model_versions="m/float32").device_info())
    assert info["role"] == "runtime" and info["board"] == "rpi" and info["models"] == "m/float32" and info["runtime"]


def test_open_bridge_always_stdout():
    trig, sink = open_bridge(BridgeConfig(always_max_sessions=2))
    assert isinstance(trig, Trigger) and isinstance(sink, VerdictSink)
    assert trig.wait(0).session_id == 1
    trig.close()
    sink.close()


def test_open_bridge_serial_with_relay_and_key_refusal(tmp_path):
    key = tmp_path / "k"
    key.write_text(KEY.hex())
    os.chmod(key, 0o644)
    cfg = BridgeConfig(trigger="serial", sinks=("stdout", "serial", "relay"), serial_port="loop://", key_file=str(key),
                       relay_pin=17)
    with pytest.raises(KeyFileError, match="chmod 600"):
        open_bridge(cfg)
    os.chmod(key, 0o600)
    old = Device.pin_factory
    Device.pin_factory = MockFactory()
    try:
        trig, sink = open_bridge(cfg)
        try:
            assert type(trig).__name__ == "SerialBridge"
            assert type(sink).__name__ == "MultiSink" and trig in sink.sinks
        finally:
            sink.close()
            trig.close()
        assert not Device.pin_factory.pin(17).state
    finally:
        Device.pin_factory.reset()
        Device.pin_factory = old


def test_from_edge_config(tmp_path):
    from edge import config

    key = tmp_path / "k"
    key.write_text(KEY.hex())
    os.chmod(key, 0o600)
    toml = tmp_path / "edge.toml"
    toml.write_text(
        f"""
[trigger]
kind = "serial"
[serial]
port = "loop://"
key_file = "{key}"
heartbeat_interval_s = 0.2
heartbeat_timeout_s = 1.0
result_retry_ms = 100
[relay]
enabled = true
pin = 6
active_high = false
pulse_ms = 700
[output]
stdout = false
"""
    )
    cfg = config.load(toml)
    bc = BridgeConfig.from_config(cfg)
    assert bc.trigger == "serial" and bc.sinks == ("serial", "relay")
    assert (bc.serial_port, bc.key_file, bc.heartbeat_interval_s, bc.heartbeat_timeout_s, bc.result_retry_ms) == (
        "loop://", str(key), 0.2, 1.0, 100)
    assert (bc.relay_pin, bc.relay_active_high, bc.relay_pulse_ms) == (6, False, 700)
    assert "minifasnet" in bc.model_versions
    default = BridgeConfig.from_config(config.load(None))
    assert default.trigger == "always" and default.sinks == ("stdout",)
