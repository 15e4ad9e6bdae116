#!/usr/bin/env python3
"""Builds a long recording of real human speech with a known transcript, for
the long-form WER measurements (tests/fixtures/longform/measure.py).

Source: Debian's `asterisk-core-sounds-en-wav` (the Asterisk PBX prompts read
by Allison Smith, CC-BY-SA-3.0; 8 kHz 16-bit telephone recordings) and
`asterisk-core-sounds-en` (core-sounds-en.txt: the transcript of every
prompt). Both are fetched with `apt-get download` (no root needed) into the
work folder and unpacked there; nothing is installed or committed.

Output (in --work): asterisk300.wav (16 kHz mono s16, ~5 min) and
asterisk300.json (text, parts with true start/end, in measure.py's format).
The prompts are those with a transcript of at least 8 words and no
bracketed sound description, in name order, until --secs; pauses between
them cycle through 0.4, 1.2, 2.5, 0.3 and 1.6 s, and 10 s of faint white
noise sit after the middle. Deterministic for a given package version.

usage: bench/make-real-long.py --work DIR [--secs 300]
"""
import argparse
import glob
import gzip
import json
import os
import subprocess
import sys

PKGS = ["asterisk-core-sounds-en-wav", "asterisk-core-sounds-en"]
PAUSES = [0.4, 1.2, 2.5, 0.3, 1.6]
RATE = 16000


def sh(*a, **kw):
    return subprocess.run(a, check=True, **kw)


def fetch(work):
    root = os.path.join(work, "asterisk")
    sounds = os.path.join(root, "usr/share/asterisk/sounds/en_US_f_Allison")
    text = os.path.join(root, "usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")
    if os.path.isdir(sounds) and os.path.isfile(text):
        return sounds, text
    os.makedirs(root, exist_ok=True)
    sh("apt-get", "download", *PKGS, cwd=work, stdout=subprocess.DEVNULL)
    for deb in glob.glob(os.path.join(work, "asterisk-core-sounds-en*.deb")):
        sh("dpkg", "-x", deb, root)
    return sounds, text


def duration(path):
    out = subprocess.run(["soxi", "-D", path], check=True, capture_output=True, text=True).stdout
    return float(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", required=True)
    ap.add_argument("--secs", type=float, default=300.0)
    args = ap.parse_args()
    work = os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    sounds, text_gz = fetch(work)
    prompts = []
    for line in gzip.open(text_gz, "rt", encoding="utf-8", errors="replace"):
        if ":" not in line or line.startswith(";"):
            continue
        name, text = line.split(":", 1)
        name, text = name.strip(), " ".join(text.split())
        wav = os.path.join(sounds, name + ".wav")
        if "[" in text or "/" in name or len(text.split()) < 8 or not os.path.isfile(wav):
            continue
        prompts.append((name, text, wav))
    prompts.sort()
    tmp = os.path.join(work, "asterisk-parts")
    os.makedirs(tmp, exist_ok=True)
    pieces, parts, t = [], [], 0.0
    noise_done = False
    for i, (name, text, wav) in enumerate(prompts):
        if t >= args.secs:
            break
        piece = os.path.join(tmp, f"{i:03d}.wav")
        sh("sox", "-D", "-R", wav, "-r", str(RATE), "-c", "1", "-b", "16", piece)
        d = duration(piece)
        pause = PAUSES[i % len(PAUSES)]
        parts.append({"start": round(t, 3), "end": round(t + d, 3), "text": text, "name": name, "pause_after": pause})
        pieces.append(piece)
        t += d
        gap = os.path.join(tmp, f"{i:03d}-gap.wav")
        if not noise_done and t >= args.secs / 2:
            sh("sox", "-D", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", gap, "synth", "10", "whitenoise", "vol", "0.003")
            parts[-1]["pause_after"] = 10.0
            noise_done = True
            t += 10.0
        else:
            sh("sox", "-D", "-R", "-n", "-r", str(RATE), "-c", "1", "-b", "16", gap, "trim", "0", str(pause))
            t += pause
        pieces.append(gap)
    out = os.path.join(work, "asterisk300.wav")
    sh("sox", "-D", "-R", *pieces, out)
    total = duration(out)
    doc = {"about": "Real speech (Allison Smith, Asterisk core sounds, CC-BY-SA-3.0), 8 kHz telephone recordings joined with pauses; made by bench/make-real-long.py",
           "duration_s": round(total, 3), "text": " ".join(p["text"] for p in parts), "parts": parts}
    json.dump(doc, open(os.path.join(work, "asterisk300.json"), "w"), indent=1)
    print(f"make-real-long: {out}: {total:.1f} s, {len(parts)} prompts", file=sys.stderr)


if __name__ == "__main__":
    main()
