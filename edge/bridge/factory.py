"""Build the trigger and the verdict sink from a :class:`BridgeConfig`.

TOML keys (edge.config) map onto BridgeConfig in :meth:`BridgeConfig.from_config`:

==============================  ===========================  =============================
TOML key                        BridgeConfig field           notes
==============================  ===========================  =============================
trigger.kind                    trigger                      "always" | "serial" | "gpio"
trigger.max_sessions            always_max_sessions          0 = forever
trigger.pause_ms                always_pause_ms
trigger.gpio_pin                trigger_pin                  BCM number
trigger.gpio_pull_up            trigger_pull_up
trigger.gpio_active_high        trigger_active_high          only used if pull_up is unset
trigger.gpio_bounce_ms          trigger_bounce_ms
output.stdout                   "stdout" in sinks
relay.enabled                   "relay" in sinks
relay.pin / active_high         relay_pin / relay_active_high
relay.pulse_ms                  relay_pulse_ms
serial.port / baudrate          serial_port / serial_baudrate  "serial" sink iff trigger.kind = "serial"
serial.key_file                 key_file
serial.key_credential           key_credential
serial.heartbeat_interval_s     heartbeat_interval_s
serial.heartbeat_timeout_s      heartbeat_timeout_s
serial.result_retry_ms          result_retry_ms
serial.result_timeout_ms        result_timeout_ms            delivery budget when START has no deadline
device.board / device.os        board / os_name              "" = detect
osdp.*                          osdp (OsdpSettings)          "osdp" sink iff trigger.kind = "osdp"
==============================  ===========================  =============================
"""

from __future__ import annotations

import logging
import platform
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

from edge.bridge.base import Trigger, VerdictSink
from edge.errors import ConfigError

log = logging.getLogger(__name__)

TRIGGERS = ("always", "serial", "gpio", "osdp")
SINKS = ("stdout", "serial", "relay", "osdp")


@dataclass(frozen=True)
class BridgeConfig:
    trigger: str = "always"
    sinks: tuple[str, ...] = ("stdout",)
    # serial link to the controller
    serial_port: str = ""
    serial_baudrate: int = 115200
    key_file: str = ""
    key_credential: str = "hmac-key"
    heartbeat_interval_s: float = 0.25
    heartbeat_timeout_s: float = 0.75
    result_retry_ms: int = 200
    result_timeout_ms: int = 3000
    # relay output on this board
    relay_pin: int | str = 17
    relay_active_high: bool = True
    relay_pulse_ms: int = 1500
    # trigger input on this board
    trigger_pin: int | str = 27
    trigger_pull_up: bool | None = True
    trigger_active_high: bool | None = None
    trigger_bounce_ms: int = 50
    # stdout sink: also print prompts as JSON lines (the active challenge's actions)
    stdout_prompts: bool = False
    # always trigger
    always_max_sessions: int = 0  # 0 = forever
    always_pause_ms: int = 0
    # sent in HELLO (the controller's seeds use them for risk checks); "" = detect
    board: str = ""
    os_name: str = ""
    runtime_version: str = ""
    model_versions: str = ""
    extra_info: tuple[tuple[str, str], ...] = field(default=())
    # OSDP reader mode (edge.bridge.osdp.OsdpSettings), when trigger.kind = "osdp"
    osdp: object | None = None
    log_level: str = "INFO"

    def __post_init__(self):
        if self.trigger not in TRIGGERS:
            raise ConfigError("trigger.kind", self.trigger, "one of " + ", ".join(map(repr, TRIGGERS)))
        for s in self.sinks:
            if s not in SINKS:
                raise ConfigError("bridge.sinks", self.sinks, "sinks from " + ", ".join(map(repr, SINKS)))
        if ("serial" in self.sinks) != (self.trigger == "serial"):
            # a RESULT binds the controller's nonce from START: no START, nothing to bind
            raise ConfigError("trigger.kind", self.trigger, "'serial' exactly when the serial sink is used")
        if ("osdp" in self.sinks) != (self.trigger == "osdp"):
            raise ConfigError("trigger.kind", self.trigger, "'osdp' exactly when the osdp sink is used")
        if self.trigger == "osdp" and not getattr(self.osdp, "port", ""):
            raise ConfigError("osdp.port", "", "a device path or URL when trigger.kind = 'osdp'")
        if self.trigger == "serial" and not self.serial_port:
            raise ConfigError("serial.port", self.serial_port, "a device path or URL when trigger.kind = 'serial'")
        if self.heartbeat_timeout_s <= self.heartbeat_interval_s:
            raise ConfigError(
                "serial.heartbeat_timeout_s",
                self.heartbeat_timeout_s,
                f"more than serial.heartbeat_interval_s ({self.heartbeat_interval_s}), ideally 3x",
            )
        if self.trigger_pull_up is None and self.trigger_active_high is None:
            raise ConfigError("trigger.gpio_active_high", None, "true or false when the input has no pull resistor")
        for key, v in (("relay.pulse_ms", self.relay_pulse_ms), ("serial.result_retry_ms", self.result_retry_ms),
                       ("serial.result_timeout_ms", self.result_timeout_ms)):
            if v <= 0:
                raise ConfigError(key, v, "a positive number of milliseconds")

    @classmethod
    def from_config(cls, cfg) -> "BridgeConfig":
        """Map a validated :class:`edge.config.Config` (keys above; absent ones keep their defaults)."""
        t, s, r, o = cfg.trigger, cfg.serial, cfg.relay, cfg.output
        sinks = []
        if getattr(o, "stdout", True):
            sinks.append("stdout")
        if t.kind == "serial":
            sinks.append("serial")
        osdp = None
        if t.kind == "osdp":
            from edge.bridge.osdp import OsdpSettings

            sinks.append("osdp")
            osdp = OsdpSettings.from_config(cfg.osdp)
        if getattr(r, "enabled", False):
            sinks.append("relay")
        dev = getattr(cfg, "device", None)
        models = getattr(cfg, "models", None)
        model_versions = ""
        if models is not None:
            names = [getattr(models, "detector", "")] + list(getattr(models, "liveness", ()))
            model_versions = ",".join(n for n in names if n) + f"/{getattr(models, 'variant', '')}"
        d = cls()
        return cls(
            trigger=t.kind,
            sinks=tuple(sinks),
            stdout_prompts=getattr(getattr(cfg, "liveness", None), "mode", "passive") != "passive",
            serial_port=getattr(s, "port", d.serial_port),
            serial_baudrate=getattr(s, "baudrate", d.serial_baudrate),
            key_file=getattr(s, "key_file", d.key_file),
            key_credential=getattr(s, "key_credential", d.key_credential),
            heartbeat_interval_s=float(getattr(s, "heartbeat_interval_s", d.heartbeat_interval_s)),
            heartbeat_timeout_s=float(getattr(s, "heartbeat_timeout_s", d.heartbeat_timeout_s)),
            result_retry_ms=getattr(s, "result_retry_ms", d.result_retry_ms),
            result_timeout_ms=getattr(s, "result_timeout_ms", d.result_timeout_ms),
            relay_pin=getattr(r, "pin", d.relay_pin),
            relay_active_high=getattr(r, "active_high", d.relay_active_high),
            relay_pulse_ms=getattr(r, "pulse_ms", d.relay_pulse_ms),
            trigger_pin=getattr(t, "gpio_pin", d.trigger_pin),
            trigger_pull_up=getattr(t, "gpio_pull_up", d.trigger_pull_up),
            trigger_active_high=getattr(t, "gpio_active_high", d.trigger_active_high),
            trigger_bounce_ms=getattr(t, "gpio_bounce_ms", d.trigger_bounce_ms),
            always_max_sessions=getattr(t, "max_sessions", d.always_max_sessions),
            always_pause_ms=getattr(t, "pause_ms", d.always_pause_ms),
            board=getattr(dev, "board", "") if dev is not None else "",
            os_name=getattr(dev, "os", "") if dev is not None else "",
            model_versions=model_versions,
            osdp=osdp,
            log_level=getattr(getattr(cfg, "logging", None), "level", "INFO"),
        )

    def device_info(self) -> tuple[tuple[str, str], ...]:
        """(key, value) pairs for HELLO: role, board, os, python, runtime, models."""
        from edge import __version__

        info = [
            ("role", "runtime"),
            ("board", self.board or detect_board()),
            ("os", self.os_name or detect_os()),
            ("python", platform.python_version()),
            ("runtime", self.runtime_version or __version__),
            ("models", self.model_versions),
        ]
        info.extend(self.extra_info)
        return tuple((k, v) for k, v in info if v)


def detect_board() -> str:
    for p in ("/proc/device-tree/model", "/sys/firmware/devicetree/base/model"):
        try:
            return Path(p).read_bytes().rstrip(b"\x00\n").decode("ascii", "replace")
        except OSError:
            continue
    return f"{platform.system()} {platform.machine()}"


def detect_os() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    return f"{platform.system()} {platform.release()}"


def open_bridge(cfg: BridgeConfig, *, keepalive=None) -> tuple[Trigger, VerdictSink]:
    """Open the configured trigger and sink(s). On any failure, whatever was opened is closed again.

    ``keepalive`` (the watchdog's kick) is called in every wait of the serial link's delivery."""
    from edge.bridge.local import AlwaysTrigger, JsonLinesSink, MultiSink, NullSink

    with ExitStack() as stack:
        trigger = None
        sinks: list = []
        serial_bridge = None
        if cfg.trigger == "serial" or "serial" in cfg.sinks:
            from edge.bridge.keys import key_fingerprint, load_key
            from edge.bridge.serial_link import SerialBridge

            key = load_key(cfg.key_file or None, cfg.key_credential or None)
            serial_bridge = SerialBridge(
                cfg.serial_port,
                key,
                baudrate=cfg.serial_baudrate,
                heartbeat_interval_s=cfg.heartbeat_interval_s,
                heartbeat_timeout_s=cfg.heartbeat_timeout_s,
                result_retry_ms=cfg.result_retry_ms,
                result_timeout_ms=cfg.result_timeout_ms,
                device_info=cfg.device_info(),
                keepalive=keepalive,
            )
            stack.callback(serial_bridge.close)
            log.info("controller link on %s (key fingerprint %s)", cfg.serial_port, key_fingerprint(key))
        osdp_bridge = None
        if cfg.trigger == "osdp":
            from edge.bridge.osdp import open_osdp

            osdp_bridge = open_osdp(cfg.osdp, log_level=cfg.log_level)
            stack.callback(osdp_bridge.close)
        if cfg.trigger == "serial":
            trigger = serial_bridge
        elif cfg.trigger == "osdp":
            trigger = osdp_bridge
        elif cfg.trigger == "gpio":
            from edge.bridge.gpio import GpioTrigger

            trigger = GpioTrigger(
                cfg.trigger_pin,
                pull_up=cfg.trigger_pull_up,
                active_high=cfg.trigger_active_high,
                bounce_ms=cfg.trigger_bounce_ms,
            )
            stack.callback(trigger.close)
        else:
            trigger = AlwaysTrigger(cfg.always_max_sessions or None, cfg.always_pause_ms / 1000.0)
        for kind in cfg.sinks:
            if kind == "stdout":
                sinks.append(JsonLinesSink(prompts=cfg.stdout_prompts))
            elif kind == "serial":
                sinks.append(serial_bridge)
            elif kind == "osdp":
                sinks.append(osdp_bridge)
            elif kind == "relay":
                from edge.bridge.gpio import GpioRelay, RelaySink

                relay = GpioRelay(cfg.relay_pin, active_high=cfg.relay_active_high)
                stack.callback(relay.close)
                sinks.append(RelaySink(relay, cfg.relay_pulse_ms))
        if not sinks:
            sink: VerdictSink = NullSink()
        elif len(sinks) == 1:
            sink = sinks[0]
        else:
            sink = MultiSink(sinks)
        stack.pop_all()  # the caller closes trigger and sink now (every close() is idempotent)
    return trigger, sink
