# A stand-in for MicroPython's `machine` module: records pin and UART operations so a
# test can run the real main.py under MicroPython's WebAssembly port. WDT.feed() ends
# the main loop after a few rounds.
LOG = []
class Pin:
    OUT = 1
    IN = 0
    PULL_UP = 1
    PULL_DOWN = 2
    def __init__(self, id, mode=-1, pull=-1, value=None):
        self.id = id
        self._v = value if value is not None else 0
        LOG.append(("pin", id, mode, value))
    def value(self, v=None):
        if v is None:
            return 1 if self.id == 14 else self._v
        self._v = v
        if self.id == 15:
            LOG.append(("relay", v))
class UART:
    def __init__(self, id, **kw):
        LOG.append(("uart", id))
        self.out = []
    def any(self):
        return 0
    def read(self):
        return None
    def write(self, d):
        LOG.append(("tx", len(d)))
class Stop(Exception):
    pass
class WDT:
    def __init__(self, timeout):
        LOG.append(("wdt", timeout))
        self.n = 0
    def feed(self):
        self.n += 1
        if self.n > 30:
            raise Stop()
