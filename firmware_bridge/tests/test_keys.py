"""Key loading: file or systemd credential, refused when others may read it."""

from __future__ import annotations

import os

import pytest

from edge.bridge.keys import key_fingerprint, load_key, read_key_file
from edge.errors import BridgeError, KeyFileError

KEY = bytes(range(32))


def _write(path, data: bytes, mode: int):
    path.write_bytes(data)
    os.chmod(path, mode)
    return path


@pytest.mark.parametrize("data", [KEY, KEY.hex().encode() + b"\n", KEY.hex().upper().encode()])
def test_private_key_file_in_both_formats(tmp_path, data):
    p = _write(tmp_path / "bridge.key", data, 0o600)
    assert load_key(p) == KEY
    assert load_key(str(p), credential="hmac-key") == KEY  # no $CREDENTIALS_DIRECTORY: the file


@pytest.mark.parametrize("mode,who", [(0o644, "group and others"), (0o640, "group"), (0o604, "others"), (0o620, "group"),
                                      (0o666, "group and others")])
def test_key_readable_or_writable_by_others_is_refused(tmp_path, mode, who):
    p = _write(tmp_path / "bridge.key", KEY.hex().encode(), mode)
    with pytest.raises(KeyFileError) as ei:
        load_key(p)
    msg = str(ei.value)
    assert str(p) in msg and f"{mode:04o}" in msg and f"chmod 600 {p}" in msg and who in msg
    assert isinstance(ei.value, BridgeError) and isinstance(ei.value, PermissionError)


def test_missing_and_malformed_key_files(tmp_path):
    with pytest.raises(KeyFileError, match="does not exist.*token_hex"):
        load_key(tmp_path / "nope.key")
    p = _write(tmp_path / "short.key", b"abcd", 0o600)
    with pytest.raises(KeyFileError, match="malformed.*64 hex digits"):
        load_key(p)
    with pytest.raises(KeyFileError, match="not a regular file"):
        read_key_file(tmp_path)
    with pytest.raises(KeyFileError, match="serial.key_file is empty"):
        load_key(None, None)


def test_systemd_credential(tmp_path, monkeypatch):
    creds = tmp_path / "creds"
    creds.mkdir(mode=0o500)
    cred = creds / "hmac-key"
    cred.write_bytes(KEY.hex().encode())
    os.chmod(cred, 0o440)  # group-readable, but inside a directory only the service can enter
    os.chmod(creds, 0o500)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    try:
        assert load_key(None, "hmac-key") == KEY
        # the credential wins over the file when both exist
        other = _write(tmp_path / "other.key", bytes(32).hex().encode(), 0o600)
        assert load_key(other, "hmac-key") == KEY
        # absent credential: fall back to the file
        assert load_key(other, "missing") == bytes(32)
        with pytest.raises(KeyFileError, match=r"\$CREDENTIALS_DIRECTORY/missing is absent"):
            load_key(None, "missing")
        # an exposed credentials directory does not excuse a group-readable file
        os.chmod(creds, 0o755)
        with pytest.raises(KeyFileError, match="0440"):
            load_key(None, "hmac-key")
    finally:
        os.chmod(creds, 0o700)


def test_fingerprint_is_stable_and_not_the_key():
    fp = key_fingerprint(KEY)
    assert fp == key_fingerprint(KEY) and len(fp) == 16 and fp not in KEY.hex()
    assert fp != key_fingerprint(bytes(32))
