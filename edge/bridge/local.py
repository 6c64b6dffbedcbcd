"""Bridges that need no controller: the ``always`` trigger, the stdout sink, fan-out."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from typing import IO, Sequence

from edge.bridge.base import SessionRequest, VerdictSink
from edge.types import Prompt, Reason, Verdict

log = logging.getLogger(__name__)


class AlwaysTrigger:
    """A new session as soon as the previous one ended (continuous gate mode, demos).

    The runner calls :meth:`wait` only between sessions, so each call starts
    the next one. With ``max_sessions`` set, :meth:`wait` returns None and
    :attr:`exhausted` becomes true after that many; the runner then stops.
    """

    def __init__(self, max_sessions: int | None = None, pause_s: float = 0.0):
        self.max_sessions = max_sessions or None
        self.pause_s = pause_s
        self.started = 0
        self._closed = threading.Event()
        self._pause_until: float | None = None

    @property
    def exhausted(self) -> bool:
        return self._closed.is_set() or (self.max_sessions is not None and self.started >= self.max_sessions)

    def wait(self, timeout_s: float) -> SessionRequest | None:
        if self.exhausted:
            return None
        if self.pause_s > 0 and self.started:
            now = time.monotonic()
            if self._pause_until is None:  # first wait after a session: the pause starts now
                self._pause_until = now + self.pause_s
            left = self._pause_until - now
            if left > 0:
                self._closed.wait(min(left, max(0.0, timeout_s)))
                if self._closed.is_set() or time.monotonic() < self._pause_until:
                    return None
        self._pause_until = None
        self.started += 1
        return SessionRequest(session_id=self.started, origin="local")

    def close(self) -> None:
        self._closed.set()


class JsonLinesSink:
    """One JSON object per verdict (``Verdict.to_dict()``) on stdout, for ``edge run`` without a
    controller; with ``prompts``, also one per prompt (``{"prompt": "BLINK", "text": "Blink",
    "session_id": 1}``: a line with a ``prompt`` key is advice, one with ``verdict`` the outcome)."""

    def __init__(self, stream: IO[str] | None = None, *, prompts: bool = False):
        self._stream = stream
        self._prompts = prompts
        self._lock = threading.Lock()

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        if self._prompts:
            self._write({"prompt": prompt.name, "text": prompt.text, "session_id": request.session_id})

    def result(self, request: SessionRequest, verdict: Verdict) -> None:
        self._write(verdict.to_dict())

    def _write(self, obj: dict) -> None:
        line = json.dumps(obj, separators=(",", ":"))
        with self._lock:
            stream = self._stream or sys.stdout
            stream.write(line + "\n")
            stream.flush()

    def close(self) -> None:
        pass


class MultiSink:
    """Fans prompts and verdicts out to several sinks. One failing sink does not starve the
    others (a dead serial line must not keep the local relay from being forced off); the
    first error is raised after all were tried."""

    def __init__(self, sinks: Sequence[VerdictSink]):
        self.sinks = tuple(sinks)

    def _each(self, method: str, *args):
        first: BaseException | None = None
        for s in self.sinks:
            fn = getattr(s, method, None)
            if fn is None:
                continue
            try:
                fn(*args)
            except Exception as err:
                log.error("%s.%s failed: %s", type(s).__name__, method, err)
                first = first or err
        if first is not None:
            raise first

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        self._each("prompt", request, prompt)

    def result(self, request: SessionRequest, verdict: Verdict) -> None:
        self._each("result", request, verdict)

    def fault(self, reason: Reason = Reason.INTERNAL_ERROR, detail: str = "", session_id: int = 0) -> None:
        self._each("fault", reason, detail, session_id)

    def close(self) -> None:
        self._each("close")


class NullSink:
    """Accepts everything, does nothing (a trigger-only bridge)."""

    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        pass

    def result(self, request: SessionRequest, verdict: Verdict) -> None:
        pass

    def close(self) -> None:
        pass
