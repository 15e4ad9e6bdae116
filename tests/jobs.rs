//! Async jobs (issue 6) on the real binaries and model: submit and poll to
//! done, cancel before decode, bad ids, and a job that survives a SIGKILL
//! of the service mid-decode.

mod common;

use std::time::{Duration, Instant};

use common::*;

// What tiny.en reliably gets right in clip10 (see tests/transcribe.rs).
const CLIP10_WORDS: &[&str] = &["fox", "lazy dog", "speech recognition"];

fn secs(job: &serde_json::Value, key: &str) -> f64 {
    job["progress"][key]
        .as_f64()
        .unwrap_or_else(|| panic!("progress.{key} missing: {job}"))
}

#[tokio::test]
async fn a_job_is_accepted_polled_to_done_and_its_result_rendered() {
    let svc = Service::start(&[]);
    let bytes = std::fs::read(fixture("clip10.wav")).unwrap();
    let t0 = Instant::now();
    let a = post_job(
        &svc.base,
        bytes,
        "clip10.wav",
        &[("response_format", "srt")],
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let accepted = a.json();
    let id = accepted["id"].as_str().unwrap().to_string();
    assert_eq!(a.headers["location"], format!("/v1/jobs/{id}").as_str());
    assert_eq!(accepted["status"], "queued", "{accepted}");
    assert_eq!(accepted["response_format"], "srt");
    let total = secs(&accepted, "total_secs");
    assert!(
        (total - fixture_secs("clip10.wav")).abs() < 0.1,
        "total_secs {total}"
    );
    assert_eq!(secs(&accepted, "decoded_secs"), 0.0);

    let job = svc
        .wait_job(&id, "done", Duration::from_secs(60), |j| {
            let d = secs(j, "decoded_secs");
            assert!(
                (0.0..=total + 1e-6).contains(&d),
                "decoded_secs out of range: {j}"
            );
            assert!(j["status"] != "failed" && j["status"] != "cancelled", "{j}");
            j["status"] == "done"
        })
        .await;
    eprintln!("job done in {:?}", t0.elapsed());
    assert_eq!(secs(&job, "decoded_secs"), total);
    let (created, started, finished) = (
        job["created_at"].as_u64().unwrap(),
        job["started_at"].as_u64().unwrap(),
        job["finished_at"].as_u64().unwrap(),
    );
    assert!(created <= started && started <= finished, "{job}");
    assert!(
        job["expires_at"].as_u64().unwrap() >= finished + 86_000,
        "{job}"
    );
    assert!(job["error"].is_null());
    let result = &job["result"];
    assert_words(result["text"].as_str().unwrap(), CLIP10_WORDS);
    assert_eq!(result["language"], "english");
    assert!(
        !result["segments"].as_array().unwrap().is_empty(),
        "{result}"
    );

    // The result in the job's own format, and in another on request.
    let r = client()
        .get(format!("{}/v1/jobs/{id}/result", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let srt = r.text().await.unwrap();
    assert!(srt.starts_with("1\n00:00:"), "{srt}");
    assert!(srt.contains(" --> "), "{srt}");
    let r = client()
        .get(format!("{}/v1/jobs/{id}?format=text", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_words(&r.text().await.unwrap(), CLIP10_WORDS);
    let r = client()
        .get(format!("{}/v1/jobs/{id}?format=xml", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // Listed; then deleted, and gone.
    let (status, list) = svc.get_json("/v1/jobs?status=done").await;
    assert_eq!(status, 200);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str()),
        "{list}"
    );
    assert_eq!(list["counts"]["done"], 1);
    let r = client()
        .delete(format!("{}/v1/jobs/{id}", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let (status, body) = svc.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &"job_not_found".into())
    );
}

#[tokio::test]
async fn bad_ids_are_404_and_bad_uploads_are_refused_like_the_sync_endpoint() {
    let svc = Service::start(&[]);
    let unknown = "1b4e28ba-2fa1-41d2-883f-0016d3cca427";
    for path in [
        "/v1/jobs/42".to_string(),
        "/v1/jobs/not-a-job".to_string(),
        format!("/v1/jobs/{unknown}"),
        format!("/v1/jobs/{unknown}/result"),
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd".to_string(),
    ] {
        let (status, body) = svc.get_json(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "job_not_found", "{path}: {body}");
    }
    for id in ["nope", unknown] {
        let r = client()
            .delete(format!("{}/v1/jobs/{id}", svc.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "DELETE {id}");
    }

    // Validated before anything is stored: same statuses as the sync endpoint.
    let garbage = post_job(
        &svc.base,
        b"this is not audio at all".to_vec(),
        "x.wav",
        &[],
    )
    .await;
    assert!(
        matches!(garbage.status, 400 | 415),
        "{}: {}",
        garbage.status,
        garbage.text
    );
    let empty = post_job(&svc.base, vec![], "empty.wav", &[]).await;
    assert_eq!(empty.status, 400, "{}", empty.text);
    let bad_field = post_job(
        &svc.base,
        std::fs::read(fixture("hello.wav")).unwrap(),
        "hello.wav",
        &[("response_format", "xml")],
    )
    .await;
    assert_eq!(bad_field.status, 400, "{}", bad_field.text);
    let streamed = post_job(
        &svc.base,
        std::fs::read(fixture("hello.wav")).unwrap(),
        "hello.wav",
        &[("stream", "true")],
    )
    .await;
    assert_eq!(
        (streamed.status, &streamed.json()["error"]["param"]),
        (400, &"stream".into()),
        "a job cannot be streamed: {}",
        streamed.text
    );
    let (_, list) = svc.get_json("/v1/jobs").await;
    assert_eq!(
        list["data"].as_array().unwrap().len(),
        0,
        "nothing was accepted: {list}"
    );

    // A node without the job service says so.
    let off = Service::start(&["--disable-jobs"]);
    let (status, body) = off.get_json(&format!("/v1/jobs/{unknown}")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &"jobs_disabled".into()),
        "{body}"
    );
}

#[tokio::test]
async fn a_queued_job_that_is_cancelled_is_never_decoded() {
    let svc = Service::start(&["--enable-fault-injection"]);
    // Keep the worker busy: the runner only hands async jobs to an idle node.
    let blocker = svc.spawn_transcribe("hello.wav", &[("x-fault-inject", "slow:5000")]);
    svc.wait_health("worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;

    let id = svc.submit_job("clip10.wav", &[]).await;
    let (_, job) = svc.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "queued", "{job}");
    assert_eq!(job["queue_position"], 1, "{job}");

    let r = client()
        .delete(format!("{}/v1/jobs/{id}", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let cancelled: serde_json::Value = r.json().await.unwrap();
    assert_eq!(cancelled["status"], "cancelled", "{cancelled}");
    assert!(cancelled["finished_at"].is_u64(), "{cancelled}");

    // The blocker finishes; the worker goes idle and stays idle.
    assert_eq!(blocker.await.unwrap().status, 200);
    svc.wait_health("worker idle", Duration::from_secs(10), |h| {
        h["worker_state"] == "ready"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, job) = svc.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert!(job["started_at"].is_null(), "never started: {job}");
    let logs = svc.logs();
    assert_eq!(
        logs.matches("job done").count(),
        1,
        "only the blocker was decoded"
    );
    assert!(
        !logs.contains("async job handed to the node"),
        "the job reached the node"
    );
    let (_, h) = svc.get_json("/health").await;
    assert_eq!(h["jobs"]["ok"], 1, "{h}");

    // A second DELETE deletes the cancelled job.
    let r = client()
        .delete(format!("{}/v1/jobs/{id}", svc.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test]
async fn an_accepted_job_survives_a_sigkill_of_the_service_mid_decode() {
    let data = tempfile::tempdir().unwrap();
    let dir = data.path().to_str().unwrap().to_string();
    let mut first = Service::start(&["--jobs-data-dir", &dir]);
    let id = first
        .submit_job("long60.wav", &[("response_format", "verbose_json")])
        .await;

    // Wait until it decodes: handed to the node, and the worker busy.
    first
        .wait_job(&id, "running", Duration::from_secs(30), |j| {
            j["status"] == "running"
        })
        .await;
    first
        .wait_health("worker busy", Duration::from_secs(10), |h| {
            h["worker_state"] == "busy"
        })
        .await;
    signal(first.pid(), libc::SIGKILL);
    let _ = first.child().wait();
    drop(first);

    // Restarted on the same data directory: the job is back and finishes.
    let second = Service::start(&["--jobs-data-dir", &dir]);
    let (status, job) = second.get_json(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status, 200, "the job survived the crash: {job}");
    assert!(
        matches!(job["status"].as_str(), Some("queued" | "running")),
        "{job}"
    );
    let total = secs(&job, "total_secs");
    assert!((total - fixture_secs("long60.wav")).abs() < 0.1, "{job}");

    // Polled to done; progress only grows while it runs, and is seen
    // between 0 and the total (it is published after each 30 s window).
    let deadline = Instant::now() + Duration::from_secs(90);
    let (mut last, mut mid_progress) = (0.0f64, false);
    let job = loop {
        let (status, j) = second.get_json(&format!("/v1/jobs/{id}")).await;
        assert_eq!(status, 200, "{j}");
        let d = secs(&j, "decoded_secs");
        assert!((0.0..=total + 1e-6).contains(&d), "{j}");
        match j["status"].as_str() {
            Some("done") => break j,
            Some("running") => {
                assert!(d >= last, "progress went backwards: {last} then {d}");
                last = d;
                mid_progress |= d > 0.0 && d < total;
            }
            Some("queued") => {}
            _ => panic!("unexpected job state after the restart: {j}"),
        }
        assert!(
            Instant::now() < deadline,
            "not done after the restart within 90 s: {j}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        mid_progress,
        "no progress was reported while the 62 s clip decoded"
    );
    assert_eq!(secs(&job, "decoded_secs"), total);
    let text = job["result"]["text"].as_str().unwrap().to_lowercase();
    let keywords = [
        "morning",
        "weather",
        "library",
        "museum",
        "breakfast",
        "bridge",
        "lighthouse",
    ];
    let heard = keywords.iter().filter(|k| text.contains(*k)).count();
    assert!(heard >= 5, "only {heard} of {keywords:?} in {text:?}");
    let segments = job["result"]["segments"].as_array().unwrap();
    assert!(segments.len() >= 2, "{job}");
    assert!(
        segments.last().unwrap()["end"].as_f64().unwrap() > 45.0,
        "segments reach the end of the clip: {job}"
    );
}
