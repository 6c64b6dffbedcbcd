"""protocol.py and controller.py under real MicroPython (its WebAssembly port, run by node).

Skipped when node or the npm package @micropython/micropython-webassembly-pyscript
is absent (``npm install -g @micropython/micropython-webassembly-pyscript``, or
point EDGE_MICROPYTHON_MJS at its micropython.mjs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FW = HERE.parent

RUNNER = r"""
import fs from "fs";
import { pathToFileURL } from "url";
const [mjs, ...files] = process.argv.slice(2);
const { loadMicroPython } = await import(pathToFileURL(mjs).href);
let out = "";
const mp = await loadMicroPython({ stdout: (l) => { out += l + "\n"; }, stderr: (l) => process.stderr.write(l + "\n") });
for (const f of files.slice(0, -1)) {
  const [src, dst] = f.includes("=") ? f.split("=") : [f, f.split("/").pop()];
  mp.FS.writeFile("/" + dst, fs.readFileSync(src));
}
mp.runPython("import sys, os\nsys.path.append('/')\nos.chdir('/')");
try { mp.runPython(fs.readFileSync(files[files.length - 1], "utf8")); }
catch (e) { process.stderr.write(String(e) + "\n"); process.exit(1); }
process.stdout.write(out);
"""


def _micropython_mjs() -> str | None:
    env = os.environ.get("EDGE_MICROPYTHON_MJS")
    if env:
        return env if Path(env).is_file() else None
    npm = shutil.which("npm")
    if not npm or not shutil.which("node"):
        return None
    try:
        root = subprocess.run([npm, "root", "-g"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return None
    p = Path(root) / "@micropython" / "micropython-webassembly-pyscript" / "micropython.mjs"
    return str(p) if p.is_file() else None


def test_same_transcript_on_micropython_and_cpython(tmp_path):
    mjs = _micropython_mjs()
    if mjs is None:
        pytest.skip("MicroPython WebAssembly port not installed (npm install -g @micropython/micropython-webassembly-pyscript)")
    runner = tmp_path / "run.mjs"
    runner.write_text(RUNNER)
    scenario = HERE / "mpy_scenario.py"
    mpy = subprocess.run(
        ["node", str(runner), mjs, str(FW / "protocol.py"), str(FW / "controller.py"), str(scenario)],
        capture_output=True, text=True, timeout=120,
    )
    assert mpy.returncode == 0, mpy.stderr
    cpy = subprocess.run([sys.executable, str(scenario)], capture_output=True, text=True, timeout=60,
                         cwd=FW.parent, env={**os.environ, "PYTHONPATH": str(FW.parent)})
    assert cpy.returncode == 0, cpy.stderr
    assert mpy.stdout.splitlines() == cpy.stdout.splitlines()
    lines = cpy.stdout.splitlines()
    relay = [x for x in lines if x.startswith("relay ")][0].split()[1:]
    assert [r.split(":")[1] for r in relay] == ["0", "1", "0"]  # boot off, PASS on, pulse end off
    stats = dict(kv.split("=") for kv in [x for x in lines if x.startswith("stats ")][0].split()[1:])
    assert stats["wrong_nonce"] == "1" and stats["garbage"] == "1"


DRIVER = """
import machine
import board
class _Rng:  # the WebAssembly port has no os.urandom; a board has its TRNG there
    n = 0
    @staticmethod
    def urandom(k):
        _Rng.n += 1
        return bytes([(_Rng.n * 31 + i) & 0xFF for i in range(k)])
board.os = _Rng
try:
    import main
except machine.Stop:
    pass
for e in machine.LOG:
    print(repr(e))
"""


def test_main_py_boots_with_relay_off_first_on_micropython(tmp_path):
    mjs = _micropython_mjs()
    if mjs is None:
        pytest.skip("MicroPython WebAssembly port not installed (npm install -g @micropython/micropython-webassembly-pyscript)")
    runner = tmp_path / "run.mjs"
    runner.write_text(RUNNER)
    (tmp_path / "key.hex").write_text(bytes(range(32)).hex() + "\n")
    (tmp_path / "drive.py").write_text(DRIVER)
    files = [str(FW / n) for n in ("protocol.py", "controller.py", "board.py", "main.py")]
    files += [f"{HERE / 'mpy_fake_machine.py'}=machine.py", str(tmp_path / "key.hex"), str(tmp_path / "drive.py")]
    r = subprocess.run(["node", str(runner), mjs, *files], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    import ast

    log = [ast.literal_eval(line) for line in r.stdout.splitlines()]
    # the relay pin is the very first thing touched, as an output at its inactive level
    assert log[0] == ("pin", 15, 1, 0)
    assert [e for e in log if e[0] == "relay"] == [("relay", 0)]
    assert ("wdt", 3000) in log
    assert any(e[0] == "tx" and e[1] > 40 for e in log)  # the v2 HELLO (two 16-byte randoms) went out
