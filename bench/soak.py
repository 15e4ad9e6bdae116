#!/usr/bin/env python3
"""`make soak`: wrk holds ~10x the node's capacity for SOAK_SECS while the
worker is SIGKILLed every 30-60 s; then a report.

Steps:
 1. Snapshot the release binaries into bench/out/soak-bin/ (others may
    rebuild target/ meanwhile) and start whisper-node on a free loopback port
    with the real model (--threads 2, the node's defaults otherwise: queue
    capacity 3, max queue wait 8 s, beam 5).
 2. Baseline: wrk with 1 connection for SOAK_BASELINE_SECS -- the
    single-request latency of the clip, same tool, same script.
 3. Soak: wrk -t N -c N (N = SOAK_CONNECTIONS, default 40 = 10 x (1 in
    flight + 3 queued)) for SOAK_SECS, with bench/soak.lua recording latency
    per status. Meanwhile a killer thread waits a random 30-60 s
    (SOAK_KILL_MIN/MAX, seeded by SOAK_SEED), reads the worker's pid from
    GET /health, checks that it is a child of the service, and SIGKILLs it;
    a sampler records the parent's RSS and looks for orphans every 5 s.
 4. After: a second 1-connection baseline (does the node still serve at the
    baseline speed?), /health (restarts), parent RSS, then the parent is
    SIGKILLed and, 2 s later, any worker-proc of ours still alive is an
    orphan.
 5. Report: bench/out/soak-report.{json,md}, and the Markdown on stdout.

Orphans: a process running our snapshot worker-proc binary whose parent is
not the live service (during the run), or that is alive 2 s after the
service was SIGKILLed.
"""

import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import datetime as dt
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = Path(os.environ.get("SOAK_OUT_DIR", BENCH / "out"))


def env_num(name, default, cast=float):
    v = os.environ.get(name, "")
    return cast(v) if v.strip() else default


SECS = env_num("SOAK_SECS", 600, int)
CONNS = env_num("SOAK_CONNECTIONS", 40, int)
KILL_MIN = env_num("SOAK_KILL_MIN", 30.0)
KILL_MAX = env_num("SOAK_KILL_MAX", 60.0)
SEED = env_num("SOAK_SEED", int(time.time()), int)
BASELINE_SECS = env_num("SOAK_BASELINE_SECS", 20, int)
BUSY_DELAY_MS = env_num("SOAK_BUSY_DELAY_MS", 100, int)
CLIP = Path(os.environ.get("SOAK_CLIP", BENCH / "clips" / "hello.wav"))
THREADS = env_num("SOAK_THREADS", 2, int)
MODEL_DIR = Path(os.environ.get("MODEL_DIR", ROOT / "models" / "tiny.en")).resolve()
BIN_SRC = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
EXTRA = os.environ.get("SOAK_SERVICE_ARGS", "").split()


def log(*a):
    print(f"[{time.strftime('%H:%M:%S')}] soak:", *a, file=sys.stderr, flush=True)


def rss_kib(pid):
    try:
        m = re.search(r"^VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
        return int(m.group(1)) if m else None
    except OSError:
        return None


def ppid_of(pid):
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def our_workers(worker_bin):
    """pids of live processes running our snapshot worker-proc binary."""
    target = os.path.realpath(worker_bin)
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            exe = os.readlink(d / "exe")
        except OSError:
            continue
        if exe.removesuffix(" (deleted)") == target:
            try:
                state = (d / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                state = "?"
            if state != "Z":
                pids.append(int(d.name))
    return pids


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def http_get(port, path, timeout=5):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def health(port):
    try:
        st, body = http_get(port, "/health")
        return json.loads(body) if st == 200 else None
    except (OSError, ValueError, http.client.HTTPException):
        return None


def wait_ready(port, proc, timeout=180):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"soak: whisper-node exited with {proc.returncode}; see {OUT}/soak-service.log")
        try:
            if http_get(port, "/ready")[0] == 200:
                return True
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.2)
    return False


def run_wrk(port, conns, secs, out_json, busy_delay_ms):
    env = {**os.environ, "SOAK_FILE": str(CLIP), "SOAK_OUT": str(out_json), "SOAK_BUSY_DELAY_MS": str(busy_delay_ms)}
    cmd = ["wrk", "-t", str(conns), "-c", str(conns), "-d", f"{secs}s", "--timeout", "120s",
           "-s", str(BENCH / "soak.lua"), f"http://127.0.0.1:{port}"]
    log(" ".join(cmd))
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if p.returncode != 0 or not Path(out_json).exists():
        raise SystemExit(f"soak: wrk failed ({p.returncode}): {p.stderr[-2000:]}")
    doc = json.loads(Path(out_json).read_text())
    doc["wrk_stdout"] = p.stdout
    return doc


def main():
    if not shutil.which("wrk"):
        raise SystemExit("soak: wrk not found (bench/soak.sh installs it with apt-get)")
    if not CLIP.exists():
        raise SystemExit(f"soak: {CLIP} missing (bench/prepare-clips.sh)")
    OUT.mkdir(parents=True, exist_ok=True)
    bin_dir = OUT / "soak-bin"
    bin_dir.mkdir(exist_ok=True)
    for b in ("whisper-node", "worker-proc"):
        if not (BIN_SRC / b).exists():
            raise SystemExit(f"soak: {BIN_SRC / b} missing: make build")
        tmp = bin_dir / f".{b}.tmp"
        shutil.copy2(BIN_SRC / b, tmp)
        os.replace(tmp, bin_dir / b)
    worker_bin = bin_dir / "worker-proc"
    stale = our_workers(worker_bin)
    if stale:
        raise SystemExit(f"soak: worker-proc processes of an earlier soak are still alive: {stale}")

    port = free_port()
    cmd = [str(bin_dir / "whisper-node"), "--listen", f"127.0.0.1:{port}", "--model-dir", str(MODEL_DIR),
           "--worker-path", str(worker_bin), "--threads", str(THREADS),
           # No async job store: it would lock ./data, which a developer's
           # `make run` may hold.
           "--disable-jobs", *EXTRA]
    env = {**os.environ, "RUST_LOG": os.environ.get("SOAK_RUST_LOG", "warn")}
    env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
    svc_log = open(OUT / "soak-service.log", "w")
    log(f"starting {' '.join(cmd)}")
    svc = subprocess.Popen(cmd, stdout=svc_log, stderr=subprocess.STDOUT, env=env)
    report = {"when": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "secs": SECS, "connections": CONNS,
              "kill_interval_s": [KILL_MIN, KILL_MAX], "seed": SEED, "busy_delay_ms": BUSY_DELAY_MS,
              "clip": CLIP.name, "service_cmd": " ".join(cmd), "machine": machine()}
    try:
        if not wait_ready(port, svc):
            raise SystemExit("soak: service not ready after 180 s")
        time.sleep(1)
        h0 = health(port)
        report["parent_rss_kib_idle"] = rss_kib(svc.pid)
        report["restarts_start"] = h0.get("worker_restarts")
        report["queue_capacity"] = h0.get("queue_capacity")
        report["compute_type"] = h0.get("compute_type")

        log(f"baseline: 1 connection for {BASELINE_SECS} s ...")
        report["baseline"] = run_wrk(port, 1, BASELINE_SECS, OUT / "soak-baseline.json", 0)
        report["parent_rss_kib_start"] = rss_kib(svc.pid)

        rng = random.Random(SEED)
        stop = threading.Event()
        kills, orphans_seen, rss_series, busy_samples = [], set(), [], []

        def killer():
            while True:
                wait = rng.uniform(KILL_MIN, KILL_MAX)
                if stop.wait(wait):
                    return
                h = health(port)
                pid = h.get("worker_pid") if h else None
                if not pid:
                    kills.append({"t": time.time(), "pid": None, "note": "no worker pid in /health (restarting?)"})
                    continue
                if ppid_of(pid) != svc.pid:
                    kills.append({"t": time.time(), "pid": pid, "note": f"pid's parent is {ppid_of(pid)}, not the service: not killed"})
                    continue
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills.append({"t": time.time(), "pid": pid, "generation": h.get("worker_generation"), "state": h.get("worker_state")})
                    log(f"SIGKILL worker pid {pid} (generation {h.get('worker_generation')}, {h.get('worker_state')})")
                except ProcessLookupError:
                    kills.append({"t": time.time(), "pid": pid, "note": "already gone"})

        def sampler():
            while not stop.wait(5.0):
                rss_series.append((time.time(), rss_kib(svc.pid)))
                for pid in our_workers(worker_bin):
                    if ppid_of(pid) != svc.pid:
                        orphans_seen.add(pid)
                busy_samples.append(busy_compilers())

        threads = [threading.Thread(target=killer, daemon=True), threading.Thread(target=sampler, daemon=True)]
        for t in threads:
            t.start()
        t0 = time.time()
        log(f"soak: {CONNS} connections for {SECS} s, killing the worker every {KILL_MIN:.0f}-{KILL_MAX:.0f} s (seed {SEED}) ...")
        report["soak"] = run_wrk(port, CONNS, SECS, OUT / "soak-wrk.json", BUSY_DELAY_MS)
        stop.set()
        for t in threads:
            t.join(timeout=10)
        for k in kills:
            k["t"] = round(k["t"] - t0, 1)
        report["kills"] = kills
        report["busy_compile_fraction"] = round(sum(1 for b in busy_samples if b) / max(1, len(busy_samples)), 2)

        ready_again = wait_ready(port, svc, timeout=120)
        report["ready_after"] = ready_again
        log(f"after: 1 connection for {min(BASELINE_SECS, 15)} s ...")
        report["after"] = run_wrk(port, 1, min(BASELINE_SECS, 15), OUT / "soak-after.json", 0)
        h1 = health(port) or {}
        report["restarts_end"] = h1.get("worker_restarts")
        report["worker_generation_end"] = h1.get("worker_generation")
        report["parent_rss_kib_end"] = rss_kib(svc.pid)
        rs = [r for _, r in rss_series if r]
        report["parent_rss_kib_max"] = max(rs) if rs else None
        report["parent_rss_kib_series"] = [r for _, r in rss_series][:: max(1, len(rss_series) // 20)]
        for pid in our_workers(worker_bin):
            if ppid_of(pid) != svc.pid:
                orphans_seen.add(pid)
        report["orphans_during"] = sorted(orphans_seen)
    finally:
        # SIGKILL the parent: its worker must die with it (no orphan).
        if svc.poll() is None:
            svc.kill()
            svc.wait()
        time.sleep(2.0)
        left = our_workers(worker_bin)
        report["orphans_after_parent_sigkill"] = left
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        svc_log.close()

    md = render(report)
    (OUT / "soak-report.json").write_text(json.dumps(report, indent=1) + "\n")
    (OUT / "soak-report.md").write_text(md + "\n")
    print(md)
    if SECS >= 600 or os.environ.get("SOAK_UPDATE_MD") == "1":
        update_markdown(ROOT / "BENCHMARKS.md", md)
        log("figures written to BENCHMARKS.md")
    failed = report["orphans_during"] or report["orphans_after_parent_sigkill"] or unanswered(report["soak"]) > 0
    return 1 if failed else 0


def busy_compilers():
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("cargo", "rustc", "cc1", "cc1plus", "ld"):
                    n += 1
            except OSError:
                pass
    return n


def machine():
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count()}


def unanswered(w):
    e = w["errors"]
    return e["connect"] + e["read"] + e["write"] + e["timeout"]


def st(w, code):
    return w["by_status"].get(str(code), {})


def render(r):
    s, b, a = r["soak"], r["baseline"], r["after"]
    L = []
    busy = r.get("busy_compile_fraction", 0)
    L.append(f"Soak {r['when']} on {r['machine']['cpu']}, {r['machine']['cores']} cores: {r['connections']} connections "
             f"(node capacity {1 + (r.get('queue_capacity') or 0)}: 1 in flight + {r.get('queue_capacity')} queued) for {r['secs']} s, "
             f"wrk + bench/soak.lua, clip {r['clip']} ({r.get('compute_type')}, the node's default beam, {THREADS} engine threads"
             + (f", extra flags {' '.join(EXTRA)}" if EXTRA else "") + f"), a connection pauses {r['busy_delay_ms']} ms after a 429/503; "
             f"worker SIGKILLed every {r['kill_interval_s'][0]:.0f}-{r['kill_interval_s'][1]:.0f} s (seed {r['seed']})."
             + (f" **Machine shared with compiles during {busy * 100:.0f} % of the soak.**" if busy else ""))
    L.append("")
    codes = sorted(s["by_status"], key=int)
    L.append("| status | answers | p50 ms | p99 ms | max ms |")
    L.append("|---|---:|---:|---:|---:|")
    for c in codes:
        v = s["by_status"][c]
        L.append(f"| {c} | {v['count']} | {v['p50_ms']:.2f} | {v['p99_ms']:.2f} | {v['max_ms']:.1f} |")
    L.append("")
    b200, a200, s200, s429 = st(b, 200), st(a, 200), st(s, 200), st(s, 429)
    e = s["errors"]
    n_kills = sum(1 for k in r.get("kills", []) if k.get("generation") is not None)
    restarts = (r.get("restarts_end") or 0) - (r.get("restarts_start") or 0)
    target = "met" if s429.get("p99_ms", 1e9) < 5 else "NOT met"
    L.append("| figure | value |")
    L.append("|---|---|")
    L.append(f"| requests answered (sent) | {s['responses']} ({s['requests_sent']}; the difference is what was in flight when wrk stopped) |")
    L.append(f"| busy answers (429) p50 / p99 | {s429.get('p50_ms', float('nan')):.2f} / {s429.get('p99_ms', float('nan')):.2f} ms (target p99 < 5 ms: {target}) |")
    L.append(f"| 200 p50 / p99 under soak | {s200.get('p50_ms', float('nan')):.0f} / {s200.get('p99_ms', float('nan')):.0f} ms |")
    L.append(f"| 200 p50 / p99 single request, before (baseline) | {b200.get('p50_ms', float('nan')):.0f} / {b200.get('p99_ms', float('nan')):.0f} ms ({b200.get('count', 0)} requests) |")
    L.append(f"| 200 p50 / p99 single request, after the soak | {a200.get('p50_ms', float('nan')):.0f} / {a200.get('p99_ms', float('nan')):.0f} ms ({a200.get('count', 0)} requests) |")
    if b200.get("p50_ms"):
        per_job = s["duration_us"] / 1e6 / max(1, s200.get("count", 0)) * 1e3
        L.append(f"| throughput under soak | {s200.get('count', 0) / (s['duration_us'] / 1e6):.2f} answers 200/s = one per {per_job:.0f} ms vs {b200['p50_ms']:.0f} ms single-request p50 (includes the restarts' downtime) |")
    L.append(f"| worker kills / restarts seen by /health | {n_kills} / {restarts} |")
    L.append(f"| parent RSS idle → after baseline → end (max) | {kib(r.get('parent_rss_kib_idle'))} → {kib(r.get('parent_rss_kib_start'))} → {kib(r.get('parent_rss_kib_end'))} ({kib(r.get('parent_rss_kib_max'))}) MiB |")
    series = [x for x in r.get("parent_rss_kib_series", []) if x]
    if series:
        L.append(f"| parent RSS samples over the soak (MiB) | {' '.join(kib(x) for x in series)} |")
    L.append(f"| orphans during the run / 2 s after SIGKILL of the service | {len(r.get('orphans_during', []))} / {len(r.get('orphans_after_parent_sigkill', []))} (must be 0) |")
    L.append(f"| requests with no answer (socket errors: connect/read/write/timeout) | {unanswered(s)} ({e['connect']}/{e['read']}/{e['write']}/{e['timeout']}) (must be 0) |")
    L.append(f"| ready again after the soak | {r.get('ready_after')} |")
    return "\n".join(L)


BEGIN = "<!-- soak:begin (generated by bench/soak.py; do not edit by hand) -->"
END = "<!-- soak:end -->"


def update_markdown(path, md):
    block = f"{BEGIN}\n{md}\n{END}"
    if path.exists():
        txt = path.read_text()
        if BEGIN in txt and END in txt:
            path.write_text(txt.split(BEGIN, 1)[0] + block + txt.split(END, 1)[1])
            return
        path.write_text(txt.rstrip() + "\n\n" + block + "\n")
    else:
        path.write_text("# Benchmarks\n\n" + block + "\n")


def kib(v):
    return "–" if not v else f"{v / 1024:.1f}"


if __name__ == "__main__":
    sys.exit(main())
