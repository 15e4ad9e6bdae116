//! Issue 18, item 1: answers are paired with jobs by id only, so no client
//! ever receives another client's transcript.
//!
//! - A worker that answers out of order or under another id (the real
//!   `worker-proc` with an injected fault): every job it holds fails
//!   explicitly (502 `worker_protocol_error`), none gets another's text, the
//!   worker is restarted and the next request is served.
//! - A real upload longer than the old 512 MiB frame (9,000 s of silence,
//!   576 MB as f32) reaches the worker whole, and the clips posted behind it
//!   each get their own text.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// Distinctive words of each clip: a transcript holding another clip's
/// words went to the wrong client.
const HELLO: &[&str] = &["hello", "world"];
const CLIP10: &[&str] = &["fox", "lazy", "dog"];
const LONG60: &[&str] = &["morning", "weather"];

/// Asserts that `body` contains none of `words`.
fn assert_none_of(body: &str, words: &[&str], what: &str) {
    let b = body.to_lowercase();
    for w in words {
        assert!(
            !b.contains(w),
            "{what} holds {w:?}, another client's word: {body}"
        );
    }
}

/// Waits until the worker holds a job (so the next one is staged behind it).
async fn wait_busy(svc: &Service, within: Duration) {
    svc.wait_health("worker busy", within, |h| h["worker_state"] == "busy")
        .await;
}

/// After a broken pairing: the worker comes back as generation 1 and the
/// next request gets its own text from it.
async fn restarted_and_serving(svc: &Service) {
    let ready = svc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(ready["worker_generation"], 1, "{ready}");
    let (_, h) = svc.get_json("/health").await;
    assert!(
        h["last_worker_exit"]
            .as_str()
            .unwrap_or("")
            .contains("answered job"),
        "{h}"
    );
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    let text = a.transcript();
    assert_words(&text, HELLO);
    assert_none_of(&text, CLIP10, "the request after the restart");
    assert_eq!(a.headers["x-worker-generation"], "1");
}

fn error_code(a: &Answer) -> String {
    a.json()["error"]["code"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn answers_out_of_order_fail_every_held_job_and_no_client_gets_another_text() {
    let svc = Service::start(&["--enable-fault-injection"]);
    // A: the worker holds it and answers the job after it first.
    let a = svc.spawn_transcribe("hello.wav", &[("X-Fault-Inject", "out-of-order")]);
    wait_busy(&svc, Duration::from_secs(60)).await;
    // B: staged behind A; the broken worker decodes and answers it first,
    // which the old proxy handed to A's client.
    let b = svc.spawn_transcribe("clip10.wav", &[]);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    for (name, answer, others) in [("A", &a, CLIP10), ("B", &b, HELLO)] {
        assert_none_of(&answer.text, others, name);
        assert_eq!(answer.status, 502, "{name}: {}", answer.text);
        assert_eq!(error_code(answer), "worker_protocol_error", "{name}");
    }
    restarted_and_serving(&svc).await;
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["jobs"]["worker_protocol_error"], 2, "{h}");
}

#[tokio::test]
async fn an_answer_under_another_id_fails_the_job_and_restarts_the_worker() {
    let svc = Service::start(&["--enable-fault-injection"]);
    let a = svc.spawn_transcribe("hello.wav", &[("X-Fault-Inject", "wrong-id")]);
    wait_busy(&svc, Duration::from_secs(60)).await;
    let b = svc.spawn_transcribe("clip10.wav", &[]);
    let (a, b) = (a.await.unwrap(), b.await.unwrap());

    assert_eq!(a.status, 502, "{}", a.text);
    assert_eq!(error_code(&a), "worker_protocol_error");
    assert_none_of(&a.text, CLIP10, "A");
    // B was staged when A's answer came (failed with it), or came after
    // the failure (refused while the worker restarted, or decoded by the
    // new worker): never A's text.
    assert_none_of(&b.text, HELLO, "B");
    match b.status {
        200 => assert_words(&b.transcript(), CLIP10),
        502 => assert_eq!(error_code(&b), "worker_protocol_error"),
        503 => assert_eq!(error_code(&b), "worker_unavailable"),
        s => panic!("B: unexpected {s}: {}", b.text),
    }
    restarted_and_serving(&svc).await;
}

/// `secs` of 16 kHz mono digital silence as FLAC (sox, which `make setup`
/// installs).
fn silent_flac(path: &Path, secs: u32) {
    let out = Command::new("sox")
        .args(["-n", "-r", "16000", "-c", "1", "-b", "16"])
        .arg(path)
        .args(["trim", "0", &secs.to_string()])
        .output()
        .expect("sox (run `make setup`)");
    assert!(
        out.status.success(),
        "sox failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn audio_longer_than_the_old_frame_limit_reaches_the_worker_and_clients_keep_their_own_text()
{
    // 9,000 s: 576,000,000 bytes as f32, more than the 536,870,912-byte
    // frame that used to carry a job; the default --max-audio-secs (3 h)
    // admits it. Waiting clients may wait as long as it takes.
    const SECS: u32 = 9_000;
    let dir = tempfile::tempdir().unwrap();
    let long = dir.path().join("silence9000.flac");
    silent_flac(&long, SECS);
    let svc = Service::start(&["--max-queue-wait-secs", "600"]);
    let (_, h) = svc.get_json("/health").await;
    let worker_pid = h["worker_pid"].as_u64().unwrap();

    let base = svc.base.clone();
    let bytes = std::fs::read(&long).unwrap();
    let started = Instant::now();
    let long_req = tokio::spawn(async move {
        post(
            &base,
            bytes,
            "silence9000.flac",
            &[("response_format", "verbose_json")],
            &[],
        )
        .await
    });
    // Post three clips once the long job is in the worker.
    wait_busy(&svc, Duration::from_secs(300)).await;
    let clips = [
        ("hello.wav", HELLO),
        ("clip10.wav", CLIP10),
        ("long60.wav", LONG60),
    ];
    let handles: Vec<_> = clips
        .iter()
        .map(|(name, _)| svc.spawn_transcribe(name, &[]))
        .collect();

    let long_answer = long_req.await.unwrap();
    assert_eq!(
        long_answer.status, 200,
        "the long upload: {}",
        long_answer.text
    );
    let v = long_answer.json();
    let duration = v["duration"].as_f64().expect("duration");
    assert!(
        (duration - f64::from(SECS)).abs() < 0.01,
        "the worker got all {SECS} s, not {duration} s"
    );
    let text = v["text"].as_str().unwrap().to_lowercase();
    for (_, words) in clips {
        assert_none_of(&text, words, "the silent upload's transcript");
    }
    eprintln!("long upload answered in {:?}", started.elapsed());

    for (handle, (name, words)) in handles.into_iter().zip(clips) {
        let answer = handle.await.unwrap();
        let text = answer.transcript();
        assert_words(&text, words);
        for (other, other_words) in clips {
            if other != name {
                assert_none_of(&text, other_words, name);
            }
        }
    }
    // No restart was needed along the way.
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["worker_generation"], 0, "{h}");
    assert_eq!(h["worker_pid"].as_u64().unwrap(), worker_pid);
    assert!(
        !svc.logs().contains("exceeds the limit"),
        "a frame was refused"
    );
}
