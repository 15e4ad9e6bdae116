//! A pool of workers (`--workers`, `--devices`) on the real binaries and
//! model: one worker killed mid-decode while the other keeps serving, and
//! pools that cannot start.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The worker entries of `/health`.
fn workers(h: &serde_json::Value) -> &Vec<serde_json::Value> {
    h["workers"].as_array().expect("workers in /health")
}

/// The value of the metric line that starts with `series` (`name{labels}`).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("{series} not in /metrics:\n{text}"))
}

#[tokio::test]
async fn one_worker_killed_mid_decode_the_other_serves_and_it_restarts() {
    // Two workers, one engine thread each (the harness passes --threads 2).
    let svc = Service::start(&["--workers", "2"]);
    let (_, h) = svc.get_json("/health").await;
    let ws = workers(&h);
    assert_eq!(ws.len(), 2, "{h}");
    for (i, w) in ws.iter().enumerate() {
        assert_eq!(w["id"], i);
        assert_eq!(w["state"], "ready", "{h}");
        assert_eq!(w["threads"], 1, "2 threads split over 2 workers: {h}");
        assert_eq!(w["device"], "cpu");
    }
    assert_ne!(ws[0]["pid"], ws[1]["pid"], "two processes");
    assert_eq!(h["workers_accepting"], 2);

    // A long clip keeps one worker busy for seconds.
    let long = svc.spawn_transcribe("long60.wav", &[]);
    let h = svc
        .wait_health("a worker decoding", Duration::from_secs(30), |h| {
            workers(h).iter().any(|w| w["state"] == "busy")
        })
        .await;
    let victim = workers(&h)
        .iter()
        .find(|w| w["state"] == "busy")
        .unwrap()
        .clone();
    let (victim_id, victim_pid) = (
        victim["id"].as_u64().unwrap() as usize,
        victim["pid"].as_u64().unwrap() as u32,
    );
    let other_id = 1 - victim_id;
    signal(victim_pid, libc::SIGKILL);

    // From the kill until the victim is back, the node stays ready: the
    // other worker accepts work all along.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut polls = 0;
    loop {
        let (status, r) = svc.get_json("/ready").await;
        assert_eq!(status, 200, "not ready while one worker restarts: {r}");
        polls += 1;
        let w = &workers(&r)[victim_id];
        if w["generation"] == 1 && w["state"] != "starting" && w["state"] != "restarting" {
            break;
        }
        assert!(Instant::now() < deadline, "the victim never came back: {r}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polls > 0);

    // The killed job was retried at once on the other worker (the victim's
    // new process could not have loaded yet): generation 0 answered it.
    let a = long.await.unwrap();
    assert_words(&a.transcript(), &["morning", "weather", "library"]);
    assert_eq!(
        a.headers["x-worker-generation"], "0",
        "served by the survivor"
    );

    // The restart is the victim's alone.
    let (_, h) = svc.get_json("/health").await;
    let ws = workers(&h);
    assert_eq!(ws[victim_id]["restarts"], 1, "{h}");
    assert_eq!(ws[other_id]["restarts"], 0, "{h}");
    assert_eq!(ws[other_id]["generation"], 0, "{h}");
    assert_ne!(ws[victim_id]["pid"].as_u64().unwrap() as u32, victim_pid);
    assert!(
        ws[victim_id]["last_exit"]
            .as_str()
            .unwrap()
            .contains("SIGKILL"),
        "{h}"
    );
    assert!(ws[other_id]["last_exit"].is_null(), "{h}");
    assert_eq!(h["worker_restarts"], 1);
    assert!(!alive(victim_pid), "the killed worker is gone");
    let text = client()
        .get(format!("{}/metrics", svc.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let restarts = |id: usize| {
        metric(
            &text,
            &format!("asr_worker_pool_restarts_total{{worker=\"{id}\"}}"),
        )
    };
    assert_eq!(restarts(victim_id), 1.0);
    assert_eq!(restarts(other_id), 0.0);
    assert_eq!(metric(&text, "asr_workers_accepting"), 2.0);

    // Both serve: two requests at once each get their words.
    let hello = fixture("hello.wav");
    let (x, y) = tokio::join!(svc.transcribe(&hello, &[]), svc.transcribe(&hello, &[]));
    for a in [x, y] {
        assert_words(&a.transcript(), &["hello", "world"]);
    }
}

/// The start-up error of a node that must not start.
fn start_error(extra: &[&str]) -> String {
    match Service::start_with(extra, &[]) {
        Ok(_) => panic!("the node started with {extra:?}"),
        Err((code, log)) => {
            assert_eq!(code, Some(1), "documented exit status 1; log:\n{log}");
            log
        }
    }
}

#[tokio::test]
async fn a_bad_device_list_is_a_clear_start_up_error() {
    let log = start_error(&["--devices", "cuda:0,gpu:1"]);
    assert!(
        log.contains("bad --devices entry \"gpu:1\""),
        "no clear cause in:\n{log}"
    );
    let log = start_error(&["--workers", "3", "--devices", "cpu,cpu"]);
    assert!(
        log.contains("--workers 3 does not match --devices"),
        "no clear cause in:\n{log}"
    );
    assert!(
        !log.contains("worker spawned"),
        "nothing was started:\n{log}"
    );
}

#[tokio::test]
async fn a_listed_device_that_cannot_load_fails_the_start_naming_its_worker() {
    if Path::new("/dev/nvidiactl").exists() {
        eprintln!("skipped: this machine has an NVIDIA device");
        return;
    }
    // Worker 0 (cpu) loads; worker 1 (cuda:0) cannot: the node does not
    // start at part capacity.
    let log = start_error(&["--devices", "cpu,cuda:0"]);
    assert!(
        log.contains("worker 1 (cuda:0)") && log.contains("--device cuda cannot run here"),
        "no clear cause in:\n{log}"
    );
}
