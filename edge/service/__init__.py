"""Running edge as a hardened headless service.

- :mod:`edge.service.notify`: sd_notify over ``$NOTIFY_SOCKET`` and a progress-gated watchdog;
- :mod:`edge.service.guard`: the audit-hook privacy guard armed during sessions;
- :mod:`edge.service.harden`: no core dumps, not dumpable, memory locked;
- :mod:`edge.service.wipe`: zeroing of pixel/score buffers at session end;
- :mod:`edge.service.signals`: SIGTERM/SIGINT end the session with FAULT/SHUTDOWN;
- :mod:`edge.service.doctor`: ``edge doctor``.

Nothing here is imported by the package at start-up; each module is imported where it is used.
"""
