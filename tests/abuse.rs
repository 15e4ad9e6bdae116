//! What one abusive client can do to the node, against the real binary and
//! the real `tiny.en` model (issue 15's reliability probes):
//! - connection abuse: hundreds of connections that send nothing, and
//!   clients that trickle their headers a byte at a time (slowloris), do
//!   not stop the node from answering its probes and transcriptions, and
//!   the server closes them after its request timeout;
//! - a full job store: past `--jobs-max-pending` a submission is a clear
//!   429 `job_backlog_full` with `Retry-After`, nothing accepted is lost,
//!   and synchronous transcription keeps working.
//!
//! `WHISPER_NODE_TEST_MODEL_DIR=… cargo test --release --test abuse`

mod common;

use std::time::{Duration, Instant};

use common::{assert_words, fixture, post_job, Service};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Idle connections opened at once (well past the HTTP workers' count).
const IDLE: usize = 400;
/// Clients trickling their headers.
const TRICKLERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idle_and_trickling_connections_neither_block_the_node_nor_stay_open() {
    let svc = Service::start(&[]);
    svc.wait_ready(Duration::from_secs(60)).await;
    let addr = svc.base.trim_start_matches("http://").to_string();

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Slowloris: a header line that never ends, one byte a second.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tricklers = Vec::new();
    for i in 0..TRICKLERS {
        let (addr, stop) = (addr.clone(), stop.clone());
        tricklers.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&addr).await.expect("connect");
            let head =
                format!("POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {addr}\r\nX-Slow-{i}: ");
            if s.write_all(head.as_bytes()).await.is_err() {
                return true;
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if s.write_all(b"a").await.is_err() {
                    return true; // closed by the server
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            // Closed by the server: the next read sees the end (or a 408).
            let mut buf = [0u8; 512];
            matches!(
                tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf)).await,
                Ok(Ok(_)) | Ok(Err(_))
            )
        }));
    }

    // Meanwhile the node answers.
    let t = Instant::now();
    let (status, _) = svc.get_json("/health").await;
    assert_eq!(status, 200);
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "/health took {:?} behind {IDLE} idle connections",
        t.elapsed()
    );
    let answer = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_words(&answer.transcript(), &["hello"]);

    // The server's request timeout (5 s) closes connections that never
    // finish a request: an idle one reads the end of the stream.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let mut closed = 0;
    for s in &mut idle {
        let mut buf = [0u8; 256];
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await
        {
            closed += 1; // 0 bytes (EOF) or a 408 before it
        }
    }
    assert_eq!(closed, IDLE, "idle connections left open by the server");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut trickle_closed = 0;
    for t in tricklers {
        if t.await.unwrap() {
            trickle_closed += 1;
        }
    }
    assert_eq!(
        trickle_closed, TRICKLERS,
        "header tricklers must be cut off by the request timeout"
    );
    let after = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_eq!(after.status, 200, "{}", after.text);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_job_store_refuses_clearly_and_loses_nothing() {
    let svc = Service::start(&["--jobs-max-pending", "2"]);
    svc.wait_ready(Duration::from_secs(60)).await;
    let clip = std::fs::read(fixture("hello.wav")).unwrap();
    let mut accepted = Vec::new();
    let mut refused = None;
    for _ in 0..6 {
        let a = post_job(&svc.base, clip.clone(), "hello.wav", &[]).await;
        match a.status {
            202 => accepted.push(a.json()["id"].as_str().unwrap().to_string()),
            429 => {
                refused = Some(a);
                break;
            }
            s => panic!("unexpected {s}: {}", a.text),
        }
    }
    let refused = refused.expect("a submission past --jobs-max-pending is refused");
    assert_eq!(refused.json()["error"]["code"], "job_backlog_full");
    assert!(refused.headers.contains_key("retry-after"));
    assert!(accepted.len() >= 2, "the store takes its 2 pending jobs");

    // Synchronous work is not blocked by the full store.
    let sync = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_eq!(sync.status, 200, "{}", sync.text);

    // Every accepted job finishes with its words.
    for id in &accepted {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, job) = svc.get_json(&format!("/v1/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            match job["status"].as_str() {
                Some("done") => break,
                Some("failed") | Some("cancelled") => panic!("job {id} lost: {job}"),
                _ => {}
            }
            assert!(Instant::now() < deadline, "job {id} never finished: {job}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let text = common::client()
            .get(format!("{}/v1/jobs/{id}/result", svc.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_words(&text, &["hello"]);
    }
    // With the backlog drained, a new submission is accepted again.
    let again = post_job(&svc.base, clip, "hello.wav", &[]).await;
    assert_eq!(again.status, 202, "{}", again.text);
}
