#!/usr/bin/env bash
# Realtime benchmark (issue 14's targets; not a test): starts the node on
# a free port and streams CLIP at real-time pace through /v1/realtime with
# examples/realtime_bench.rs, first 1 session, then 10 concurrent ones.
#
# usage: bench/realtime.sh [CLIP] [MODEL_DIR] [NODE FLAGS…]
#   e.g. bench/realtime.sh "" "" --realtime-partial-interval-ms 1000
#   CLIP: a 16 kHz WAV of real speech (default bench/clips/jfk.wav from
#   bench/prepare-clips.sh, else tests/fixtures/speech/clip10.wav)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
CLIP=${1:-}; CLIP=${CLIP:-$ROOT/bench/clips/jfk.wav}
[ -f "$CLIP" ] || CLIP=$ROOT/tests/fixtures/speech/clip10.wav
MODEL=${2:-}; MODEL=${MODEL:-$ROOT/models/tiny.en}
cd "$ROOT"
cargo build --release --quiet --bin whisper-node --example realtime_bench
cargo build --release --quiet -p worker-proc
# Partial results off unless asked for (extra flags win over the variable).
export WHISPER_NODE_REALTIME_PARTIAL_INTERVAL_MS=${WHISPER_NODE_REALTIME_PARTIAL_INTERVAL_MS:-0}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$TARGET/release/whisper-node" --listen "127.0.0.1:$PORT" --model-dir "$MODEL" \
    --worker-path "$TARGET/release/worker-proc" --threads 2 --disable-jobs \
    "${@:3}" 2>/tmp/realtime-bench-node.log &
NODE=$!
trap 'kill $NODE 2>/dev/null || true' EXIT
for _ in $(seq 200); do curl -fs "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 0.2; done
echo "clip: $CLIP"
echo "== 1 session =="
"$TARGET/release/examples/realtime_bench" "http://127.0.0.1:$PORT" "$CLIP" --sessions 1 --repeat 6 --pid $NODE
echo "== 10 sessions =="
"$TARGET/release/examples/realtime_bench" "http://127.0.0.1:$PORT" "$CLIP" --sessions 10 --repeat 3 --pid $NODE
