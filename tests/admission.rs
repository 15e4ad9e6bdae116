//! Admission control and fault tolerance (issue 3), one test per behaviour,
//! on the real binaries and model. Faults are injected into the real worker
//! with `X-Fault-Inject` (enabled only by `--enable-fault-injection`).

mod common;

use std::time::{Duration, Instant};

use common::*;

const FI: &str = "--enable-fault-injection";
const SLOW: (&str, &str) = ("x-fault-inject", "slow:3000");

fn retry_after(a: &Answer) -> u64 {
    a.headers
        .get("retry-after")
        .unwrap_or_else(|| panic!("Retry-After missing on {}: {}", a.status, a.text))
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After in whole seconds")
}

#[tokio::test]
async fn a_full_queue_answers_429_at_once_with_a_retry_after_from_the_queued_audio() {
    let svc = Service::start(&[FI, "--queue-capacity", "3"]);
    let first = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    let waiting: Vec<_> = (0..3)
        .map(|_| svc.spawn_transcribe("long60.wav", &[]))
        .collect();
    svc.wait_health("three waiting", Duration::from_secs(10), |h| {
        h["queue_depth"] == 3
    })
    .await;

    let t0 = Instant::now();
    let refused = svc.transcribe(&fixture("hello.wav"), &[]).await;
    let busy_latency = t0.elapsed();
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json()["error"]["code"], "queue_full");
    // 3 × 62 s of audio queued: the estimate must reflect it (well above the
    // 1 s floor) yet stay sane.
    let ra = retry_after(&refused);
    assert!(
        (2..=120).contains(&ra),
        "Retry-After {ra} s for ~190 s of queued audio"
    );
    assert!(
        busy_latency < Duration::from_millis(500),
        "busy answer took {busy_latency:?}"
    );

    assert_eq!(first.await.unwrap().status, 200);
    for w in waiting {
        w.abort();
    }
}

#[tokio::test]
async fn a_job_that_waits_past_its_deadline_gets_504_and_is_never_decoded() {
    let svc = Service::start(&[FI, "--max-queue-wait-secs", "1"]);
    let first = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    // A client may ask for a shorter deadline than the node's.
    let t0 = Instant::now();
    let hurried = svc
        .transcribe_bytes(
            std::fs::read(fixture("clip10.wav")).unwrap(),
            "clip10.wav",
            &[],
            &[("x-max-queue-wait-ms", "300")],
        )
        .await;
    assert_eq!(hurried.status, 504, "{}", hurried.text);
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_millis(900),
        "answered after {waited:?}"
    );
    // A longer one than the node's is capped to it.
    let t0 = Instant::now();
    let late = svc
        .transcribe_bytes(
            std::fs::read(fixture("clip10.wav")).unwrap(),
            "clip10.wav",
            &[],
            &[("x-max-queue-wait-ms", "60000")],
        )
        .await;
    assert_eq!(late.status, 504, "{}", late.text);
    assert_eq!(late.json()["error"]["code"], "queue_timeout");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_millis(2500),
        "answered after {waited:?}"
    );
    assert_eq!(first.await.unwrap().status, 200);
    let done = svc.logs().matches("job done").count();
    assert_eq!(done, 1, "only the first job was decoded");
}

#[tokio::test]
async fn a_job_whose_client_disconnected_is_dropped_before_decode() {
    let svc = Service::start(&[FI]);
    let first = svc.spawn_transcribe("hello.wav", &[("x-fault-inject", "slow:6000")]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    // A client that gives up after 1.5 s (time enough to upload and be
    // admitted, even on a loaded machine) while its job waits.
    let form = upload_form(
        std::fs::read(fixture("clip10.wav")).unwrap(),
        "clip10.wav",
        &[],
    );
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(1500))
        .build()
        .unwrap();
    let r = impatient
        .post(format!("{}/v1/audio/transcriptions", svc.base))
        .multipart(form)
        .send()
        .await;
    assert!(r.is_err(), "the impatient client timed out");
    svc.wait_health("queued job", Duration::from_secs(5), |h| {
        h["queue_depth"] == 1 || h["queue_depth"] == 0
    })
    .await;
    assert_eq!(first.await.unwrap().status, 200);
    svc.wait_health("queue empty", Duration::from_secs(10), |h| {
        h["queue_depth"] == 0 && h["worker_state"] == "ready"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = svc.logs();
    assert!(
        logs.contains("client gone, dropping job before decode"),
        "no drop logged:\n{logs}"
    );
    assert_eq!(
        logs.matches("job done").count(),
        1,
        "the abandoned job was not decoded"
    );
}

#[tokio::test]
async fn a_crash_mid_decode_restarts_the_worker_retries_the_job_and_serves_the_queue() {
    // Queued jobs wait for the crash, the restart and the retried job.
    let svc = Service::start(&["--max-queue-wait-secs", "120"]);
    let (_, h) = svc.get_json("/health").await;
    let pid = h["worker_pid"].as_u64().unwrap() as u32;
    let in_flight = svc.spawn_transcribe("clip10.wav", &[]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    let queued: Vec<_> = (0..2)
        .map(|_| svc.spawn_transcribe("hello.wav", &[]))
        .collect();
    svc.wait_health("two waiting", Duration::from_secs(10), |h| {
        h["queue_depth"] == 2
    })
    .await;

    let t0 = Instant::now();
    signal(pid, libc::SIGKILL);
    // Detected at once (not by polling): readiness drops right away.
    svc.wait_health("worker restarting", Duration::from_secs(1), |h| {
        h["worker_pid"].as_u64() != Some(pid as u64)
    })
    .await;
    let detect = t0.elapsed();
    assert!(
        detect < Duration::from_millis(500),
        "crash noticed after {detect:?}"
    );

    for q in queued {
        let a = q.await.unwrap();
        assert_words(&a.transcript(), &["hello", "world"]);
        assert_eq!(a.headers["x-worker-generation"], "1");
    }
    let retried = in_flight.await.unwrap();
    assert_eq!(
        retried.status, 200,
        "the crashed job is retried once: {}",
        retried.text
    );
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["worker_restarts"], 1, "{h}");
    assert!(
        h["last_worker_exit"].as_str().unwrap().contains("SIGKILL"),
        "{h}"
    );
    assert!(
        svc.logged("restarting worker").await,
        "restart logged with its cause"
    );
}

#[tokio::test]
async fn with_retries_off_the_in_flight_job_of_a_crashed_worker_gets_a_5xx() {
    let svc = Service::start(&[FI, "--max-crash-retries", "0"]);
    let a = svc
        .transcribe_bytes(
            std::fs::read(fixture("hello.wav")).unwrap(),
            "hello.wav",
            &[],
            &[("x-fault-inject", "crash")],
        )
        .await;
    assert_eq!(a.status, 500, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "worker_crashed");
    svc.wait_ready(Duration::from_secs(30)).await;
}

#[tokio::test]
async fn an_input_that_crashes_the_worker_twice_is_quarantined_with_422() {
    let svc = Service::start(&[FI]);
    let bytes = std::fs::read(fixture("hello.wav")).unwrap();
    let a = svc
        .transcribe_bytes(
            bytes.clone(),
            "poison.wav",
            &[],
            &[("x-fault-inject", "crash")],
        )
        .await;
    assert_eq!(a.status, 422, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "input_quarantined");
    let h = svc
        .wait_health("restarted worker ready", Duration::from_secs(30), |h| {
            h["ready"] == true && h["worker_generation"] == 2
        })
        .await;
    assert_eq!(h["worker_restarts"], 2, "one crash, one retry crash: {h}");

    // The same audio is refused at once, without touching the worker.
    let again = svc.transcribe_bytes(bytes, "poison.wav", &[], &[]).await;
    assert_eq!(again.status, 422, "{}", again.text);
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["worker_restarts"], 2, "no third crash: {h}");

    // Other input is served normally.
    assert_words(
        &svc.transcribe(&fixture("clip10.wav"), &[])
            .await
            .transcript(),
        &["lazy dog"],
    );
}

#[tokio::test]
async fn a_hung_worker_is_killed_at_the_decode_deadline_504_and_restarted() {
    // Deadline = 6 s + 1 × audio seconds: a hang is caught in ~10 s, a real
    // decode of the 4 s clip fits easily even on a loaded machine.
    let svc = Service::start(&[
        FI,
        "--decode-timeout-floor-secs",
        "6",
        "--decode-timeout-factor",
        "1",
    ]);
    let t0 = Instant::now();
    let a = svc
        .transcribe_bytes(
            std::fs::read(fixture("hello.wav")).unwrap(),
            "hello.wav",
            &[],
            &[("x-fault-inject", "hang")],
        )
        .await;
    assert_eq!(a.status, 504, "{}", a.text);
    assert_eq!(a.json()["error"]["code"], "decode_timeout");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(10) && took < Duration::from_secs(15),
        "answered after {took:?}"
    );
    let h = svc
        .wait_health("restarted worker ready", Duration::from_secs(30), |h| {
            h["ready"] == true && h["worker_generation"] == 1
        })
        .await;
    assert!(
        h["last_worker_exit"].as_str().unwrap().contains("SIGKILL"),
        "{h}"
    );
    assert_words(
        &svc.transcribe(&fixture("hello.wav"), &[])
            .await
            .transcript(),
        &["hello"],
    );
}

#[tokio::test]
async fn a_missing_or_corrupt_model_is_a_clean_start_up_failure() {
    let Err((code, log)) = Service::start_with(&["--model-dir", "/nonexistent/tiny"], &[]) else {
        panic!("started without a model");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("/nonexistent/tiny"), "path named: {log}");
    assert_eq!(
        log.matches("worker spawned").count(),
        1,
        "no restart loop: {log}"
    );

    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "tokenizer.json",
        "vocabulary.txt",
        "preprocessor_config.json",
    ] {
        std::fs::copy(model_dir().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(dir.path().join("model.bin"), b"not a model").unwrap();
    let path = dir.path().to_str().unwrap();
    let Err((code, log)) = Service::start_with(&["--model-dir", path], &[]) else {
        panic!("started with a corrupt model");
    };
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains(path), "path named: {log}");
    assert_eq!(
        log.matches("worker spawned").count(),
        1,
        "no restart loop: {log}"
    );
}

#[tokio::test]
async fn sigterm_drains_finishes_the_in_flight_job_answers_the_queue_503_and_exits_0() {
    let mut svc = Service::start(&[FI]);
    let (_, h) = svc.get_json("/health").await;
    let worker = h["worker_pid"].as_u64().unwrap() as u32;
    let in_flight = svc.spawn_transcribe("hello.wav", &[SLOW]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;
    let queued = svc.spawn_transcribe("clip10.wav", &[]);
    svc.wait_health("one waiting", Duration::from_secs(10), |h| {
        h["queue_depth"] == 1
    })
    .await;

    signal(svc.pid(), libc::SIGTERM);
    let q = queued.await.unwrap();
    assert_eq!(
        q.status, 503,
        "queued job answered 503 at shutdown: {}",
        q.text
    );
    assert!(q.headers.contains_key("retry-after"));
    let f = in_flight.await.unwrap();
    assert_words(&f.transcript(), &["hello"]);

    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = svc.child().try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "service did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "clean exit");
    assert!(!alive(worker), "worker stopped with the service");
}

#[tokio::test]
async fn a_stream_whose_client_leaves_mid_decode_is_cancelled_in_the_worker() {
    let svc = Service::start(&[]);
    svc.wait_ready(Duration::from_secs(30)).await;
    // 62 s of speech: three 30 s windows. The client reads the first
    // window's segments, then goes away.
    let mut r = post_stream(&svc.base, "long60.wav", &[("vad_filter", "false")]).await;
    let first = r.chunk().await.expect("body").expect("a first event");
    assert!(
        std::str::from_utf8(&first)
            .unwrap()
            .contains("transcript.text.delta"),
        "{first:?}"
    );
    drop(r);

    svc.wait_health("worker idle", Duration::from_secs(30), |h| {
        h["worker_state"] == "ready" && h["in_flight"] == 0
    })
    .await;
    let logs = svc.logs();
    assert!(
        logs.contains("client gone, cancelling the job in the worker"),
        "no cancel logged:\n{logs}"
    );
    assert!(
        logs.contains("cancelled while decoding"),
        "the worker did not stop the job:\n{logs}"
    );
    assert_eq!(logs.matches("job done").count(), 0, "{logs}");
    // The worker serves the next request.
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
}
