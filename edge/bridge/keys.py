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


def read_key_file(path: str | os.PathLike, *, private_dir: bool = False) -> bytes:
    """Read and check one key file; :class:`KeyFileError` names the file and the fix."""
    p = Path(path)
    try:
        # open first, then fstat the open file: no window between check and read. O_NONBLOCK:
        # opening a FIFO for reading would otherwise wait for a writer (start-up hangs forever)
        fd = os.open(p, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError as err:
        raise KeyFileError(
            f"key file {p} does not exist; create it with: umask 077; python3 -c \"import secrets; "
            f"print(secrets.token_hex(32))\" > {p}  (and install the same key on the controller)"
        ) from err
    except OSError as err:
        raise KeyFileError(f"key file {p} cannot be opened ({err.strerror}); check serial.key_file and its owner") from err
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if (stat.S_ISCHR(st.st_mode) or
                                                                            stat.S_ISBLK(st.st_mode)) else "not a file"
            raise KeyFileError(f"key file {p} is not a regular file ({kind}); point serial.key_file at the key "
                               f"file itself (make one with: edge bridge keygen PATH)")
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
        return protocol.parse_key(data)
    except protocol.ProtocolError as err:
        raise KeyFileError(
            f"key file {p} is malformed ({err}); it must hold 32 random raw bytes or 64 hex digits: make one with "
            f"edge bridge keygen PATH"
        ) from err


def load_key(key_file: str | os.PathLike | None = None, credential: str | None = None) -> bytes:
    """The link key: from ``$CREDENTIALS_DIRECTORY/<credential>`` when systemd passed
    one, else from ``key_file``. Refuses (:class:`KeyFileError`) a key others may read."""
    cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
    if credential and cred_dir:
        path = Path(cred_dir) / credential
        if path.exists():
            # systemd makes the credentials directory private to the service (mode 0500,
            # on a non-swappable fs), so a 0440 credential file is not exposed by its mode alone
            dir_mode = stat.S_IMODE(os.stat(cred_dir).st_mode)
            log.info("bridge key from systemd credential %r", credential)
            return read_key_file(path, private_dir=not dir_mode & 0o077)
    if not key_file:
        where = f"$CREDENTIALS_DIRECTORY/{credential} is absent" if cred_dir and credential else "no systemd credential was passed"
        raise KeyFileError(
            f"the serial link needs an HMAC key, but serial.key_file is empty and {where}; set serial.key_file "
            f"to a root-only key file (chmod 600) or add LoadCredential={credential or 'hmac-key'}:/etc/edge/bridge.key "
            f"to the service unit"
        )
    log.info("bridge key from %s", key_file)
    return read_key_file(key_file)


def key_fingerprint(key: bytes) -> str:
    """A short, non-secret identifier to check both ends hold the same key (safe to log)."""
    return protocol.hmac_sha256(key, b"edge-bridge key fingerprint").hex()[:16]
