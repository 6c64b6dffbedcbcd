#!/usr/bin/env bash
# The benchmark's own environment for the upstream comparison (edge bench, scripts/bench_upstream.py):
# PyTorch, OpenCV 4 (OpenCV 5 dropped the Caffe importer upstream's detector needs) and Pillow (upstream's
# code imports PIL). Never the runtime's venv: none of this goes on a door.
#
#   scripts/bench-env.sh            creates .venv-bench/ in the repository (git-ignored), the default of
#                                   `edge bench --upstream-python` and of the upstream tests
#
# Environment: PYTHON (default python3), EDGE_BENCH_VENV (default .venv-bench), TORCH_INDEX (the PyTorch
# CPU wheel index on x86_64, default https://download.pytorch.org/whl/cpu; set it empty to take torch from
# the configured index, e.g. a local mirror; on aarch64 PyPI's torch is CPU-only already).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${EDGE_BENCH_VENV:-.venv-bench}
TORCH_INDEX=${TORCH_INDEX-https://download.pytorch.org/whl/cpu}
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
index_args=()
if [ "$(uname -m)" = x86_64 ] && [ -n "$TORCH_INDEX" ]; then
  index_args=(--extra-index-url "$TORCH_INDEX")
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "${index_args[@]}" \
  "torch==2.13.0" "opencv-python-headless==4.*" "pillow>=10" "numpy"
"$VENV/bin/python" -c 'import torch, cv2, PIL; print(f"bench env ready: torch {torch.__version__}, OpenCV {cv2.__version__}, Pillow {PIL.__version__}")'
echo "use it: edge bench (default --upstream-python $VENV/bin/python) or EDGE_BENCH_UPSTREAM_PYTHON=$PWD/$VENV/bin/python" >&2
