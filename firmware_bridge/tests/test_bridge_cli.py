"""`edge bridge keygen` / `fingerprint` (handlers called through their own argparse registration)."""

from __future__ import annotations

import argparse
import os
import stat

from edge.bridge import cli
from edge.bridge.keys import key_fingerprint, load_key


def _run(*argv):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    return args.func(args)


def test_keygen_writes_private_key_and_never_overwrites(tmp_path, capsys):
    p = tmp_path / "bridge.key"
    old = os.umask(0o022)
    try:
        assert _run("bridge", "keygen", str(p)) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o600
    key = load_key(p)
    out = capsys.readouterr().out
    assert key_fingerprint(key) in out and key.hex() not in out
    before = p.read_bytes()
    assert _run("bridge", "keygen", str(p)) == 2
    assert p.read_bytes() == before and "not overwriting" in capsys.readouterr().err


def test_fingerprint_applies_the_permission_checks(tmp_path, capsys):
    p = tmp_path / "k"
    p.write_text(bytes(range(32)).hex())
    os.chmod(p, 0o600)
    assert _run("bridge", "fingerprint", "--key-file", str(p)) == 0
    assert capsys.readouterr().out.strip() == key_fingerprint(bytes(range(32)))
    os.chmod(p, 0o644)
    assert _run("bridge", "fingerprint", "--key-file", str(p)) == 2
    assert "chmod 600" in capsys.readouterr().err
