#!/usr/bin/env python3
"""`make overload`: throughput at capacity vs under overload, and the peer
comparison, on one machine, interleaved.

Servers (both started here, same model and settings: models/tiny.en, int8,
beam 5, 2 engine threads, VAD on):
  * node: the snapshot of the release whisper-node (bench/out/overload-bin/),
    `--threads 2 --compute-type int8 --beam-size 5` (VAD is on by default),
    default queue (capacity 3) plus NODE_ARGS;
  * peer: faster-whisper-server 0.0.3 from PyPI (bench/.venv-peer, FastAPI +
    uvicorn + faster-whisper 1.2.1 on ctranslate2 4.8.4), one uvicorn worker,
    with a YAML config: device cpu, compute_type int8, cpu_threads 2,
    beam_size 5, vad_filter true. (--no-peer: node only.)

Clients: asyncio, raw HTTP/1.1 over loopback (no HTTP library: the load
generator shares the 2 cores, so it must be cheap), each uploading the 11 s
JFK clip (bench/clips/jfk.wav, 352 KB) as multipart/form-data
(`response_format=json`), on a keep-alive connection (a new one after
`Connection: close`). Phases, each PHASE seconds after WARM seconds of
warm-up, for each server in turn, ROUNDS times (interleaved: node, peer,
node, peer, ...); before each phase the server must be idle (its CPU time
still for 1 s):
  * single: 1 client, back to back.
  * cap8: 8 well-behaved clients: back to back; after a 429 they wait the
    Retry-After they were given.
  * over40: 40 clients that retry 50 ms after each refusal (ignoring
    Retry-After), sending their body without `Expect` (like most clients).
  * over40e (node only): the same with `Expect: 100-continue`.
  * fair (node only, --fairness): one flooder (24 connections from
    127.0.0.2, retry 50 ms) and 4 well-behaved clients (127.0.0.3-6, one
    connection each); answers/s per client.
During cap8 and over40* a prober sends `GET /health` every 100 ms on its own
connection. Per phase: answers (200) per second within the window, p50 of
their latency, 429 count / p50 / p99 (from the first byte sent to the last
byte of the answer), connection errors, /health p50 / p99, CPU seconds of the
server's processes (node: HTTP parent and worker separately) and of this
client process, load average.

Targets (issue 17), checked on the node: over40 answers/s >= 0.95 x cap8
answers/s of the same round; 429 p99 < 10 ms; /health p99 < 10 ms.

Output: bench/out/overload-report.{md,json}, the Markdown on stdout.
"""

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
OUT = BENCH / "out"


def pct(xs, q):
    if not xs:
        return None
    xs = sorted(xs)
    i = min(len(xs) - 1, max(0, int(round(q / 100 * (len(xs) - 1)))))
    return xs[i]


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def proc_cpu(pid):
    """utime + stime of a process, seconds (children not included)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def self_cpu():
    t = os.times()
    return t.user + t.system


def multipart(path):
    boundary = "----overload%016x" % random.getrandbits(64)
    data = Path(path).read_bytes()
    parts = []
    for name, value in (("model", "whisper-1"), ("response_format", "json")):
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        )
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{Path(path).name}"\r\n'
        f"Content-Type: audio/wav\r\n\r\n".encode()
        + data
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    body = b"".join(parts)
    return f"multipart/form-data; boundary={boundary}", body


class Conn:
    """One keep-alive HTTP/1.1 connection (raw asyncio streams)."""

    def __init__(self, port, source=None):
        self.port = port
        self.source = source
        self.r = None
        self.w = None

    async def open(self):
        self.reused = self.w is not None
        if self.w is None:
            kw = {"local_addr": (self.source, 0)} if self.source else {}
            self.r, self.w = await asyncio.open_connection("127.0.0.1", self.port, **kw)

    def close(self):
        if self.w is not None:
            try:
                self.w.close()
            except Exception:
                pass
        self.r = self.w = None

    async def read_head(self):
        head = await self.r.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        return status, headers

    async def read_response(self):
        status, headers = await self.read_head()
        n = int(headers.get("content-length", "0"))
        body = await self.r.readexactly(n) if n else b""
        if headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int((await self.r.readuntil(b"\r\n")).strip(), 16)
                if size == 0:
                    await self.r.readuntil(b"\r\n")
                    break
                chunks.append(await self.r.readexactly(size))
                await self.r.readexactly(2)
            body = b"".join(chunks)
        return status, headers, body

    async def request(self, head, body=b"", expect=False, whole=None):
        """Sends one request; returns (status, headers, body, body_sent).
        `whole`: head + body, concatenated once by the caller."""
        await self.open()
        if not expect:
            self.w.write(whole if whole is not None else head + body)
            await self.w.drain()
            status, headers, rbody = await self.read_response()
            sent = True
        else:
            self.w.write(head)
            await self.w.drain()
            status, headers = await self.read_head()
            sent = False
            if status == 100:
                self.w.write(body)
                await self.w.drain()
                sent = True
                status, headers, rbody = await self.read_response()
            else:
                n = int(headers.get("content-length", "0"))
                rbody = await self.r.readexactly(n) if n else b""
                # The announced body was not sent: the connection is done.
                headers["connection"] = "close"
        if headers.get("connection", "").lower() == "close":
            self.close()
        return status, headers, rbody, sent


class Stats:
    def __init__(self):
        self.ok = []  # (t_done, latency, client)
        self.refused = []  # latencies
        self.refused_codes = {}
        self.other = {}
        self.errors = 0
        self.error_kinds = {}
        self.stale = 0
        self.body_not_sent = 0
        self.health = []
        self.texts = set()


async def client(port, ctype, body, stats, stop_at, mode, name, source=None, expect=False):
    """mode: 'polite' (waits Retry-After after a refusal) or 'retry50'."""
    head = (
        f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        + ("Expect: 100-continue\r\n" if expect else "")
        + "\r\n"
    ).encode()
    conn = Conn(port, source)
    whole = head + body
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            status, headers, rbody, sent = await conn.request(head, body, expect, whole)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as e:
            if conn.reused and isinstance(e, (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError)):
                # A keep-alive connection the server closed while idle: as
                # HTTP clients do, retry at once on a new one.
                conn.close()
                stats.stale += 1
                continue
            stats.errors += 1
            stats.error_kinds[type(e).__name__] = stats.error_kinds.get(type(e).__name__, 0) + 1
            conn.close()
            await asyncio.sleep(0.05)
            continue
        dt = time.monotonic() - t0
        if status == 200:
            stats.ok.append((time.monotonic(), dt, name))
            try:
                stats.texts.add(json.loads(rbody)["text"].strip())
            except Exception:
                pass
        elif status in (429, 503):
            stats.refused.append(dt)
            if not sent:
                stats.body_not_sent += 1
            try:
                code = json.loads(rbody)["error"]["code"]
            except Exception:
                code = "?"
            stats.refused_codes[code] = stats.refused_codes.get(code, 0) + 1
            if mode == "polite":
                await asyncio.sleep(float(headers.get("retry-after", "1")))
            else:
                await asyncio.sleep(0.05)
        else:
            stats.other[status] = stats.other.get(status, 0) + 1
            await asyncio.sleep(0.05)
    conn.close()


async def prober(port, stop_at):
    head = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    conn = Conn(port)
    out = []
    while time.monotonic() < stop_at:
        t0 = time.monotonic()
        try:
            await conn.request(head)
            out.append(time.monotonic() - t0)
        except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
            conn.close()
        await asyncio.sleep(0.1)
    conn.close()
    return out


def prober_process(port, stop_at, q):
    """The /health prober, in a process of its own: its latencies do not
    include the load clients' event-loop queueing."""
    q.put(asyncio.run(prober(port, stop_at)))


class Server:
    def __init__(self, name, proc, port, pids):
        self.name = name
        self.proc = proc
        self.port = port
        self.pids = pids  # callable -> {label: pid}

    def cpu(self):
        return {k: proc_cpu(p) for k, p in self.pids().items()}

    def idle(self, timeout=120):
        """Waits until the server's processes used < 5 % CPU for 1 s."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            a = sum(self.cpu().values())
            time.sleep(1.0)
            if sum(self.cpu().values()) - a < 0.05:
                return True
        return False


def wait_http(port, path, timeout=180):
    import http.client

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", path)
            r = c.getresponse()
            body = r.read()
            c.close()
            if r.status == 200:
                return json.loads(body) if body.startswith(b"{") else {}
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"no answer on :{port}{path}")


def start_node(args, binp, extra="", name="node"):
    port = free_port()
    log = open(OUT / f"overload-{name.replace('[', '-').replace(']', '').replace(' ', '_')}.log", "w")
    cmd = [
        str(binp / "whisper-node"),
        "--model-dir", str(ROOT / args.model_dir),
        "--worker-path", str(binp / "worker-proc"),
        "--listen", f"127.0.0.1:{port}",
        "--threads", "2", "--compute-type", "int8", "--beam-size", "5",
        "--disable-jobs",
    ] + args.node_args.split() + extra.split()
    env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    h = wait_http(port, "/health")
    while not h.get("ready"):
        time.sleep(0.3)
        h = wait_http(port, "/health")

    def pids():
        d = {"http": p.pid}
        try:
            h = wait_http(port, "/health", timeout=5)
            # Every worker of the pool (--workers N): worker, worker1, ...
            for w in h.get("workers") or [{"id": 0, "pid": h.get("worker_pid")}]:
                if w.get("pid"):
                    d["worker" if w["id"] == 0 else f"worker{w['id']}"] = int(w["pid"])
        except Exception:  # noqa: BLE001
            pass
        return d

    return Server(name, p, port, pids), cmd


def start_peer(args):
    port = free_port()
    cfg = OUT / "overload-peer.yaml"
    cfg.write_text(
        "models:\n"
        "  - name: whisper-1\n"
        f"    path: {ROOT / args.model_dir}\n"
        "    model_options: {device: cpu, compute_type: int8, cpu_threads: 2}\n"
        "    transcribe_options: {beam_size: 5, vad_filter: true}\n"
    )
    exe = BENCH / ".venv-peer" / "bin" / "faster-whisper-server"
    log = open(OUT / "overload-peer.log", "w")
    cmd = [str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
    p = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    wait_http(port, "/health")
    # The model loads on the first request: load it now.
    import http.client

    ctype, body = multipart(args.clip)
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    c.request("POST", "/v1/audio/transcriptions", body=body, headers={"Content-Type": ctype})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        raise RuntimeError(f"peer answered {r.status}")
    return Server("peer", p, port, lambda: {"server": p.pid}), cmd


def load_process(port, clip, specs, start_at, win_start, stop_at, q):
    """A share of a phase's clients, in a process of its own (one asyncio
    loop per process: a response does not queue behind 40 clients' work)."""
    ctype, body = multipart(clip)
    stats = Stats()

    async def run():
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))

        async def cpu_at_window():
            await asyncio.sleep(max(0.0, win_start - time.monotonic()))
            return self_cpu()

        cpu_task = asyncio.ensure_future(cpu_at_window())
        await asyncio.gather(*[
            client(port, ctype, body, stats, stop_at, sp["mode"], sp["name"], sp.get("source"), sp.get("expect", False))
            for sp in specs
        ])
        return self_cpu() - await cpu_task

    cpu = asyncio.run(run())
    q.put({
        "ok": stats.ok, "refused": stats.refused, "refused_codes": stats.refused_codes,
        "other": stats.other, "errors": stats.errors, "error_kinds": stats.error_kinds,
        "stale": stats.stale, "body_not_sent": stats.body_not_sent, "texts": sorted(stats.texts),
        "cpu": cpu,
    })


def phase_specs(phase):
    if phase == "single":
        return [{"mode": "polite", "name": "c0"}]
    if phase == "cap8":
        return [{"mode": "polite", "name": f"c{i}"} for i in range(8)]
    if phase in ("over40", "over40e"):
        return [{"mode": "retry50", "name": f"c{i}", "expect": phase == "over40e"} for i in range(40)]
    if phase == "fair":
        return [{"mode": "retry50", "name": "flooder", "source": "127.0.0.2"} for _ in range(24)] + [
            {"mode": "polite", "name": f"polite{i}", "source": f"127.0.0.{3 + i}"} for i in range(4)
        ]
    raise SystemExit(f"unknown phase {phase}")


def rust_groups(phase):
    """The phase's clients as overload_client processes: (clients, mode, expect, source, name)."""
    if phase == "single":
        return [(1, "polite", False, None, "c")]
    if phase == "cap8":
        return [(8, "polite", False, None, "c")]
    if phase in ("over40", "over40e"):
        return [(40, "retry50", phase == "over40e", None, "c")]
    if phase == "fair":
        return [(24, "retry50", False, "127.0.0.2", "flooder")] + [
            (1, "polite", False, f"127.0.0.{3 + i}", f"polite{i}") for i in range(4)
        ]
    raise SystemExit(f"unknown phase {phase}")


def run_phase_rust(server, phase, args):
    """A phase with the Rust load generator (examples/overload_client.rs)."""
    import multiprocessing as mp

    warm, secs = args.warm, args.phase
    start_in = 1.0
    start = time.monotonic() + start_in
    win_start = start + warm
    stop_at = win_start + secs
    procs = []
    for n, mode, expect, source, name in rust_groups(phase):
        cmd = [args.client_bin, str(server.port), args.clip, str(n), mode, "1" if expect else "0",
               str(int(start_in * 1000)), str(int(warm * 1000)), str(secs)] + ([source] if source else [])
        procs.append((name, subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)))
    probe = None
    if phase != "single":
        ctx = mp.get_context("spawn")
        pq = ctx.Queue()
        probe = (ctx.Process(target=prober_process, args=(server.port, stop_at, pq)), pq)
        probe[0].start()
    time.sleep(max(0.0, win_start - time.monotonic()))
    cpu0, t0 = server.cpu(), time.monotonic()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    cpu1, t1 = server.cpu(), time.monotonic()
    stats = Stats()
    client_cpu = 0.0
    for name, p in procs:
        out, _ = p.communicate(timeout=300)
        d = json.loads(out)
        stats.ok += [(win_start, ms / 1000, name) for ms in d["ok_ms"]]
        stats.refused += [ms / 1000 for ms in d["refused_ms"]]
        for k, v in d["codes"].items():
            stats.refused_codes[k] = stats.refused_codes.get(k, 0) + v
        for k, v in d["other"].items():
            stats.other[k] = stats.other.get(k, 0) + v
        stats.errors += d["errors"]
        stats.stale += d["stale"]
        stats.body_not_sent += d["body_not_sent"]
        stats.texts.update(d["texts"])
        client_cpu += d["cpu_s"]
    if probe:
        stats.health = probe[1].get(timeout=60)
        probe[0].join(timeout=10)
    return stats, cpu0, cpu1, t0, t1, client_cpu, win_start


def run_phase(server, phase, args):
    import multiprocessing as mp

    if args.client_bin:
        stats, cpu0, cpu1, t0, t1, client_cpu, win_start = run_phase_rust(server, phase, args)
        return phase_result(server, phase, stats, cpu0, cpu1, t0, t1, client_cpu, win_start)

    ctx = mp.get_context("spawn")
    warm, secs = args.warm, args.phase
    specs = phase_specs(phase)
    nproc = max(1, min(args.client_procs, len(specs)))
    start = time.monotonic() + 1.5  # processes start meanwhile
    win_start = start + warm
    stop_at = win_start + secs
    q = ctx.Queue()
    procs = [
        ctx.Process(target=load_process, args=(server.port, args.clip, specs[i::nproc], start, win_start, stop_at, q))
        for i in range(nproc)
    ]
    for p in procs:
        p.start()
    probe = None
    if phase != "single":
        pq = ctx.Queue()
        probe = (ctx.Process(target=prober_process, args=(server.port, stop_at, pq)), pq)
        probe[0].start()
    time.sleep(max(0.0, win_start - time.monotonic()))
    cpu0, t0 = server.cpu(), time.monotonic()
    time.sleep(max(0.0, stop_at - time.monotonic()))
    cpu1, t1 = server.cpu(), time.monotonic()
    stats = Stats()
    client_cpu = 0.0
    for _ in procs:
        d = q.get(timeout=300)
        stats.ok += d["ok"]
        stats.refused += d["refused"]
        for k, v in d["refused_codes"].items():
            stats.refused_codes[k] = stats.refused_codes.get(k, 0) + v
        for k, v in d["other"].items():
            stats.other[k] = stats.other.get(k, 0) + v
        for k, v in d["error_kinds"].items():
            stats.error_kinds[k] = stats.error_kinds.get(k, 0) + v
        stats.errors += d["errors"]
        stats.stale += d["stale"]
        stats.body_not_sent += d["body_not_sent"]
        stats.texts.update(d["texts"])
        client_cpu += d["cpu"]
    for p in procs:
        p.join(timeout=30)
    if probe:
        stats.health = probe[1].get(timeout=60)
        probe[0].join(timeout=10)
    return phase_result(server, phase, stats, cpu0, cpu1, t0, t1, client_cpu, win_start)


def phase_result(server, phase, stats, cpu0, cpu1, t0, t1, client_cpu, win_start):
    me0, me1 = 0.0, client_cpu
    ok = [x for x in stats.ok if win_start <= x[0] <= t1]
    # 429 / health latencies: from the whole phase past warm-up (the lists
    # are not time-stamped: all of them; warm-up is short).
    res = {
        "server": server.name,
        "phase": phase,
        "window_s": round(t1 - t0, 2),
        "answers": len(ok),
        "answers_per_s": round(len(ok) / (t1 - t0), 3),
        "ok_p50_ms": round(1000 * pct([x[1] for x in ok], 50), 1) if ok else None,
        "refused": len(stats.refused),
        "refused_codes": stats.refused_codes,
        "refused_body_not_sent": stats.body_not_sent,
        "refused_p50_ms": round(1000 * pct(stats.refused, 50), 2) if stats.refused else None,
        "refused_p99_ms": round(1000 * pct(stats.refused, 99), 2) if stats.refused else None,
        "other_status": stats.other,
        "errors": stats.errors,
        "error_kinds": stats.error_kinds,
        "stale_keepalive_retries": stats.stale,
        "health_n": len(stats.health),
        "health_p50_ms": round(1000 * pct(stats.health, 50), 2) if stats.health else None,
        "health_p99_ms": round(1000 * pct(stats.health, 99), 2) if stats.health else None,
        "cpu_s": {k: round(cpu1.get(k, 0) - cpu0.get(k, 0), 2) for k in cpu1},
        "client_cpu_s": round(me1 - me0, 2),
        "loadavg": os.getloadavg(),
        "texts": sorted(stats.texts)[:3],
    }
    if phase == "fair":
        per = {}
        for _, _, name in ok:
            per[name] = per.get(name, 0) + 1
        res["answers_per_s_by_client"] = {k: round(v / (t1 - t0), 3) for k, v in sorted(per.items())}
    return res


def fmt(v, unit=""):
    return "-" if v is None else f"{v}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", default="models/tiny.en")
    ap.add_argument("--clip", default=str(BENCH / "clips" / "jfk.wav"))
    ap.add_argument("--phase", type=float, default=30.0, help="measured seconds per phase")
    ap.add_argument("--warm", type=float, default=5.0, help="warm-up seconds before each window")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--phases", default="cap8,over40,over40e",
                    help="node phases, in order (single,cap8,over40,over40e,fair)")
    ap.add_argument("--peer-phases", default="single,cap8,over40")
    ap.add_argument("--node-args", default=os.environ.get("NODE_ARGS", ""),
                    help="extra whisper-node flags")
    ap.add_argument("--variants", default="",
                    help="more node configurations, ';'-separated flag sets, e.g. "
                    "'--refused-body drain;--http-nice 10': each is started beside the "
                    "default node and runs the node phases, interleaved")
    ap.add_argument("--client-procs", type=int, default=4,
                    help="processes the clients of a phase are spread over")
    ap.add_argument("--baseline-bin", default="",
                    help="a folder with another build's whisper-node and worker-proc "
                    "(e.g. before a change): started as server 'base', runs the node phases")
    ap.add_argument("--client", choices=["rust", "python"], default="rust",
                    help="load generator: rust (examples/overload_client.rs, built by "
                    "make overload; cheap) or python (asyncio processes)")
    ap.add_argument("--tag", default="", help="suffix of the report's file names")
    args = ap.parse_args()

    OUT.mkdir(parents=True, exist_ok=True)
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "release"
    binp = OUT / "overload-bin"
    binp.mkdir(exist_ok=True)
    for b in ("whisper-node", "worker-proc"):
        shutil.copy2(target / b, binp / b)
    ctype, body = multipart(args.clip)
    args.client_bin = None
    if args.client == "rust":
        src = target / "examples" / "overload_client"
        if not src.exists():
            raise SystemExit(f"overload: {src} is missing (cargo build --release --example overload_client), or --client python")
        shutil.copy2(src, binp / "overload_client")
        args.client_bin = str(binp / "overload_client")

    servers = []
    node, node_cmd = start_node(args, binp)
    servers.append(node)
    for v in [v.strip() for v in args.variants.split(";") if v.strip()]:
        servers.append(start_node(args, binp, v, f"node[{v}]")[0])
    base_cmd = None
    if args.baseline_bin:
        base, base_cmd = start_node(args, Path(args.baseline_bin), "", "base")
        servers.append(base)
    peer_cmd = None
    if not args.no_peer:
        try:
            peer, peer_cmd = start_peer(args)
            servers.append(peer)
        except Exception as e:  # noqa: BLE001
            print(f"overload: the peer did not start ({e}); node only", file=sys.stderr)
    results = []
    try:
        node_phases = [p for p in args.phases.split(",") if p]
        peer_phases = [p for p in args.peer_phases.split(",") if p]
        order = []
        for p in dict.fromkeys(node_phases + peer_phases):
            for s in servers:
                if (s.name != "peer" and p in node_phases) or (s.name == "peer" and p in peer_phases):
                    order.append((s, p))
        for rnd in range(args.rounds):
            for s, p in order:
                if not s.idle():
                    print(f"overload: {s.name} not idle after 120 s", file=sys.stderr)
                r = run_phase(s, p, args)
                r["round"] = rnd + 1
                results.append(r)
                print(
                    f"[{rnd + 1}] {s.name:4} {p:7} {r['answers_per_s']:.3f}/s p50 {fmt(r['ok_p50_ms'])} ms "
                    f"429 n={r['refused']} p99 {fmt(r['refused_p99_ms'])} ms health p99 {fmt(r['health_p99_ms'])} ms "
                    f"err {r['errors']} cpu {r['cpu_s']} client {r['client_cpu_s']} load {r['loadavg'][0]:.2f}",
                    file=sys.stderr,
                    flush=True,
                )
    finally:
        for s in servers:
            s.proc.send_signal(signal.SIGTERM)
        for s in servers:
            try:
                s.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                s.proc.kill()

    # Targets per round (node).
    checks = []
    for rnd, sname in [(r, s.name) for r in range(1, args.rounds + 1) for s in servers if s.name != "peer"]:
        by = {r["phase"]: r for r in results if r["server"] == sname and r["round"] == rnd}
        if "cap8" in by and "over40" in by:
            cap, over = by["cap8"], by["over40"]
            ratio = over["answers_per_s"] / cap["answers_per_s"] if cap["answers_per_s"] else 0
            checks.append({
                "round": rnd,
                "server": sname,
                "ratio_over40_cap8": round(ratio, 3),
                "ratio_ok": ratio >= 0.95,
                "refused_p99_ms": over["refused_p99_ms"],
                "refused_ok": (over["refused_p99_ms"] or 0) < 10,
                "health_p99_ms": max(x["health_p99_ms"] or 0 for x in by.values()),
                "health_ok": max(x["health_p99_ms"] or 0 for x in by.values()) < 10,
            })
            if "over40e" in by:
                e = by["over40e"]
                checks[-1]["ratio_over40e_cap8"] = round(e["answers_per_s"] / cap["answers_per_s"], 3) if cap["answers_per_s"] else 0
                checks[-1]["refused_p99_ms_expect"] = e["refused_p99_ms"]

    # All rounds together: the ratio of the summed windows (less noisy).
    for sname in [s.name for s in servers if s.name != "peer"]:
        rows = [r for r in results if r["server"] == sname]
        def total(phase):
            rs = [r for r in rows if r["phase"] == phase]
            return sum(r["answers"] for r in rs), sum(r["window_s"] for r in rs)
        a_cap, w_cap = total("cap8")
        a_over, w_over = total("over40")
        a_e, w_e = total("over40e")
        if a_cap and w_over:
            rate = lambda a, w: a / w if w else 0
            checks.append({
                "round": "all",
                "server": sname,
                "ratio_over40_cap8": round(rate(a_over, w_over) / rate(a_cap, w_cap), 3),
                "ratio_ok": rate(a_over, w_over) / rate(a_cap, w_cap) >= 0.95,
                "ratio_over40e_cap8": round(rate(a_e, w_e) / rate(a_cap, w_cap), 3) if w_e else "-",
                "refused_p99_ms": max((r["refused_p99_ms"] or 0) for r in rows if r["phase"] == "over40"),
                "refused_ok": max((r["refused_p99_ms"] or 0) for r in rows if r["phase"] == "over40") < 10,
                "refused_p99_ms_expect": max(((r["refused_p99_ms"] or 0) for r in rows if r["phase"] == "over40e"), default="-"),
                "health_p99_ms": max((r["health_p99_ms"] or 0) for r in rows),
                "health_ok": max((r["health_p99_ms"] or 0) for r in rows) < 10,
            })

    lines = [
        f"Overload benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}), "
        f"{os.cpu_count()} cores, clip {Path(args.clip).name}, phases of {args.phase:g} s "
        f"after {args.warm:g} s warm-up, {args.rounds} round(s) interleaved.",
        "",
        f"node: `{' '.join(Path(node_cmd[0]).name if i == 0 else a for i, a in enumerate(node_cmd))}`",
    ]
    if base_cmd:
        lines.append(f"base: the same flags, binaries from `{args.baseline_bin}`")
    if peer_cmd:
        lines.append("peer: faster-whisper-server 0.0.3 (uvicorn, 1 worker), int8, cpu_threads 2, beam 5, vad_filter true")
    lines += [
        "",
        "| round | server | phase | answers/s | 200 p50 ms | refused (429/503) | refused p50 / p99 ms | body not sent | /health p50 / p99 ms | errors | CPU s: server | CPU s: client | load |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| {r['round']} | {r['server']} | {r['phase']} | {r['answers_per_s']:.3f} | {fmt(r['ok_p50_ms'])} | "
            f"{r['refused']} {' '.join(f'{k}={v}' for k, v in sorted(r['refused_codes'].items()))} | "
            f"{fmt(r['refused_p50_ms'])} / {fmt(r['refused_p99_ms'])} | {r['refused_body_not_sent']} | "
            f"{fmt(r['health_p50_ms'])} / {fmt(r['health_p99_ms'])} | {r['errors']} | "
            f"{' '.join(f'{k} {v}' for k, v in r['cpu_s'].items())} | {r['client_cpu_s']} | {r['loadavg'][0]:.2f} |"
        )
    fair = [r for r in results if r["phase"] == "fair"]
    for r in fair:
        lines.append("")
        lines.append(f"fair (round {r['round']}): answers/s by client: {r['answers_per_s_by_client']}")
    if checks:
        lines += ["", "| round | server | over40 / cap8 | over40e / cap8 | 429 p99 ms (over40) | 429 p99 ms (over40e) | /health p99 ms (max) | targets |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for c in checks:
            ok = c["ratio_ok"] and c["refused_ok"] and c["health_ok"]
            lines.append(
                f"| {c['round']} | {c['server']} | {c['ratio_over40_cap8']} | {c.get('ratio_over40e_cap8', '-')} | {c['refused_p99_ms']} | "
                f"{c.get('refused_p99_ms_expect', '-')} | {c['health_p99_ms']} | {'met' if ok else 'MISSED'} |"
            )
    # Variants against the default node, phase by phase (summed windows of
    # every round; the rounds interleave, so the machine's load hits all
    # alike): answers/s and p50 of the 200s as ratios.
    variants = [s.name for s in servers if s.name not in ("node", "peer")]
    vs_rows = []
    for v in variants:
        for p in dict.fromkeys(r["phase"] for r in results if r["server"] == v):
            mine = [r for r in results if r["server"] == v and r["phase"] == p]
            base = [r for r in results if r["server"] == "node" and r["phase"] == p]
            if not mine or not base:
                continue
            rate = lambda rs: sum(r["answers"] for r in rs) / max(1e-9, sum(r["window_s"] for r in rs))
            p50 = lambda rs: statistics.median([r["ok_p50_ms"] for r in rs if r["ok_p50_ms"] is not None] or [0])
            vs_rows.append({
                "server": v, "phase": p,
                "answers_per_s": round(rate(mine), 3), "node_answers_per_s": round(rate(base), 3),
                "throughput_ratio": round(rate(mine) / rate(base), 3) if rate(base) else None,
                "p50_ms": p50(mine), "node_p50_ms": p50(base),
                "p50_ratio": round(p50(mine) / p50(base), 3) if p50(base) else None,
            })
    if vs_rows:
        lines += ["", "Variants vs node (all rounds; ratios > 1: more answers/s, slower p50):", "",
                  "| server | phase | answers/s | node answers/s | throughput ratio | 200 p50 ms (median of rounds) | node p50 ms | p50 ratio |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for r in vs_rows:
            lines.append(
                f"| {r['server']} | {r['phase']} | {r['answers_per_s']} | {r['node_answers_per_s']} | {r['throughput_ratio']} | "
                f"{fmt(r['p50_ms'])} | {fmt(r['node_p50_ms'])} | {r['p50_ratio']} |"
            )
    md = "\n".join(lines) + "\n"
    tag = f"-{args.tag}" if args.tag else ""
    (OUT / f"overload-report{tag}.md").write_text(md)
    (OUT / f"overload-report{tag}.json").write_text(json.dumps({"results": results, "checks": checks, "variants_vs_node": vs_rows, "node_cmd": node_cmd, "peer_cmd": peer_cmd}, indent=1))
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
