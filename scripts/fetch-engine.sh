#!/usr/bin/env bash
# Usage: scripts/fetch-engine.sh [DEST]
#
# Installs the inference engine worker-proc links: the prebuilt shared
# CTranslate2 library of the PyPI `ctranslate2` wheel, the very library
# faster-whisper runs (CPU dispatch with oneDNN, MKL on Intel; CUDA 12
# kernels whose cudart/cuBLAS/cuDNN it loads at run time), into DEST
# (default: engine/lib under the repository root, git-ignored).
#
# The wheel is fetched with `pip download` for a fixed platform and Python
# tag (the library inside is the same for every CPython tag), checked
# against a pinned sha256, cached in ${XDG_CACHE_HOME:-~/.cache}/whisper-node
# and unpacked atomically. Only its shared libraries are kept:
#   libctranslate2-<hash>.so.4.8.4   the engine (SONAME with the hash)
#   libgomp-<hash>.so.1.0.0          its OpenMP runtime (found through the
#                                    engine's own RPATH $ORIGIN)
#   libctranslate2.so                a link for the linker's -lctranslate2
#   VERSION                          what was installed, for the build and
#                                    for people
#
# The version is the one ct2rs 0.10.3 (vendor/ct2rs) is written against.
# Prebuilt for Linux x86_64 only (the aarch64 wheel splits the library
# differently); elsewhere build the engine from source (README: "Engine").
#
# Idempotent: when DEST/VERSION names the pinned wheel it does nothing.
#
# Environment:
#   WHISPER_NODE_CACHE_DIR     where the wheel is kept (default above)
#   WHISPER_NODE_ENGINE_WHEEL  use this local wheel instead of downloading
#                              (still checked against the pinned sha256)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/engine/lib}

PACKAGE=ctranslate2
VERSION=4.8.4
CACHE=${WHISPER_NODE_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/whisper-node}

say() { echo "fetch-engine: $*"; }
die() { echo "fetch-engine: error: $*" >&2; exit 1; }
sha256() { sha256sum "$1" | cut -d' ' -f1; }
# shellcheck source=scripts/cached-wheel.sh
. "$ROOT/scripts/cached-wheel.sh"

case "$(uname -s)/$(uname -m)" in
Linux/x86_64)
    PLATFORM=manylinux_2_28_x86_64
    WHEEL=ctranslate2-4.8.4-cp311-cp311-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
    WHEEL_SHA256=1037b3f51d18f1546120686670d71fcdaf85a0500fffccc56d8439ded5d284e5
    ;;
*)
    die "no prebuilt engine for $(uname -s)/$(uname -m); build it from source: make build ENGINE=source (README, \"Engine\")"
    ;;
esac
STAMP="$PACKAGE $VERSION $WHEEL sha256:$WHEEL_SHA256"

if [ -f "$DEST/VERSION" ] && [ "$(head -n1 "$DEST/VERSION")" = "$STAMP" ] && [ -e "$DEST/libctranslate2.so" ]; then
    say "engine already present in $DEST ($PACKAGE $VERSION; nothing to do)"
    exit 0
fi

# 1. The wheel, from the cache, a given file, or PyPI.
cached_wheel "$WHEEL" "$WHEEL_SHA256" "${WHISPER_NODE_ENGINE_WHEEL:-}" "~42 MB" --platform "$PLATFORM" --python-version 3.11 --implementation cp "$PACKAGE==$VERSION"

# 2. Unpack the shared libraries into a temporary folder beside DEST, then
#    rename it into place.
parent=$(dirname "$DEST")
mkdir -p "$parent"
tmp=$(mktemp -d "$parent/.$(basename "$DEST").tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
lib=$(python3 - "$cached" "$tmp" <<'PY'
import os, shutil, stat, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
engine = None
with zipfile.ZipFile(wheel) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith("ctranslate2.libs/") or name.endswith("/"):
            continue
        base = name.rsplit("/", 1)[1]
        if "/" in name[len("ctranslate2.libs/"):] or base in ("", ".", ".."):
            continue
        with z.open(info) as src, open(os.path.join(out, base), "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.chmod(os.path.join(out, base), 0o755)
        if base.startswith("libctranslate2"):
            engine = base
if engine is None:
    sys.exit("the wheel has no ctranslate2.libs/libctranslate2*")
print(engine)
PY
)
ln -s "$lib" "$tmp/libctranslate2.so"
{
    echo "$STAMP"
    echo "library: $lib"
    echo "source: PyPI $PACKAGE==$VERSION, the library faster-whisper runs; CUDA 12 libraries are loaded at run time (make cuda-libs)"
} >"$tmp/VERSION"
chmod 755 "$tmp"
rm -rf "$DEST"
mv "$tmp" "$DEST"
trap - EXIT
say "installed $PACKAGE $VERSION ($lib) into $DEST"
