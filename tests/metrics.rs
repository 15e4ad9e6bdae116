//! `GET /metrics` on the real binary: the exposition is parsed by a real
//! Prometheus text-format parser (the official Python client's,
//! `prometheus_client` 0.26.0, which `make setup` installs into
//! `.venv/otel-test`), checked against the format's rules for histograms and
//! counters, and its values must move with what the node does: a request
//! adds a queue-wait observation, a killed worker a restart.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// One metric family as the parser returned it.
#[derive(Debug, serde::Deserialize)]
struct Family {
    name: String,
    #[serde(rename = "type")]
    kind: String,
    documentation: String,
    samples: Vec<Sample>,
}

#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

const PARSER: &str = r#"
import json, sys
sys.path.insert(0, sys.argv[1])
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    out.append({"name": fam.name, "type": fam.type, "documentation": fam.documentation,
                "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in fam.samples]})
json.dump(out, sys.stdout)
"#;

/// Parses an exposition with `prometheus_client`; panics with the parser's
/// error and the text when it is not valid.
fn parse(text: &str) -> Vec<Family> {
    let mut child = Command::new("python3")
        .args(["-c", PARSER])
        .arg(otel_tools_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "prometheus_client rejected the exposition: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The rules a scraper relies on, beyond what the parser checks.
fn check_conventions(families: &[Family], text: &str) {
    for f in families {
        assert!(!f.documentation.is_empty(), "{} has no HELP", f.name);
        assert!(
            f.name.starts_with("asr_"),
            "{} is not in the asr_ namespace",
            f.name
        );
        match f.kind.as_str() {
            "counter" => {
                for s in &f.samples {
                    assert!(
                        s.name.ends_with("_total") || s.name.ends_with("_created"),
                        "counter sample {}",
                        s.name
                    );
                    assert!(s.value >= 0.0);
                }
            }
            "histogram" => {
                assert!(
                    f.name.ends_with("_seconds") || f.name == "asr_real_time_factor",
                    "unit suffix: {}",
                    f.name
                );
                // Cumulative buckets ending in +Inf == _count.
                let buckets: Vec<&Sample> = f
                    .samples
                    .iter()
                    .filter(|s| s.name.ends_with("_bucket"))
                    .collect();
                assert!(
                    !buckets.is_empty(),
                    "{} has no buckets (a summary?)",
                    f.name
                );
                let mut last = 0.0;
                let mut last_le = f64::NEG_INFINITY;
                for b in &buckets {
                    let le: f64 = b.labels["le"].parse().unwrap();
                    assert!(
                        le > last_le && b.value >= last,
                        "{} buckets not cumulative",
                        f.name
                    );
                    (last, last_le) = (b.value, le);
                }
                assert!(last_le.is_infinite(), "{} lacks le=\"+Inf\"", f.name);
                let count = f
                    .samples
                    .iter()
                    .find(|s| s.name == format!("{}_count", f.name))
                    .unwrap();
                assert_eq!(count.value, last, "{}: +Inf bucket != _count", f.name);
                assert!(f
                    .samples
                    .iter()
                    .any(|s| s.name == format!("{}_sum", f.name)));
            }
            "gauge" => {}
            other => panic!("{}: unexpected type {other}\n{text}", f.name),
        }
    }
}

/// Scrapes, parses and checks; returns sample name + labels → value.
async fn scrape(svc: &Service) -> BTreeMap<String, f64> {
    let r = client()
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = r.text().await.unwrap();
    let families = parse(&text);
    check_conventions(&families, &text);
    let mut out = BTreeMap::new();
    for f in families {
        for s in f.samples {
            let labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            let key = if labels.is_empty() {
                s.name
            } else {
                format!("{}{{{}}}", s.name, labels.join(","))
            };
            out.insert(key, s.value);
        }
    }
    out
}

fn get(m: &BTreeMap<String, f64>, key: &str) -> f64 {
    *m.get(key).unwrap_or_else(|| {
        panic!(
            "{key} not exposed; have {:#?}",
            m.keys().collect::<Vec<_>>()
        )
    })
}

#[tokio::test]
async fn metrics_are_valid_prometheus_text_and_move_with_the_work() {
    let svc = Service::start(&[]);
    let m0 = scrape(&svc).await;
    for name in [
        "asr_queue_depth",
        "asr_queue_capacity",
        "asr_in_flight_jobs",
        "asr_queue_wait_seconds_count",
        "asr_decode_seconds_count",
        "asr_real_time_factor_count",
        "asr_request_duration_seconds_count",
        "asr_worker_restarts_total",
        "asr_busy_rejections_total",
        "asr_queue_timeouts_total",
        "asr_audio_seconds_total",
        "asr_worker_generation",
        "asr_ready",
    ] {
        get(&m0, name);
    }
    assert_eq!(get(&m0, "asr_worker_state{state=ready}"), 1.0);
    assert_eq!(get(&m0, "asr_worker_state{state=busy}"), 0.0);
    assert_eq!(get(&m0, "asr_ready"), 1.0);
    assert_eq!(get(&m0, "asr_queue_depth"), 0.0);
    assert_eq!(get(&m0, "asr_in_flight_jobs"), 0.0);
    assert_eq!(get(&m0, "asr_worker_restarts_total"), 0.0);

    // One transcription.
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello"]);
    let m1 = scrape(&svc).await;
    let delta = |k: &str| get(&m1, k) - m0.get(k).copied().unwrap_or(0.0);
    assert_eq!(
        delta("asr_queue_wait_seconds_count"),
        1.0,
        "one queue-wait observation"
    );
    assert_eq!(delta("asr_decode_seconds_count"), 1.0);
    assert_eq!(delta("asr_real_time_factor_count"), 1.0);
    assert_eq!(delta("asr_request_duration_seconds_count"), 1.0);
    assert_eq!(get(&m1, "asr_requests_total{outcome=ok,status=200}"), 1.0);
    assert_eq!(get(&m1, "asr_jobs_total{outcome=ok}"), 1.0);
    assert_eq!(
        delta("asr_audio_seconds_total"),
        fixture_secs("hello.wav").floor()
    );
    assert!(delta("asr_decode_seconds_sum") > 0.0);
    assert_eq!(get(&m1, "asr_in_flight_jobs"), 0.0);
    assert_eq!(get(&m1, "asr_worker_state{state=ready}"), 1.0);
    // /health reports the same job counts.
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["jobs"]["ok"], 1, "{h}");

    // Kill the idle worker: the supervisor restarts it, and that is counted.
    let pid = h["worker_pid"].as_u64().unwrap() as u32;
    signal(pid, libc::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, r) = svc.get_json("/ready").await;
        if status == 200 && r["worker_generation"] == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker not restarted within 60 s: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let m2 = scrape(&svc).await;
    assert_eq!(get(&m2, "asr_worker_restarts_total"), 1.0);
    assert_eq!(get(&m2, "asr_worker_generation"), 1.0);
    assert_eq!(get(&m2, "asr_worker_state{state=ready}"), 1.0);
    assert_eq!(get(&m2, "asr_worker_state{state=restarting}"), 0.0);
}
