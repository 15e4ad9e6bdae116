#!/usr/bin/env bash
# Usage: scripts/make-fixtures.sh [--check]
#
# Regenerates the committed speech fixtures in tests/fixtures/speech/ from
# text, with espeak-ng (voice en-us) and sox:
#
#   hello.wav              ~4 s   16 kHz mono s16
#   clip10.wav             ~13 s  22.05 kHz mono s16 (espeak's native rate:
#                                 exercises resampling)
#   clip10.flac/.mp3/.ogg  the same clip, compressed (mp3 via sox's
#                                 libsox-fmt-mp3, else ffmpeg)
#   clip10.webm/.opus/.m4a the same clip as browsers and phones record it,
#                          encoded by ffmpeg: WebM/Opus (MediaRecorder's
#                          default), Ogg/Opus (48 kHz, 32 kbit/s) and M4A/AAC
#                          (64 kbit/s)
#   clip10_44k_stereo.wav  the same clip, 44.1 kHz stereo s16
#   silence.wav            3 s of digital silence, 16 kHz mono s16
#   long60.wav             ~60 s of 11 distinct sentences, 16 kHz mono s16
#   manifest.json          each file's spoken text, key words, duration,
#                          sample rate, channels, size and sha256
#
# Speaking rate and word gap were chosen by transcribing candidates with
# faster-whisper 1.2.1 and the tiny.en model of scripts/fetch-model.sh: at
# espeak's default pace tiny.en mishears much of clip10 ("quick brown fox
# jumps" came back as "quick groundhog stump"). With 140 words a minute and a
# 40 ms gap between words it heard every key word of hello.wav and long60.wav,
# and at least 9 of clip10's 10 in every format, at beam 1 and 5 (beam 1 often
# hears "round fox"; the Ogg file at beam 5 "hours and all the dogs").
#
# Deterministic: the same espeak-ng and sox versions give byte-identical files
# (no dither, fixed random seed). --check regenerates into a temporary folder
# and compares with the committed files instead of replacing them (exit 1 on
# any difference).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEST=$ROOT/tests/fixtures/speech
VOICE=en-us

CHECK=false
case "${1:-}" in
    "") ;;
    --check) CHECK=true ;;
    *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

die() { echo "make-fixtures: error: $*" >&2; exit 1; }
for tool in espeak-ng sox soxi ffmpeg ffprobe python3 sha256sum; do
    command -v "$tool" >/dev/null || die "$tool is missing (run scripts/setup-system.sh)"
done

# Speaking rate (words per minute) and extra gap between words (10 ms units).
HELLO_TTS=(150 0)
CLIP10_TTS=(140 4)
LONG60_TTS=(140 4)

HELLO_TEXT="hello world, this is a test of the speech recognition service"
CLIP10_TEXT="The quick brown fox jumps over the lazy dog. Speech recognition turns spoken words into written text. Whisper was trained on many hours of audio."
LONG60_SENTENCES=(
    "Good morning, and welcome to the weekly status meeting."
    "First, the weather report: tomorrow will be sunny with a light breeze from the west."
    "The library opens at nine o'clock and closes at six in the evening."
    "Our train to Paris leaves from platform four at half past ten."
    "The museum has a new exhibition about ancient Egypt and the pyramids."
    "A healthy breakfast includes fresh fruit, yogurt and a cup of green tea."
    "Children in the school choir sang a beautiful song about the ocean."
    "The bakery on the corner sells warm bread and chocolate cookies."
    "Engineers tested the new bridge with heavy trucks before it opened."
    "The lighthouse keeper counted seven ships sailing past the rocky island."
    "Thank you for listening, and have a wonderful day."
)
LONG60_TEXT="${LONG60_SENTENCES[*]}"

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
GEN=$WORK/out
mkdir -p "$GEN"

# sox: -D no dither, -R repeatable random numbers, -G guard against clipping.
SOX=(sox -D -R -G)
S16=(-b 16 -e signed-integer)

speak() { # name speed gap text -> $WORK/name.wav at espeak's native 22050 Hz
    printf '%s\n' "$4" >"$WORK/$1.txt"
    espeak-ng -v "$VOICE" -s "$2" -g "$3" -f "$WORK/$1.txt" -w "$WORK/$1.wav"
}

speak hello "${HELLO_TTS[@]}" "$HELLO_TEXT"
speak clip10 "${CLIP10_TTS[@]}" "$CLIP10_TEXT"
speak long60 "${LONG60_TTS[@]}" "$LONG60_TEXT"

"${SOX[@]}" "$WORK/hello.wav" -r 16000 -c 1 "${S16[@]}" "$GEN/hello.wav"
cp "$WORK/clip10.wav" "$GEN/clip10.wav"
"${SOX[@]}" "$GEN/clip10.wav" "$GEN/clip10.flac"
"${SOX[@]}" "$GEN/clip10.wav" -C 3 "$GEN/clip10.ogg"
sox_help=$(sox -h 2>/dev/null || true)
if [[ $sox_help == *"AUDIO FILE FORMATS:"*" mp3 "* ]]; then
    "${SOX[@]}" "$GEN/clip10.wav" -C 64 "$GEN/clip10.mp3"
elif command -v ffmpeg >/dev/null; then
    echo "make-fixtures: sox has no mp3 support; encoding clip10.mp3 with ffmpeg" >&2
    ffmpeg -nostdin -loglevel error -i "$GEN/clip10.wav" -map_metadata -1 -fflags +bitexact \
        -flags:a +bitexact -codec:a libmp3lame -b:a 64k "$GEN/clip10.mp3"
else
    die "neither sox (libsox-fmt-mp3) nor ffmpeg can write mp3 (run scripts/setup-system.sh)"
fi
# ffmpeg with its bit-exact flags writes the same bytes on every run.
FF=(ffmpeg -nostdin -loglevel error -i "$GEN/clip10.wav" -map_metadata -1 -fflags +bitexact -flags:a +bitexact)
"${FF[@]}" -ar 48000 -c:a libopus -b:a 32k "$GEN/clip10.webm"
"${FF[@]}" -ar 48000 -c:a libopus -b:a 32k "$GEN/clip10.opus"
"${FF[@]}" -c:a aac -b:a 64k "$GEN/clip10.m4a"
"${SOX[@]}" "$GEN/clip10.wav" -r 44100 -c 2 "${S16[@]}" "$GEN/clip10_44k_stereo.wav"
"${SOX[@]}" -n -r 16000 -c 1 "${S16[@]}" "$GEN/silence.wav" trim 0 3
"${SOX[@]}" "$WORK/long60.wav" -r 16000 -c 1 "${S16[@]}" "$GEN/long60.wav"

ESPEAK_VERSION=$(espeak-ng --version | sed -n 's/.*text-to-speech: *\([^ ]*\).*/\1/p')
SOX_VERSION=$(sox --version | sed -n 's/.*SoX v*//p')
python3 - "$GEN" "$ESPEAK_VERSION" "$SOX_VERSION" "$VOICE" \
    "${HELLO_TTS[*]}" "${CLIP10_TTS[*]}" "${LONG60_TTS[*]}" \
    "$HELLO_TEXT" "$CLIP10_TEXT" "${LONG60_SENTENCES[@]}" <<'PY'
import hashlib, json, os, subprocess, sys

gen, espeak, sox, voice, hello_tts, clip10_tts, long60_tts, hello, clip10 = sys.argv[1:10]
long60 = sys.argv[10:]

def tts(settings):
    speed, gap = settings.split()
    return {"voice": voice, "words_per_minute": int(speed), "word_gap_ms": 10 * int(gap)}

def soxi(flag, path):
    if not path.endswith((".wav", ".flac", ".mp3", ".ogg")):
        return ffprobe(flag, path)
    return subprocess.run(["soxi", flag, path], check=True, capture_output=True, text=True).stdout.strip()

def ffprobe(flag, path):
    entry = {"-D": "format=duration", "-r": "stream=sample_rate", "-c": "stream=channels"}[flag]
    return subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", entry,
                           "-of", "default=noprint_wrappers=1:nokey=1", path],
                          check=True, capture_output=True, text=True).stdout.strip()

clip_keywords = ["quick", "brown", "fox", "lazy", "dog", "speech", "recognition", "written", "whisper", "audio"]
long_keywords = ["morning", "weather", "library", "paris", "museum", "breakfast", "choir", "bakery",
                 "bridge", "lighthouse", "wonderful"]
# (file, spoken text, key words, tts settings, derived from, purpose)
entries = [
    ("hello.wav", hello, ["hello", "world", "test", "speech", "recognition", "service"], hello_tts, None,
     "short utterance, already 16 kHz mono"),
    ("clip10.wav", clip10, clip_keywords, clip10_tts, None,
     "a few sentences at espeak's native 22.05 kHz: exercises resampling"),
    ("clip10.flac", clip10, clip_keywords, clip10_tts, "clip10.wav", "FLAC of clip10.wav"),
    ("clip10.mp3", clip10, clip_keywords, clip10_tts, "clip10.wav",
     "MP3 of clip10.wav (64 kbit/s; 22.05 kHz is MPEG-2 layer III)"),
    ("clip10.ogg", clip10, clip_keywords, clip10_tts, "clip10.wav", "Ogg Vorbis of clip10.wav"),
    ("clip10.webm", clip10, clip_keywords, clip10_tts, "clip10.wav",
     "WebM/Opus of clip10.wav (ffmpeg libopus, 48 kHz, 32 kbit/s): what browsers' MediaRecorder sends"),
    ("clip10.opus", clip10, clip_keywords, clip10_tts, "clip10.wav",
     "Ogg/Opus of clip10.wav (ffmpeg libopus, 48 kHz, 32 kbit/s)"),
    ("clip10.m4a", clip10, clip_keywords, clip10_tts, "clip10.wav",
     "M4A (MP4/AAC-LC) of clip10.wav (ffmpeg aac, 64 kbit/s): what phones record"),
    ("clip10_44k_stereo.wav", clip10, clip_keywords, clip10_tts, "clip10.wav",
     "clip10.wav resampled to 44.1 kHz stereo (both channels equal): exercises downmix and resampling"),
    ("silence.wav", "", [], None, None,
     "digital silence (every sample 0). Whisper tends to invent a word on silence "
     "(faster-whisper without VAD says 'You'): expect no speech, or at most a word"),
    ("long60.wav", " ".join(long60), long_keywords, long60_tts, None,
     "about 60 s, longer than two 30 s windows: long-form decoding must keep every sentence"),
]
files = []
for name, text, keywords, settings, source, purpose in entries:
    path = os.path.join(gen, name)
    with open(path, "rb") as f:
        data = f.read()
    item = {
        "file": name,
        "format": name.rsplit(".", 1)[1],
        "text": text,
        "keywords": keywords,
        "duration_s": round(float(soxi("-D", path)), 3),
        "sample_rate": int(soxi("-r", path)),
        "channels": int(soxi("-c", path)),
    }
    if name.endswith(".wav"):
        item["bits_per_sample"] = int(soxi("-b", path))
    item["bytes"] = len(data)
    item["sha256"] = hashlib.sha256(data).hexdigest()
    if name == "long60.wav":
        item["sentences"] = long60
    if source:
        item["derived_from"] = source
    item["tts"] = tts(settings) if settings else None
    item["purpose"] = purpose
    files.append(item)

manifest = {
    "about": "Synthetic English speech (espeak-ng) for tests. Regenerate with scripts/make-fixtures.sh; "
             "verify with scripts/make-fixtures.sh --check. 'keywords' are distinctive words (lower case) "
             "that a good transcript contains; tiny.en still mishears a few words of synthetic speech, so "
             "assert on most of them, not all. Judge accuracy on real speech too.",
    "generator": {"tts": f"espeak-ng {espeak}", "converter": f"sox {sox}", "script": "scripts/make-fixtures.sh"},
    "files": files,
}
with open(os.path.join(gen, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
    f.write("\n")
PY

if $CHECK; then
    status=0
    for f in "$GEN"/*; do
        name=$(basename "$f")
        if [ ! -f "$DEST/$name" ]; then
            echo "missing:   $name"; status=1
        elif cmp -s "$f" "$DEST/$name"; then
            echo "identical: $name"
        else
            echo "differs:   $name"; status=1
        fi
    done
    [ $status -eq 0 ] && echo "make-fixtures: committed fixtures match a fresh generation" ||
        echo "make-fixtures: committed fixtures differ from a fresh generation (other espeak-ng/sox/lame version?)" >&2
    exit $status
fi

mkdir -p "$DEST"
for f in "$GEN"/*; do
    mv -f "$f" "$DEST/"
done
echo "make-fixtures: wrote $DEST:"
python3 - "$DEST/manifest.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
total = 0
for f in m["files"]:
    total += f["bytes"]
    print(f'  {f["file"]:<22} {f["duration_s"]:7.2f} s  {f["sample_rate"]:>6} Hz  {f["channels"]} ch  {f["bytes"]:>9} bytes')
print(f'  total {total} bytes ({total / 1e6:.2f} MB)')
PY
