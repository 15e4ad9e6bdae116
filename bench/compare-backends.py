#!/usr/bin/env python3
"""The engine's CPU GEMM backend, measured: faster-whisper vs `worker-proc`
built with oneDNN (the default) vs `worker-proc` built with ruy, interleaved,
same clips, model, compute type, beam and threads (the `worker alone`
measurement of bench.py: a fresh process per round, its warm second run).

Build the ruy worker in a separate target folder first (~15 min on 2 cores):

    CARGO_TARGET_DIR=/tmp/target-ruy cargo build --release -p worker-proc \\
        --no-default-features --features ruy
    bench/.venv/bin/python bench/compare-backends.py --ruy /tmp/target-ruy/release/worker-proc

Prints a Markdown table (medians of --runs rounds and the ratios to
faster-whisper).
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ruy", required=True, help="worker-proc built with --features ruy")
    ap.add_argument("--dnnl", default=str(Path(os.environ.get("CARGO_TARGET_DIR", bench.ROOT / "target")) / "release" / "worker-proc"))
    ap.add_argument("--clips", default="clip10,jfk,long60")
    ap.add_argument("--compute-types", default="int8,float32")
    ap.add_argument("--beams", default="1,5")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model-dir", default=str(bench.ROOT / "models/tiny.en"))
    args = ap.parse_args()
    out = bench.BENCH / "out"
    out.mkdir(parents=True, exist_ok=True)
    bins = {"dnnl": Path(args.dnnl).parent, "ruy": Path(args.ruy).parent}
    for k, d in bins.items():
        if not (d / "worker-proc").exists():
            sys.exit(f"compare-backends: no worker-proc in {d}")
    print(f"machine: {bench.machine_info()['cpu']}, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    rows = []
    for ct in args.compute_types.split(","):
        fw = bench.FasterWhisper(args.model_dir, ct, args.threads, out / f"fw-backends-{ct}.log")
        for clip in args.clips.split(","):
            audio = bench.CLIPS / f"{clip}.wav"
            if not audio.exists():
                continue
            for beam in [int(b) for b in args.beams.split(",")]:
                fw.transcribe(audio, beam)  # warm-up
                t = {"fw": [], "dnnl": [], "ruy": []}
                for _ in range(args.runs):
                    t["fw"].append(fw.transcribe(audio, beam)["ms"])
                    for k, d in bins.items():
                        t[k].append(bench.worker_alone(d, args.model_dir, ct, args.threads, audio, beam)["ms"])
                m = {k: statistics.median(v) for k, v in t.items()}
                rows.append((clip, ct, beam, m))
                print(f"{clip} {ct} beam {beam}: " + ", ".join(f"{k} {v:.0f} ms" for k, v in m.items()), file=sys.stderr, flush=True)
        fw.close()
    print("| clip | compute | beam | faster-whisper ms | worker oneDNN ms | worker ruy ms | oneDNN / fw | ruy / fw | ruy / oneDNN |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for clip, ct, beam, m in rows:
        print(f"| {clip} | {ct} | {beam} | {m['fw']:,.0f} | {m['dnnl']:,.0f} | {m['ruy']:,.0f} | "
              f"{m['dnnl'] / m['fw']:.2f} | {m['ruy'] / m['fw']:.2f} | {m['ruy'] / m['dnnl']:.2f} |")


if __name__ == "__main__":
    try:
        main()
    finally:
        bench.cleanup()
