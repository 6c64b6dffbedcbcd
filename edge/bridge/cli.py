"""``edge bridge``: make and check the controller link's pre-shared key.

    edge bridge keygen /etc/edge/bridge.key     # 64 hex digits, mode 0600, never overwrites
    edge bridge fingerprint --key-file /etc/edge/bridge.key

Copy the key file's contents to the controller as ``key.hex``. The fingerprint
(a MAC of a fixed string, not the key) is safe to print and compare between
both ends: the simulator prints the same value in its ``key`` event.
"""

from __future__ import annotations

import os
import secrets
import sys
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("bridge", help="controller link: make or check the pre-shared HMAC key")
    sub = p.add_subparsers(dest="bridge_command", metavar="ACTION", required=True)
    k = sub.add_parser("keygen", help="write a new random key (64 hex digits, mode 0600; refuses to overwrite)")
    k.add_argument("path")
    k.set_defaults(func=cmd_keygen)
    f = sub.add_parser("fingerprint", help="print the key's fingerprint (safe to share) after the permission checks")
    f.add_argument("--key-file", help="key file (default: serial.key_file of --config)")
    f.add_argument("--config", help="TOML config to take serial.key_file / serial.key_credential from")
    f.set_defaults(func=cmd_fingerprint)


def cmd_keygen(args) -> int:
    from edge.bridge.keys import key_fingerprint

    key = secrets.token_bytes(32)
    try:
        fd = os.open(args.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"edge bridge keygen: {args.path} exists; not overwriting a key (delete it first if you mean it)",
              file=sys.stderr)
        return 2
    except OSError as err:
        print(f"edge bridge keygen: cannot create {args.path}: {err.strerror}", file=sys.stderr)
        return 2
    with os.fdopen(fd, "w") as f:  # persistence-ok: the HMAC key at set-up (edge bridge keygen), never session data
        os.fchmod(f.fileno(), 0o600)  # whatever the umask said
        f.write(key.hex() + "\n")
    print(f"wrote {args.path} (mode 0600), fingerprint {key_fingerprint(key)}; copy it to the controller as key.hex")
    return 0


def cmd_fingerprint(args) -> int:
    from edge.bridge.keys import key_fingerprint, load_key
    from edge.errors import KeyFileError

    key_file, credential = args.key_file, None
    if not key_file:
        from edge import config as config_mod

        cfg = config_mod.load(args.config)
        key_file, credential = cfg.serial.key_file or None, cfg.serial.key_credential or None
    try:
        key = load_key(key_file, credential)
    except KeyFileError as err:
        print(f"edge bridge fingerprint: {err}", file=sys.stderr)
        return 2
    print(key_fingerprint(key))
    return 0
