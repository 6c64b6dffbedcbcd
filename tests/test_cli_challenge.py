"""`--mode` and `--challenge` on the command line: accepted offline, refused where a door runs."""

import os
import subprocess
import sys
from pathlib import Path
from timescale import scaled

ROOT = Path(__file__).resolve().parents[1]


def edge(*args, tmp_path=None):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True, timeout=scaled(120),
                          env=env, cwd=tmp_path)


def test_fixed_challenge_is_refused_in_service_mode():
    r = edge("run", "--service", "--challenge", "blink,turn_left", "--source", "synthetic://?frames=1")
    assert r.returncode == 2
    assert "--challenge" in r.stderr and "service mode" in r.stderr and "Traceback" not in r.stderr


def test_fixed_challenge_is_refused_with_a_controller(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text('[trigger]\nkind = "serial"\n[serial]\nport = "loop://"\n')
    r = edge("run", "--config", str(cfg), "--challenge", "blink,turn_left")
    assert r.returncode == 2 and "nonce" in r.stderr and "Traceback" not in r.stderr


def test_fixed_challenge_needs_an_active_mode_and_known_actions():
    r = edge("check", "--mode", "passive", "--challenge", "blink", "synthetic://?frames=1")
    assert r.returncode == 2 and "--mode active" in r.stderr
    r = edge("check", "--challenge", "blink,jump", "synthetic://?frames=1")
    assert r.returncode == 2 and "unknown challenge action 'jump'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_config_refuses_bad_challenge_settings(tmp_path):
    cases = {
        '[challenge]\nactions = ["blink", "wave"]\n': "challenge.actions",
        '[challenge]\nk = 3\nactions = ["blink", "turn_left"]\n': "challenge.k",
        '[challenge]\nactions = ["blink", "smile"]\n': "challenge.require_pose",
        '[liveness]\nmode = "paranoid"\n': "liveness.mode",
        '[liveness]\nstep_up_low = 0.95\n': "liveness.step_up_low",
    }
    for i, (text, key) in enumerate(cases.items()):
        cfg = tmp_path / f"c{i}.toml"
        cfg.write_text(text)
        r = edge("config", "--check", str(cfg))
        assert r.returncode == 2 and key in r.stderr, (text, r.stderr)
