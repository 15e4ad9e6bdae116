#!/usr/bin/env bash
# Creates bench/.venv (git-ignored) with the pinned packages of
# bench/requirements.txt: faster-whisper (the reference engine), jiwer (WER)
# and psutil. Idempotent: does nothing when the venv matches the pins.
# Nothing is fetched from a model hub: the harness loads the CTranslate2 model
# directory (models/tiny.en) directly.
#
# `setup-venv.sh peer`: bench/.venv-peer with bench/requirements-peer.txt
# (faster-whisper-server, the peer of `make overload`), the same way.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=$ROOT/bench/.venv
REQ=$ROOT/bench/requirements.txt
if [ "${1:-}" = peer ]; then
    VENV=$ROOT/bench/.venv-peer
    REQ=$ROOT/bench/requirements-peer.txt
fi
stamp=$VENV/.requirements.sha256
want=$(sha256sum "$REQ" | cut -d' ' -f1)
if [ -x "$VENV/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    exit 0
fi
PY=${PYTHON:-python3}
command -v "$PY" >/dev/null || { echo "setup-venv: $PY not found (make system)" >&2; exit 1; }
echo "setup-venv: creating $VENV (pinned packages of $(basename "$REQ") from PyPI) ..." >&2
"$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ"
echo "$want" >"$stamp"
