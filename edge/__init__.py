"""edge: on-device face-liveness runtime for embedded boards."""

__version__ = "0.1.0"
