"""Relay output and trigger input through gpiozero, on its MockFactory (pin states read back)."""

from __future__ import annotations

import time

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory

from edge.bridge.base import SessionRequest
from edge.bridge.gpio import GpioRelay, GpioTrigger, Relay, RelaySink
from edge.types import Reason, Verdict, VerdictKind


@pytest.fixture
def factory():
    f = MockFactory()
    old = Device.pin_factory
    Device.pin_factory = f
    try:
        yield f
    finally:
        Device.pin_factory = old
        f.reset()


def _wait(pred, timeout=3.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end and not pred():
        time.sleep(0.005)
    return pred()


@pytest.mark.parametrize("active_high,idle_level", [(True, False), (False, True)])
def test_relay_starts_off_at_the_right_level(factory, active_high, idle_level):
    relay = GpioRelay(17, active_high=active_high)
    pin = factory.pin(17)
    assert isinstance(relay, Relay)
    assert relay.is_on is False and pin.state == idle_level
    relay.close()


@pytest.mark.parametrize("active_high", [True, False])
def test_pulse_levels_and_timing(factory, active_high):
    relay = GpioRelay(17, active_high=active_high)
    pin = factory.pin(17)
    on_level = bool(active_high)
    pin.clear_states()
    t0 = time.monotonic()
    relay.pulse(0.2)
    assert _wait(lambda: relay.is_on)
    assert pin.state == on_level
    assert _wait(lambda: not relay.is_on, 3.0)
    elapsed = time.monotonic() - t0
    assert pin.state == (not on_level)
    states = [(s.timestamp, bool(s.state)) for s in pin.states]
    levels = [lvl for _, lvl in states]
    assert levels[-2:] == [on_level, not on_level]
    width = states[-1][0] - states[-2][0]
    assert 0.15 <= width <= 1.5 and elapsed >= 0.15  # generous: a loaded CI box is not real time
    relay.close()


def test_off_cuts_a_pulse_and_close_leaves_it_off(factory):
    relay = GpioRelay(5)
    pin = factory.pin(5)
    relay.pulse(10.0)
    assert _wait(lambda: pin.state is True or pin.state == 1)
    relay.off()
    assert not relay.is_on and not pin.state
    relay.pulse(10.0)
    assert _wait(lambda: relay.is_on)
    relay.close()
    relay.close()
    assert not relay.is_on


def test_relay_sink_pulses_only_on_pass(factory):
    relay = GpioRelay(17)
    pin = factory.pin(17)
    sink = RelaySink(relay, pulse_ms=150)
    req = SessionRequest(1)
    for kind in (VerdictKind.FAIL, VerdictKind.NO_FACE, VerdictKind.TIMEOUT, VerdictKind.FAULT):
        sink.result(req, Verdict(kind, Reason.NONE, 0, 0, 10, 1))
    time.sleep(0.05)
    assert not any(s.state for s in pin.states)
    sink.result(req, Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 3, 10, 1))
    assert _wait(lambda: relay.is_on)
    assert _wait(lambda: not relay.is_on)
    assert [bool(s.state) for s in pin.states].count(True) == 1
    # a fault during a pulse forces it off at once
    sink.result(req, Verdict(VerdictKind.PASS, Reason.LIVE_CONFIRMED, 3, 3, 10, 1))
    assert _wait(lambda: relay.is_on)
    sink.fault(Reason.CAMERA_LOST)
    assert not relay.is_on
    sink.close()


@pytest.mark.parametrize("pull_up", [True, False])
def test_trigger_input_edge_makes_a_session(factory, pull_up):
    trig = GpioTrigger(27, pull_up=pull_up, bounce_ms=0)
    pin = factory.pin(27)
    assert trig.wait(0.05) is None
    (pin.drive_low if pull_up else pin.drive_high)()
    req = trig.wait(2.0)
    assert req is not None and req.origin == "gpio" and req.session_id == 1 and req.nonce == b""
    (pin.drive_high if pull_up else pin.drive_low)()
    # presses during the session (before the runner waits again) are dropped
    (pin.drive_low if pull_up else pin.drive_high)()
    (pin.drive_high if pull_up else pin.drive_low)()
    assert trig.wait(0.05) is None
    # presses while one is still queued coalesce into one session
    for _ in range(3):
        (pin.drive_low if pull_up else pin.drive_high)()
        (pin.drive_high if pull_up else pin.drive_low)()
    assert trig.wait(2.0).session_id == 2
    assert trig.wait(0.05) is None
    trig.close()
    trig.close()


def test_trigger_without_pull_needs_active_state(factory):
    trig = GpioTrigger(22, pull_up=None, active_high=True, bounce_ms=0)
    factory.pin(22).drive_high()
    assert trig.wait(2.0) is not None
    trig.close()
