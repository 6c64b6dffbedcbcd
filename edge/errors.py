"""Exception hierarchy.

Every error the runtime raises on purpose derives from :class:`EdgeError` and
also from the built-in that fits it (the gpiozero convention), so callers that
only know the standard library still catch it sensibly. Messages say what went
wrong *and* what to do about it.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Base class of every error raised by edge."""


class ConfigError(EdgeError, ValueError):
    """A configuration value is missing, unknown, mistyped or out of range.

    ``key`` is the dotted config key (``decision.window_frames``), ``value``
    the offending value, ``expected`` a short description of the accepted form.
    """

    def __init__(self, key: str, value: object, expected: str, *, source: str | None = None):
        self.key = key
        self.value = value
        self.expected = expected
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}config key '{key}': got {value!r}; expected {expected}")


class ModelError(EdgeError, RuntimeError):
    """A model could not be found, loaded or run."""


class ModelMissingError(ModelError, FileNotFoundError):
    """A model file is absent; the message names the command that builds it."""


class ModelIntegrityError(ModelError):
    """A model file's sha256 does not match its committed manifest."""

    def __init__(self, path: str, expected: str, actual: str, rebuild: str):
        self.path = path
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"model file {path} has sha256 {actual}, but its manifest expects {expected}; "
            f"the file is corrupt, stale or tampered with. Rebuild it with: {rebuild}"
        )


class CheckpointError(ModelError):
    """A PyTorch checkpoint was refused (untrusted content) or could not be parsed."""


class CameraError(EdgeError, IOError):
    """A frame source could not be opened or read."""


class CameraLost(CameraError):
    """A frame source failed mid-session (device gone, read errors, frozen frames)."""


class BridgeError(EdgeError, IOError):
    """The controller link failed (device missing, key file unsafe, protocol error)."""


class KeyFileError(BridgeError, PermissionError):
    """The HMAC key file is missing, malformed or readable by others."""


class SessionAborted(EdgeError):
    """A running session was aborted (controller ABORT, SIGTERM)."""


class PrivacyViolation(EdgeError, PermissionError):
    """The privacy guard refused an operation (file write, non-local socket) during a session."""


class EndOfStream(CameraError, EOFError):
    """A finite source (image, video, folder) has no more frames. Not a fault."""
