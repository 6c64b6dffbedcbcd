# Board shim of the reference firmware (MicroPython: RP2040, ESP32).
#
# Everything controller.py needs from the hardware, and nothing else. The
# simulator's SimBoard (firmware_bridge/sim.py) implements the same methods on
# CPython. Pin numbers and polarities come from main.py's CONFIG.

import os
import time

import machine

# LED patterns: (on_ms, off_ms); None = steady off, (1, 0) = steady on
_LED_PATTERNS = {
    "down": (100, 900),  # no runtime: short blip once a second
    "idle": (1, 0),
    "busy": (100, 100),
    "pass": (1, 0),
    "fail": (0, 1),
    "fault": (50, 50),
}


class Board:
    def __init__(self, uart_id=0, uart_tx=0, uart_rx=1, baudrate=115200, relay_pin=15, relay_active_high=True,
                 trigger_pin=14, trigger_pull_up=True, led_pin="LED"):
        # The relay pin is set to its inactive level in the same call that makes it an
        # output, so a (re)boot never glitches the door open.
        self._relay_on_level = 1 if relay_active_high else 0
        self._relay = machine.Pin(relay_pin, machine.Pin.OUT, value=1 - self._relay_on_level)
        self._uart = machine.UART(uart_id, baudrate=baudrate, tx=machine.Pin(uart_tx), rx=machine.Pin(uart_rx),
                                  rxbuf=1024, timeout=0)
        pull = machine.Pin.PULL_UP if trigger_pull_up else machine.Pin.PULL_DOWN
        self._trigger = machine.Pin(trigger_pin, machine.Pin.IN, pull)
        self._trigger_on_level = 0 if trigger_pull_up else 1
        self._led = machine.Pin(led_pin, machine.Pin.OUT, value=0) if led_pin is not None else None
        self._led_mode = "down"
        self._led_since = time.ticks_ms()

    # clocks (wrap-safe helpers from MicroPython's time module)
    def ticks_ms(self):
        return time.ticks_ms()

    def ticks_diff(self, a, b):
        return time.ticks_diff(a, b)

    def ticks_add(self, a, delta):
        return time.ticks_add(a, delta)

    def uart_read(self):
        if self._uart.any():
            return self._uart.read()
        return None

    def uart_write(self, data):
        self._uart.write(data)

    def set_relay(self, on):
        self._relay.value(self._relay_on_level if on else 1 - self._relay_on_level)

    def trigger_active(self):
        return self._trigger.value() == self._trigger_on_level

    def set_led(self, mode):
        self._led_mode = mode
        self._led_since = time.ticks_ms()

    def led_tick(self):
        """Call from the main loop: drives the status LED pattern of the current mode."""
        if self._led is None:
            return
        on_ms, off_ms = _LED_PATTERNS.get(self._led_mode, (50, 50))
        if off_ms == 0 or on_ms == 0:
            self._led.value(1 if on_ms else 0)
            return
        phase = time.ticks_diff(time.ticks_ms(), self._led_since) % (on_ms + off_ms)
        self._led.value(1 if phase < on_ms else 0)

    def random_bytes(self, n):
        # os.urandom is the hardware RNG on RP2040 (ROSC) and ESP32
        return os.urandom(n)

    def relay_off(self):
        self.set_relay(False)
