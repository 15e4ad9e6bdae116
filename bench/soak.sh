#!/usr/bin/env bash
# `make soak`: installs wrk if missing (Debian package), prepares the clips,
# then runs bench/soak.py. Settings come from the environment:
#   SOAK_SECS (600), SOAK_CONNECTIONS (40), SOAK_KILL_MIN/SOAK_KILL_MAX (30/60),
#   SOAK_SEED, SOAK_BUSY_DELAY_MS (100), SOAK_BASELINE_SECS (20),
#   SOAK_CLIP (bench/clips/hello.wav), SOAK_SERVICE_ARGS (extra whisper-node flags).
# Expects the release binaries and the model (make build model).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)

install_wrk() {
    command -v wrk >/dev/null 2>&1 && return 0
    echo "soak: installing wrk (apt-get) ..." >&2
    local sudo=()
    [ "$(id -u)" -eq 0 ] || sudo=(sudo -n)
    "${sudo[@]}" apt-get update -qq >/dev/null || true
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq wrk >/dev/null
    command -v wrk >/dev/null 2>&1 || { echo "soak: could not install wrk" >&2; exit 1; }
}

install_wrk
BENCH_NO_REAL_CLIP=1 bash "$ROOT/bench/prepare-clips.sh" python3
exec python3 -u "$ROOT/bench/soak.py"
