#!/usr/bin/env bash
# `make bench`: venv, clips, then bench/bench.py (arguments passed through,
# e.g. --quick), then the long-form section bench/longform_batched.py
# (--model-dir and --quick passed on; its clips are made in /tmp/lf).
# Expects the release binaries and the model (make build model).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/bench/setup-venv.sh"
bash "$ROOT/bench/prepare-clips.sh" "$ROOT/bench/.venv/bin/python"
cd "$ROOT/bench"
"$ROOT/bench/.venv/bin/python" -u bench.py "$@"
LF_ARGS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) LF_ARGS+=(--quick) ;;
    --model-dir) LF_ARGS+=(--model-dir "$2"); shift ;;
    --model-dir=*) LF_ARGS+=("$1") ;;
  esac
  shift
done
exec "$ROOT/bench/.venv/bin/python" -u longform_batched.py "${LF_ARGS[@]}"
