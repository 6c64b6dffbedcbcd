"""Seams between the session runner and the outside world.

A :class:`Trigger` tells the runtime when to start a session (serial START from
the controller, a GPIO input, or "always" for continuous gate mode and demos).
A :class:`VerdictSink` receives prompts and the final verdict (serial link,
relay, stdout JSON lines). The runner knows nothing about wires.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Callable, Protocol, runtime_checkable

from edge.types import Prompt, Verdict


@dataclass(frozen=True)
class SessionRequest:
    """A request to run one liveness session.

    ``nonce`` is the controller's fresh nonce (empty for local triggers); the
    RESULT sent back binds it so a recorded PASS cannot be replayed. ``cancel``
    is set by the trigger when the session must stop early (controller ABORT,
    SIGTERM); the runner then ends it with FAULT/ABORTED.
    """

    session_id: int
    nonce: bytes = b""
    origin: str = "local"  # "serial", "gpio", "local"
    deadline_ms: int | None = None  # controller's own deadline, if it sent one
    # 1:1 comparison: the enrolled person's template sent by the controller (biometric data:
    # held only for this session, never logged). Empty: liveness only.
    template: bytes = field(default=b"", repr=False)
    # Active liveness: an explicit challenge order (offline files and demos only; refused in
    # service mode and on the wire). Empty: the order is drawn (from the nonce when there is one).
    challenge: tuple[str, ...] = ()
    # Active liveness: HMAC(link key, nonce || "challenge") from a controller's START, so the
    # controller can know the order asked (firmware_bridge.challenge). Empty: drawn locally.
    challenge_seed: bytes = field(default=b"", repr=False)
    cancel: threading.Event = field(default_factory=threading.Event, compare=False, repr=False)


@runtime_checkable
class Trigger(Protocol):
    def wait(self, timeout_s: float) -> SessionRequest | None:
        """Block up to ``timeout_s`` for the next session request; None on timeout."""

    def close(self) -> None: ...


def wait_for_request(requests: "queue.Queue[SessionRequest]", timeout_s: float,
                     raise_if_failed: Callable[[], None]) -> SessionRequest | None:
    """:meth:`Trigger.wait` of a bridge whose reader thread queues requests: a dead link raises before
    and after the wait, so the runner learns of it within one wait."""
    raise_if_failed()
    try:
        return requests.get(timeout=max(0.0, timeout_s))
    except queue.Empty:
        raise_if_failed()
        return None


@runtime_checkable
class VerdictSink(Protocol):
    def prompt(self, request: SessionRequest, prompt: Prompt) -> None:
        """Tell the person something (deduplicated by the caller)."""

    def result(self, request: SessionRequest, verdict: Verdict) -> None:
        """Deliver the verdict (a serial sink repeats it until ACKed or the deadline)."""

    def close(self) -> None: ...
