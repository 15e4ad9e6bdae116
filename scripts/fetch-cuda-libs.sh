#!/usr/bin/env bash
# Usage: scripts/fetch-cuda-libs.sh [ENGINE_DIR]
#
# The CUDA run-time libraries the prebuilt engine loads for --device cuda,
# from NVIDIA's PyPI packages (as faster-whisper documents), put where the
# engine finds them without LD_LIBRARY_PATH: beside it in ENGINE_DIR
# (default engine/lib; libctranslate2's own RPATH is $ORIGIN).
#
# What the engine loads (read from the library's strings): the driver,
# libcuda.so.1, which comes with the NVIDIA driver and is never installed
# here; and cuBLAS, libcublas.so.12 (which needs libcublasLt.so.12), from
# nvidia-cublas-cu12. It is built without cuDNN: none is needed. cudart is
# linked into the engine statically.
#
# The package is installed with `pip install --target` into
# ENGINE_DIR/../cuda (~800 MB), and ENGINE_DIR gets links to its libraries.
# `make install` copies the libraries themselves. Idempotent.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENGINE_DIR=${1:-$ROOT/engine/lib}
CUDA_DIR=$(dirname "$ENGINE_DIR")/cuda
PINS="nvidia-cublas-cu12==12.9.1.4"
say() { echo "fetch-cuda-libs: $*"; }

[ -e "$ENGINE_DIR/libctranslate2.so" ] ||
    { echo "fetch-cuda-libs: error: no engine in $ENGINE_DIR; run make engine first" >&2; exit 1; }
if [ "$(cat "$CUDA_DIR/.pins" 2>/dev/null)" != "$PINS" ]; then
    say "installing $PINS into $CUDA_DIR (pip)"
    part=$(mktemp -d "$(dirname "$CUDA_DIR")/.cuda.XXXXXX")
    trap 'rm -rf "$part"' EXIT
    PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check \
        --no-input --no-deps --only-binary=:all: --target "$part" $PINS
    echo "$PINS" >"$part/.pins"
    rm -rf "$CUDA_DIR"
    mv "$part" "$CUDA_DIR"
    trap - EXIT
fi
for lib in libcublas.so.12 libcublasLt.so.12; do
    src=$(find "$CUDA_DIR" -name "$lib" -print -quit)
    [ -n "$src" ] || { echo "fetch-cuda-libs: error: $lib not in $CUDA_DIR" >&2; exit 1; }
    ln -sfn "$src" "$ENGINE_DIR/$lib"
done
say "ok: cuBLAS ($PINS) beside the engine in $ENGINE_DIR; the NVIDIA driver (libcuda.so.1) must come from the system"
