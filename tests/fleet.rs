//! A fleet behind a real load balancer (issue 16): three real nodes on
//! loopback behind HAProxy (Debian's package, installed by `make setup`)
//! running the shipped `deploy/haproxy/haproxy.cfg` unchanged, configured
//! only through its environment variables.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// HAProxy's health-check interval in this test.
const CHECK_INTER_MS: u64 = 500;

/// `haproxy`, from PATH or Debian's /usr/sbin; panics saying how to get it.
fn haproxy_bin() -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")]);
    for dir in candidates {
        let p = dir.join("haproxy");
        if p.is_file() {
            return p;
        }
    }
    panic!("haproxy not found: run `make setup` (scripts/setup-system.sh installs Debian's haproxy package)")
}

/// HAProxy running `deploy/haproxy/haproxy.cfg`; killed on drop.
struct Balancer {
    child: Child,
    base: String,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Balancer {
    fn start(nodes: &[&Service]) -> Balancer {
        assert_eq!(
            nodes.len(),
            3,
            "the shipped configuration names three nodes"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("admin.sock");
        let port = free_port();
        let mut cmd = Command::new(haproxy_bin());
        cmd.arg("-db") // foreground, logs on stderr
            .arg("-f")
            .arg(repo().join("deploy/haproxy/haproxy.cfg"))
            .env("WHISPER_LB_BIND", format!("127.0.0.1:{port}"))
            .env(
                "WHISPER_LB_STATS_BIND",
                format!("127.0.0.1:{}", free_port()),
            )
            .env("WHISPER_LB_STATS_SOCKET", &socket)
            // The internal hop to the all-busy pool: a socket of this test
            // (the default abstract name would clash with another balancer
            // on this machine).
            .env(
                "WHISPER_LB_BUSY_SOCKET",
                format!("unix@{}", dir.path().join("busy.sock").display()),
            )
            // Every request logged, with its retries and termination state.
            .env("WHISPER_LB_LOG_LEVEL", "info")
            .env("WHISPER_LB_CHECK_INTER", format!("{CHECK_INTER_MS}ms"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (i, node) in nodes.iter().enumerate() {
            cmd.env(
                format!("WHISPER_NODE_{}", i + 1),
                node.base.trim_start_matches("http://"),
            );
        }
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn haproxy");
        let lb = Balancer {
            child,
            base: format!("http://127.0.0.1:{port}"),
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if lb.socket.exists() {
                let up = lb.stats();
                if ["node1", "node2", "node3"]
                    .iter()
                    .all(|n| lb.server(&up, "whisper_nodes", n)["status"] == "UP")
                {
                    return lb;
                }
            }
            assert!(
                Instant::now() < deadline,
                "haproxy did not see three nodes up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `show stat` from the runtime API: one map per proxy and server.
    fn stats(&self) -> Vec<HashMap<String, String>> {
        let mut s = UnixStream::connect(&self.socket).expect("haproxy stats socket");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(b"show stat\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let mut lines = out.lines();
        let header: Vec<String> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .map(str::to_string)
            .collect();
        lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                header
                    .iter()
                    .cloned()
                    .zip(l.split(',').map(str::to_string))
                    .collect()
            })
            .collect()
    }

    fn server<'a>(
        &self,
        stats: &'a [HashMap<String, String>],
        proxy: &str,
        server: &str,
    ) -> &'a HashMap<String, String> {
        stats
            .iter()
            .find(|r| r["pxname"] == proxy && r["svname"] == server)
            .unwrap_or_else(|| panic!("no {proxy}/{server} in haproxy stats"))
    }

    fn counter(&self, proxy: &str, server: &str, field: &str) -> u64 {
        let stats = self.stats();
        self.server(&stats, proxy, server)[field]
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client's answer through the balancer.
#[derive(Debug)]
struct Reply {
    status: u16,
    served_by: String,
    retry_after: Option<String>,
    queue_full_header: bool,
    text: String,
}

async fn send(base: String, bytes: Vec<u8>) -> Reply {
    let a = post(&base, bytes, "hello.wav", &[("beam_size", "1")], &[]).await;
    let h = |name: &str| {
        a.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Reply {
        status: a.status,
        served_by: h("x-served-by").unwrap_or_default(),
        retry_after: h("retry-after"),
        queue_full_header: h("x-queue-full").is_some(),
        text: a.text,
    }
}

/// `n` concurrent clients through the balancer, each bounded: a client
/// that gets no answer within 120 s fails the test (never a hang).
fn wave(base: &str, n: usize) -> Vec<tokio::task::JoinHandle<Reply>> {
    let bytes = std::fs::read(fixture("hello.wav")).unwrap();
    (0..n)
        .map(|_| {
            let (base, bytes) = (base.to_string(), bytes.clone());
            tokio::spawn(async move {
                tokio::time::timeout(Duration::from_secs(120), send(base, bytes))
                    .await
                    .expect("a client got no answer within 120 s")
            })
        })
        .collect()
}

async fn collect(handles: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.expect("client task"));
    }
    out
}

fn tally(replies: &[Reply]) -> BTreeMap<(u16, String), usize> {
    let mut t = BTreeMap::new();
    for r in replies {
        *t.entry((r.status, r.served_by.clone())).or_default() += 1;
    }
    t
}

/// Every answer is a transcript or the node's own 429 (its JSON body, its
/// Retry-After), never an HAProxy error and never a 5xx.
fn assert_200_or_node_429(replies: &[Reply]) {
    for r in replies {
        match r.status {
            200 => {
                assert!(r.text.to_lowercase().contains("hello"), "{}", r.text);
                assert!(!r.queue_full_header);
            }
            429 => {
                let ra: u64 = r
                    .retry_after
                    .as_deref()
                    .unwrap_or_else(|| panic!("429 without Retry-After: {r:?}"))
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(ra >= 1, "{r:?}");
                let v: serde_json::Value = serde_json::from_str(&r.text)
                    .unwrap_or_else(|_| panic!("429 not from a node: {r:?}"));
                assert_eq!(v["error"]["code"], "queue_full", "{r:?}");
            }
            other => panic!("status {other}: {r:?}\nall: {:?}", tally(replies)),
        }
    }
}

fn node_of(served_by: &str) -> &str {
    served_by.trim_end_matches("-busy")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_behind_haproxy_answer_200_or_429_and_survive_a_sigkill() {
    // Small queues so 30 clients overflow them; a long queue wait and beam 1
    // so that, on a shared 2-core machine, admitted requests finish rather
    // than time out (504 would be a 5xx).
    let flags = [
        "--queue-capacity",
        "1",
        "--max-queue-wait-secs",
        "90",
        "--beam-size",
        "1",
        "--disable-jobs",
    ];
    let mut nodes = vec![
        Service::start(&flags),
        Service::start(&flags),
        Service::start(&flags),
    ];
    for n in &nodes {
        n.wait_ready(Duration::from_secs(60)).await;
    }
    let lb = Balancer::start(&nodes.iter().collect::<Vec<_>>());

    // The balancer's checks: plain /ready for life, ?admission=1 for room.
    let (status, body) = nodes[0].get_json("/ready?admission=1").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));

    // 1. Thirty concurrent clients: only 200 or the node's own 429.
    let replies = collect(wave(&lb.base, 30)).await;
    eprintln!("wave 1: {:?}", tally(&replies));
    assert_200_or_node_429(&replies);
    let ok: Vec<_> = replies.iter().filter(|r| r.status == 200).collect();
    assert!(ok.len() >= 3, "too few transcripts: {:?}", tally(&replies));
    let serving: std::collections::BTreeSet<_> = ok.iter().map(|r| node_of(&r.served_by)).collect();
    assert_eq!(
        serving.len(),
        3,
        "leastconn spreads over every node: {serving:?}"
    );
    let retried: u64 = [
        ("whisper_sync", "node1"),
        ("whisper_sync", "node2"),
        ("whisper_sync", "node3"),
        ("whisper_sync", "all-busy"),
        ("whisper_busy", "node1-busy"),
        ("whisper_busy", "node2-busy"),
        ("whisper_busy", "node3-busy"),
    ]
    .iter()
    .map(|(p, s)| lb.counter(p, s, "wretr") + lb.counter(p, s, "wredis"))
    .sum();
    assert!(
        retried > 0,
        "a full node's refusal is retried on another node"
    );

    // 2. Another thirty, and node 2 is SIGKILLed while they run.
    let handles = wave(&lb.base, 30);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let victim = nodes[1].pid();
    signal(victim, libc::SIGKILL);
    let killed_at = Instant::now();
    let _ = nodes[1].child().wait();

    // HAProxy takes it out within one check interval (plus scheduling
    // slack on a loaded machine).
    let down_after = loop {
        let stats = lb.stats();
        if lb.server(&stats, "whisper_nodes", "node2")["status"].starts_with("DOWN") {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(10),
            "haproxy still sends to the killed node"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("node2 marked down {down_after:?} after SIGKILL");
    assert!(
        down_after <= Duration::from_millis(CHECK_INTER_MS + 700),
        "node2 marked down only {down_after:?} after SIGKILL (interval {CHECK_INTER_MS} ms)"
    );

    // Every client of that wave gets an answer (the timeout in `wave`): the
    // ones in flight on node2 saw its connection close and were replayed on
    // another node, so they too get a transcript or a 429.
    let replies = collect(handles).await;
    eprintln!("wave 2 (node2 killed): {:?}", tally(&replies));
    assert_200_or_node_429(&replies);

    // 3. From now on nothing goes to node2, and the other two keep answering.
    let sessions_before = lb.counter("whisper_sync", "node2", "stot")
        + lb.counter("whisper_busy", "node2-busy", "stot");
    let replies = collect(wave(&lb.base, 12)).await;
    eprintln!("wave 3 (two nodes): {:?}", tally(&replies));
    assert_200_or_node_429(&replies);
    assert!(
        replies.iter().all(|r| node_of(&r.served_by) != "node2"),
        "{:?}",
        tally(&replies)
    );
    assert!(replies.iter().any(|r| r.status == 200));
    let sessions_after = lb.counter("whisper_sync", "node2", "stot")
        + lb.counter("whisper_busy", "node2-busy", "stot");
    assert_eq!(
        sessions_before, sessions_after,
        "haproxy opened sessions to the dead node"
    );
    for i in [0, 2] {
        let (status, _) = nodes[i].get_json("/health").await;
        assert_eq!(status, 200);
    }
    drop(lb);
    nodes.clear();
}

/// The shipped configuration passes HAProxy's own check.
#[test]
fn haproxy_cfg_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(haproxy_bin())
        .arg("-c")
        .arg("-f")
        .arg(repo().join("deploy/haproxy/haproxy.cfg"))
        .env("WHISPER_LB_STATS_SOCKET", dir.path().join("s"))
        .output()
        .expect("run haproxy -c");
    assert!(
        out.status.success(),
        "haproxy -c: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
