#!/usr/bin/env bash
# `make overload`: the bench venv (for the clips), the peer's venv
# (bench/.venv-peer: faster-whisper-server 0.0.3 from PyPI, pinned in
# bench/requirements-peer.txt), the JFK clip, then bench/overload.py.
# Arguments go to overload.py (OVERLOAD_ARGS in make); NODE_ARGS adds
# whisper-node flags. Expects the release binaries and the model.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
bash "$ROOT/bench/setup-venv.sh"
bash "$ROOT/bench/setup-venv.sh" peer || echo "overload: the peer's venv could not be made; node only" >&2
bash "$ROOT/bench/prepare-clips.sh" "$ROOT/bench/.venv/bin/python"
[ -s "$ROOT/bench/clips/jfk.wav" ] || { echo "overload: bench/clips/jfk.wav is missing (see prepare-clips.sh)" >&2; exit 1; }
# The load generator, examples/overload_client.rs, is built by `make overload`.
peer=()
[ -x "$ROOT/bench/.venv-peer/bin/faster-whisper-server" ] || peer=(--no-peer)
exec python3 -u "$ROOT/bench/overload.py" "${peer[@]}" "$@"
