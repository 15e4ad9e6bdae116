#!/usr/bin/env bash
# Usage: scripts/fetch-ctranslate2-source.sh [DEST]
#
# For the from-source engine build only (`make build ENGINE=source`, for
# platforms without the prebuilt library): puts CTranslate2 4.8.4's source
# tree, as the published ct2rs 0.10.3 crate ships it (with its third-party
# submodules: cpu_features, ruy, spdlog, cutlass, …), into DEST (default:
# engine/ctranslate2-src, git-ignored) and prints DEST, which is what
# CTRANSLATE2_SOURCE_DIR must name (vendor/ct2rs/build.rs).
#
# The crate comes through cargo itself (a throwaway manifest outside the
# workspace, `cargo fetch`), so it is checked against crates.io's checksum
# and works with whatever registry mirror cargo is configured for.
# Idempotent: does nothing when DEST/CMakeLists.txt exists.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=${1:-$ROOT/engine/ctranslate2-src}
say() { echo "fetch-ctranslate2-source: $*" >&2; }

if [ -f "$DEST/CMakeLists.txt" ]; then
    say "source tree already present in $DEST"
    echo "$DEST"
    exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/src"
cat >"$tmp/Cargo.toml" <<'TOML'
[package]
name = "fetch-ctranslate2-source"
version = "0.0.0"
edition = "2021"
[dependencies]
ct2rs = { version = "=0.10.3", default-features = false }
TOML
: >"$tmp/src/lib.rs"
say "fetching the ct2rs 0.10.3 crate with cargo"
(cd "$tmp" && cargo fetch --quiet)
crate=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/ct2rs-0.10.3 2>/dev/null | head -n1)
[ -n "$crate" ] && [ -f "$crate/CTranslate2/CMakeLists.txt" ] ||
    { say "error: ct2rs-0.10.3 was fetched but its CTranslate2 tree was not found"; exit 1; }
mkdir -p "$(dirname "$DEST")"
part=$(mktemp -d "$(dirname "$DEST")/.ctranslate2-src.XXXXXX")
cp -a "$crate/CTranslate2/." "$part/"
rm -rf "$DEST"
mv "$part" "$DEST"
say "CTranslate2 source tree in $DEST"
echo "$DEST"
