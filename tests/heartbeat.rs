//! Issue 18, item 4: a frozen worker is found by its silent heartbeat, not
//! by the job's length-based decode deadline.
//!
//! The worker is stopped (SIGSTOP) mid-decode of a 62 s clip, whose decode
//! deadline is 30 + 2 × 62 = 154 s. With a 4 s heartbeat timeout (interval
//! 1 s, so "late" at 3 s): `/ready` turns 503 with the worker
//! `unresponsive` before the kill, the job gets 504 `worker_unresponsive`
//! within the timeout plus slack, and the restarted worker serves the next
//! request.

mod common;

use std::time::{Duration, Instant};

use common::*;

const TIMEOUT_SECS: u64 = 4;

#[tokio::test]
async fn a_frozen_worker_is_detected_within_the_heartbeat_timeout() {
    let svc = Service::start(&["--worker-heartbeat-timeout-secs", &TIMEOUT_SECS.to_string()]);
    let (_, h) = svc.get_json("/health").await;
    let pid = h["worker_pid"].as_u64().expect("worker pid") as u32;

    let request = svc.spawn_transcribe("long60.wav", &[]);
    svc.wait_health("worker busy", Duration::from_secs(60), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    // Let the decode get going, then freeze the whole process.
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(pid, libc::SIGSTOP);
    let stopped = Instant::now();

    // Not ready as soon as the heartbeat is late, before the kill: the
    // worker is published `unresponsive` (after the kill it would be
    // `restarting`).
    let mut saw_unresponsive = None;
    let mut saw_not_ready = None;
    while stopped.elapsed() < Duration::from_secs(TIMEOUT_SECS + 3) {
        let (ready, _) = svc.get_json("/ready").await;
        let (_, h) = svc.get_json("/health").await;
        if ready == 503 && saw_not_ready.is_none() {
            saw_not_ready = Some(stopped.elapsed());
        }
        if h["worker_state"] == "unresponsive" && saw_unresponsive.is_none() {
            saw_unresponsive = Some(stopped.elapsed());
            let (ready, body) = svc.get_json("/ready").await;
            assert_eq!(ready, 503, "unresponsive yet ready: {body}");
            saw_not_ready.get_or_insert(stopped.elapsed());
        }
        if h["worker_state"] == "restarting" || h["worker_generation"] == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let late = saw_unresponsive.expect("the worker was never published unresponsive");
    assert!(
        late < Duration::from_millis(3_500),
        "late heartbeat seen only after {late:?}"
    );
    let not_ready = saw_not_ready.expect("/ready never turned 503");
    assert!(
        not_ready < Duration::from_millis(3_600),
        "/ready turned 503 only {not_ready:?} after the freeze"
    );

    // The job's explicit answer, within the timeout plus slack.
    let answer = request.await.unwrap();
    let answered = stopped.elapsed();
    assert_eq!(answer.status, 504, "{}", answer.text);
    assert_eq!(
        answer.json()["error"]["code"],
        "worker_unresponsive",
        "{}",
        answer.text
    );
    assert!(
        answered < Duration::from_secs(TIMEOUT_SECS + 2),
        "answered {answered:?} after the freeze (timeout {TIMEOUT_SECS} s)"
    );

    // Killed (a stopped process dies of SIGKILL too), restarted, serving.
    let ready = svc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(ready["worker_generation"], 1, "{ready}");
    assert_eq!(ready["worker_restarts"], 1, "{ready}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(pid) {
        assert!(
            Instant::now() < deadline,
            "the frozen worker {pid} lives on"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_, h) = svc.get_json("/health").await;
    assert!(
        h["last_worker_exit"]
            .as_str()
            .unwrap_or("")
            .contains("without a heartbeat"),
        "{h}"
    );
    assert_eq!(h["jobs"]["worker_unresponsive"], 1, "{h}");
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
    assert_eq!(a.headers["x-worker-generation"], "1");
}

#[tokio::test]
async fn a_busy_worker_with_a_live_heartbeat_is_not_killed() {
    // A decode that takes longer than the heartbeat timeout (an injected
    // 6 s stall on the engine's thread) is not a hang: the heartbeat
    // thread keeps the worker alive and ready, and the job succeeds.
    let svc = Service::start(&[
        "--enable-fault-injection",
        "--worker-heartbeat-timeout-secs",
        "2",
        "--worker-heartbeat-interval-secs",
        "0.5",
    ]);
    let request = svc.spawn_transcribe("hello.wav", &[("X-Fault-Inject", "slow:6000")]);
    svc.wait_health("worker busy", Duration::from_secs(60), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(5) {
        let (ready, body) = svc.get_json("/ready").await;
        assert_eq!(
            ready, 200,
            "a busy worker with a heartbeat is ready: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = request.await.unwrap();
    assert_words(&a.transcript(), &["hello", "world"]);
    assert_eq!(a.headers["x-worker-generation"], "0");
}
