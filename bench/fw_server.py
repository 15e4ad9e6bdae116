"""faster-whisper in its own process, driven over stdin/stdout (JSON lines).

bench.py starts one of these per compute type, so that the model is loaded
once (like the service's worker) and the process's peak RSS (VmHWM) is the
peak of faster-whisper with that model and the clips decoded so far.

Request:  {"audio": "path.wav", "beam_size": 5}
Answer:   {"ms": decode milliseconds, "text": "...", "duration": seconds}

The timed part is WhisperModel.transcribe() with every segment iterated
(the generator decodes lazily), on samples decoded from the WAV beforehand:
feature extraction and decoding, as `worker-proc transcribe` times them.
Options mirror worker-proc's defaults: language "en", timestamps on,
condition_on_previous_text, temperature fallback 0.0-1.0, best_of 5, no VAD.
"""

import argparse
import json
import sys
import time


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--compute-type", default="int8")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    from faster_whisper import WhisperModel, decode_audio

    t0 = time.perf_counter()
    model = WhisperModel(
        args.model_dir,
        device="cpu",
        compute_type=args.compute_type,
        cpu_threads=args.threads,
        num_workers=1,
        local_files_only=True,
    )
    load_ms = (time.perf_counter() - t0) * 1e3
    print(json.dumps({"ready": True, "load_ms": load_ms}), flush=True)

    cache = {}
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        req = json.loads(line)
        path = req["audio"]
        if path not in cache:
            cache[path] = decode_audio(path, sampling_rate=16000)
        audio = cache[path]
        t0 = time.perf_counter()
        segments, info = model.transcribe(
            audio,
            language="en",
            beam_size=int(req.get("beam_size", 5)),
            vad_filter=False,
        )
        text = "".join(s.text for s in segments).strip()
        ms = (time.perf_counter() - t0) * 1e3
        # The log-mel feature extraction alone, timed separately (after the
        # decode, so it does not disturb it), to compare with the worker's
        # `features` phase.
        t1 = time.perf_counter()
        model.feature_extractor(audio)
        features_ms = (time.perf_counter() - t1) * 1e3
        print(json.dumps({"ms": ms, "text": text, "duration": info.duration, "features_ms": features_ms}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
