#!/usr/bin/env bash
# `make bench`: venv, clips, then bench/bench.py (arguments passed through,
# e.g. --quick). Expects the release binaries and the model (make build model).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/bench/setup-venv.sh"
bash "$ROOT/bench/prepare-clips.sh" "$ROOT/bench/.venv/bin/python"
cd "$ROOT/bench"
exec "$ROOT/bench/.venv/bin/python" -u bench.py "$@"
