"""Loading the controller link's pre-shared HMAC key.

Key format: a file holding either exactly 32 raw bytes, or 64 hex digits
(upper or lower case; surrounding whitespace and a trailing newline are
fine). Make one with::

    umask 077; python3 -c "import secrets; print(secrets.token_hex(32))" > /etc/edge/bridge.key

and put the same 64 hex digits in the controller's ``key.hex``.

The key comes from a file path or a systemd credential
(``LoadCredential=hmac-key:/etc/edge/bridge.key`` in the unit; the runtime
then reads ``$CREDENTIALS_DIRECTORY/hmac-key``). A key file that its group or
others may read or write is refused: whoever can read it can forge a PASS.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from firmware_bridge import protocol
from edge.errors import KeyFileError

log = logging.getLogger(__name__)


def _check_mode(path: Path, st: os.stat_result, *, private_dir: bool) -> None:
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 and not private_dir:
        who = []
        if mode & 0o070:
            who.append("group")
        if mode & 0o007:
            who.append("others")
        raise KeyFileError(
            f"key file {path} has mode {mode:04o}: it is readable or writable by {' and '.join(who)}, and whoever "
            f"can read it can forge a PASS. Fix it with: chmod 600 {path} (and chown it to root or the service "
            f"user), or pass it as a systemd credential (LoadCredential=)"
        )


def _parse_key(data: bytes, length: int) -> bytes:
    """``length`` raw bytes or ``2 * length`` hex digits (whitespace around them is fine)."""
    if length == protocol.KEY_LEN:
        return protocol.parse_key(data)
    text = data.strip()
    if len(data) == length and len(text) != 2 * length:
        if all(0x20 <= b < 0x7F for b in data):
            # A typed passphrase is not a random key (and has far less entropy than its length).
            raise protocol.ProtocolError(f"{length} printable characters look like a passphrase, not a random key")
        return bytes(data)
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError) as err:
        raise protocol.ProtocolError(f"neither {length} raw bytes nor {2 * length} hex digits") from err
    if len(key) != length:
        raise protocol.ProtocolError(f"{len(key)} bytes of hex, expected {length}")
    return key


def read_key_file(path: str | os.PathLike, *, private_dir: bool = False, length: int = protocol.KEY_LEN,
                  setting: str = "serial.key_file") -> bytes:
    """Read and check one key file of ``length`` bytes (the serial link's HMAC key by default,
    the 16-byte OSDP SCBK with ``length=16``); :class:`KeyFileError` names the file and the fix."""
    p = Path(path)
    make = f"umask 077; python3 -c \"import secrets; print(secrets.token_hex({length}))\" > {p}"
    try:
        # open first, then fstat the open file: no window between check and read. O_NONBLOCK:
        # opening a FIFO for reading would otherwise wait for a writer (start-up hangs forever)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise KeyFileError(
            f"key file {p} does not exist; create it with: {make}  (and install the same key on the controller)"
        ) from err
    except OSError as err:
        raise KeyFileError(f"key file {p} cannot be opened ({err.strerror}); check {setting} and its owner") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (stat.S_ISCHR(st.st_mode) or
                                                                            stat.S_ISBLK(st.st_mode)) else "not a file"
            raise KeyFileError(f"key file {p} is not a regular file ({kind}); point {setting} at the key file itself")
        os.set_blocking(fd, True)
        _check_mode(p, st, private_dir=private_dir)
        if st.st_uid not in (0, os.geteuid()):
            log.warning("key file %s is owned by uid %d, neither root nor this process: that user can read the key",
                        p, st.st_uid)
        with os.fdopen(fd, "rb", closefd=True) as f:
            fd = -1
            data = f.read(4096)
    finally:
        if fd >= 0:
            os.close(fd)
    try:
        return _parse_key(data, length)
    except protocol.ProtocolError as err:
        raise KeyFileError(
            f"key file {p} is malformed ({err}); it must hold {length} random raw bytes or {2 * length} hex digits: "
            + ("make one with edge bridge keygen PATH" if length == protocol.KEY_LEN else
               f"make one with python3 -c \"import secrets; print(secrets.token_hex({length}))\"")
        ) from err


def load_key(key_file: str | os.PathLike | None = None, credential: str | None = None, *,
             length: int = protocol.KEY_LEN, setting: str = "serial.key_file", what: str = "the serial link needs an HMAC key") -> bytes:
    """The link key: from ``$CREDENTIALS_DIRECTORY/<credential>`` when systemd passed
    one, else from ``key_file``. Refuses (:class:`KeyFileError`) a key others may read.
    ``length``/``setting``/``what`` describe the key for the OSDP SCBK (16 bytes)."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and cred_dir:
        path = Path(cred_dir) / credential
        if path.exists():
            # systemd makes the credentials directory private to the service (mode 0500,
            # on a non-swappable fs), so a 0440 credential file is not exposed by its mode alone
            dir_mode = stat.S_IMODE(os.stat(cred_dir).st_mode)
            log.info("bridge key from systemd credential %r", credential)
            return read_key_file(path, private_dir=not dir_mode & 0o077, length=length, setting=setting)
    if not key_file:
        where = f"$CREDENTIALS_DIRECTORY/{credential} is absent" if cred_dir and credential else "no systemd credential was passed"
        raise KeyFileError(
            f"{what}, but {setting} is empty and {where}; set {setting} "
            f"to a root-only key file (chmod 600) or add LoadCredential={credential or 'hmac-key'}:/etc/edge/<key file> "
            f"to the service unit"
        )
    log.info("bridge key from %s", key_file)
    return read_key_file(key_file, length=length, setting=setting)


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret identifier to check both ends hold the same key (safe to log)."""
    return protocol.hmac_sha256(key, b"edge-bridge key fingerprint").hex()[:16]
