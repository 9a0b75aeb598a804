#!/usr/bin/env bash
# The wheel alone: build it, install it with its dependencies into a new virtual environment, and run
# .ci/wheel_smoke.py from an empty folder, where no repository file can be imported by accident.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

python -m pip wheel --quiet --no-deps --wheel-dir "$WORK/dist" .
python3 -m venv "$WORK/venv"
"$WORK/venv/bin/python" -m pip install --quiet --upgrade pip
"$WORK/venv/bin/python" -m pip install --quiet -c "$ROOT/.ci/constraints.txt" "$WORK"/dist/*.whl
mkdir "$WORK/empty"
cd "$WORK/empty"
HF_HUB_OFFLINE=1 "$WORK/venv/bin/python" "$ROOT/.ci/wheel_smoke.py"
