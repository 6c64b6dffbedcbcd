# Reference controller firmware for the edge liveness runtime (MicroPython, RP2040 / ESP32).
#
# Copy to the board's filesystem: protocol.py, controller.py, board.py, main.py
# and key.hex (the 64 hex digits of the pre-shared key, the same as the
# runtime's serial.key_file), e.g. with `mpremote cp ... :`.
#
# Wiring (defaults below; change CONFIG): UART0 TX=GP0 RX=GP1 to the runtime's
# serial port (3.3 V levels, cross TX/RX, common ground); relay driver on GP15
# (active high); trigger input on GP14 to ground (button or the card reader's
# card-present line, internal pull-up); status LED on the board's LED.
#
# Fail secure: the relay pin is driven inactive before anything else runs; the
# relay is energised only by controller.py after a verified PASS for the
# session this board started; a hang is caught by the hardware watchdog, and
# the reboot that follows starts with the relay off again.

import time

import board
import controller
import protocol

CONFIG = {
    "board": {
        "uart_id": 0,
        "uart_tx": 0,
        "uart_rx": 1,
        "baudrate": 115200,
        "relay_pin": 15,
        "relay_active_high": True,
        "trigger_pin": 14,
        "trigger_pull_up": True,
        "led_pin": "LED",  # ESP32: usually 2
    },
    "pulse_ms": 1500,
    "session_timeout_ms": 6000,
    "heartbeat_interval_ms": 250,  # the runtime declares the controller lost after 750 ms
    "heartbeat_timeout_ms": 750,  # 3 intervals: one lost frame tolerated, FAULT < 1 s (PROTOCOL.md 5)
    "watchdog_ms": 3000,
    "key_file": "key.hex",
    "debug": False,  # print events on the USB console
}


def load_key(path):
    with open(path, "rb") as f:
        return protocol.parse_key(f.read())


def halt(b, why):
    # no key, no sessions: the relay stays off and the LED says so, forever
    print("edge controller halted:", why)
    b.set_led("fault")
    while True:
        b.led_tick()
        time.sleep_ms(10)


def main():
    b = board.Board(**CONFIG["board"])  # relay off first
    try:
        key = load_key(CONFIG["key_file"])
    except Exception as err:
        halt(b, "key file %s: %s" % (CONFIG["key_file"], err))
        return
    try:
        import os

        uname = os.uname()
        board_name = uname.machine
        runtime = "MicroPython " + uname.release
    except Exception:
        board_name, runtime = "unknown", "MicroPython"
    cfg = controller.ControllerConfig(
        pulse_ms=CONFIG["pulse_ms"],
        session_timeout_ms=CONFIG["session_timeout_ms"],
        heartbeat_interval_ms=CONFIG["heartbeat_interval_ms"],
        heartbeat_timeout_ms=CONFIG["heartbeat_timeout_ms"],
        info=[("role", "controller"), ("board", board_name), ("os", runtime), ("fw", "0.2.0")],
    )
    on_event = None
    if CONFIG["debug"]:
        def on_event(name, fields):
            print(name, fields)

    ctl = controller.Controller(b, key, cfg, on_event=on_event)
    wdt = None
    try:
        import machine

        wdt = machine.WDT(timeout=CONFIG["watchdog_ms"])
    except Exception as err:
        print("no watchdog:", err)
    while True:
        ctl.poll()
        b.led_tick()
        if wdt is not None:
            wdt.feed()
        time.sleep_ms(2)


main()
