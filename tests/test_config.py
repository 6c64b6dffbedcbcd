"""Config validation: every error names the key, the bad value and the expected form."""

import subprocess
import sys

import pytest

from edge import config
from edge.errors import ConfigError
from timescale import scaled


def test_defaults_load_and_roundtrip_as_toml(tmp_path):
    cfg = config.load()
    assert cfg.decision.threshold == 0.5
    p = tmp_path / "d.toml"
    p.write_text(config.defaults_toml())
    assert config.load(p).to_dict() == cfg.to_dict()


@pytest.mark.parametrize(
    "doc,message",
    [
        ({"decision": {"window": "5"}}, "config key 'decision.window': got '5'; expected an integer in [1, 100]"),
        ({"decision": {"threshold": 1.5}}, "config key 'decision.threshold': got 1.5; expected a number in [0.0, 1.0]"),
        ({"decision": {"threshold": True}}, "config key 'decision.threshold': got True; expected a number in [0.0, 1.0]"),
        ({"camera": {"sourc": "x"}}, "config key 'camera.sourc': got 'x'; expected a known key ([camera] takes: freeze_frames, freeze_s, keep_warm, read_timeout_s, retry_attempts, source)"),
        ({"cam": {}}, "config key 'cam': got {}; expected a known section: [camera]"),
        ({"decision": {"pass_votes": 9}}, "config key 'decision.pass_votes': got 9; expected at most decision.window (5)"),
        ({"decision": {"no_face_ms": 5000}}, "config key 'decision.no_face_ms': got 5000; expected at most decision.timeout_ms (3000)"),
        ({"relay": {"enabled": 1}}, "config key 'relay.enabled': got 1; expected true or false"),
        ({"models": {"variant": "fp16"}}, "config key 'models.variant': got 'fp16'; expected one of 'float32', 'int8'"),
        ({"models": {"liveness": []}}, "config key 'models.liveness': got []; expected at least one liveness model name"),
        ({"models": {"liveness": ["a", 3]}}, "config key 'models.liveness': got ['a', 3]; expected a list of non-empty strings"),
        ({"trigger": {"kind": "serial"}}, "config key 'serial.port': got ''; expected a device path or URL when trigger.kind = 'serial'"),
        ({"camera": "x"}, "config key 'camera': got 'x'; expected a table [camera]"),
        ({"quality": {"min_brightness": 230.0}}, "config key 'quality.min_brightness': got 230.0; expected less than quality.max_brightness (220.0)"),
        ({"camera": {"read_timeout_s": float("nan")}}, "config key 'camera.read_timeout_s': got nan; expected a number in [0.05, 10.0]"),
    ],
)
def test_errors_name_key_value_and_fix(doc, message):
    with pytest.raises(ConfigError) as exc:
        config.from_dict(doc)
    assert message in str(exc.value)
    assert isinstance(exc.value, ValueError)  # also the fitting built-in


def test_error_names_the_file(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[decision]\nwindow = 0\n")
    with pytest.raises(ConfigError) as exc:
        config.load(p)
    assert str(p) in str(exc.value) and exc.value.key == "decision.window"


def test_toml_syntax_error(tmp_path):
    p = tmp_path / "broken.toml"
    p.write_text("[decision\nwindow = 3\n")
    with pytest.raises(ConfigError, match="valid TOML"):
        config.load(p)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="an existing TOML file"):
        config.load(tmp_path / "nope.toml")


def test_ints_accepted_for_floats():
    cfg = config.from_dict({"decision": {"threshold": 1}})
    assert cfg.decision.threshold == 1.0 and isinstance(cfg.decision.threshold, float)


def test_config_is_frozen():
    cfg = config.load()
    with pytest.raises(Exception):
        cfg.decision.threshold = 0.1


def _edge(*args):
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=scaled(120))


def test_cli_run_exits_2_on_bad_config(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text("[decision]\nthreshold = 'high'\n")
    r = _edge("run", "--config", str(p))
    assert r.returncode == 2
    assert "decision.threshold" in r.stderr and "'high'" in r.stderr and "a number in [0.0, 1.0]" in r.stderr


def test_cli_config_check(tmp_path):
    p = tmp_path / "ok.toml"
    p.write_text("[decision]\nthreshold = 0.6\n")
    r = _edge("config", "--check", str(p))
    assert r.returncode == 0 and "ok" in r.stdout
    r = _edge("config", "--defaults")
    assert r.returncode == 0 and "[decision]" in r.stdout


def test_cli_version():
    r = _edge("--version")
    assert r.returncode == 0 and r.stdout.startswith("edge ")


def test_edgetpu_needs_int8():
    with pytest.raises(ConfigError, match="'int8' with models.accelerator = 'edgetpu'"):
        config.from_dict({"models": {"accelerator": "edgetpu"}})
    assert config.from_dict({"models": {"accelerator": "edgetpu", "variant": "int8"}}).models.variant == "int8"


def test_edgetpu_without_compiled_models_says_how_to_compile(models_env):
    from edge.assemble import build_pipeline
    from edge.errors import ModelMissingError

    cfg = config.from_dict({"models": {"accelerator": "edgetpu", "variant": "int8"}})
    with pytest.raises(ModelMissingError, match=r"not compiled for the Edge TPU: .*_edgetpu\.tflite is missing\. Compile it with Coral's compiler: edgetpu_compiler -o "):
        build_pipeline(cfg)
