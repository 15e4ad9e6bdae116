//! Process isolation: a worker killed mid-decode, and a service killed with
//! SIGKILL, on the real binaries and model.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[tokio::test]
async fn worker_killed_mid_decode_answers_5xx_restarts_and_serves_again() {
    // Crash retries off: the in-flight request itself must learn of the crash
    // (with retries on it is retried instead; see tests/admission.rs).
    let svc = Service::start(&["--max-crash-retries", "0"]);
    let (_, h) = svc.get_json("/health").await;
    let first_pid = h["worker_pid"].as_u64().expect("worker pid in /health") as u32;
    assert_eq!(h["worker_generation"], 0);

    // A long clip keeps the worker busy for seconds.
    let base = svc.base.clone();
    let long = fixture("long60.wav");
    let request = tokio::spawn(async move {
        let svc_ref = Target { base };
        svc_ref.post(&long).await
    });

    // Kill it once it is decoding.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, h) = svc.get_json("/health").await;
        if h["worker_state"] == "busy" {
            break;
        }
        assert!(Instant::now() < deadline, "worker never became busy: {h}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    signal(first_pid, libc::SIGKILL);

    let (status, body) = request.await.unwrap();
    assert!(
        (500..600).contains(&status),
        "in-flight request must get a 5xx, got {status}: {body}"
    );
    let v: serde_json::Value = serde_json::from_str(&body).expect("JSON error body");
    assert_eq!(v["error"]["code"], "worker_crashed", "{body}");

    // The supervisor restarts it and readiness comes back.
    let ready = svc.wait_ready(Duration::from_secs(60)).await;
    assert_eq!(ready["worker_generation"], 1, "{ready}");
    assert_eq!(ready["worker_restarts"], 1, "{ready}");
    assert_ne!(ready["worker_pid"].as_u64().unwrap() as u32, first_pid);
    assert!(!alive(first_pid), "the killed worker is gone");
    let (_, h) = svc.get_json("/health").await;
    assert!(
        h["last_worker_exit"].as_str().unwrap().contains("SIGKILL"),
        "{h}"
    );

    // The next request succeeds on the new worker.
    let a = svc.transcribe(&fixture("hello.wav"), &[]).await;
    assert_words(&a.transcript(), &["hello", "world"]);
    assert_eq!(a.headers["x-worker-generation"], "1");
}

struct Target {
    base: String,
}

impl Target {
    async fn post(&self, file: &std::path::Path) -> (u16, String) {
        let form = upload_form(std::fs::read(file).unwrap(), "long60.wav", &[]);
        let r = client()
            .post(format!("{}/v1/audio/transcriptions", self.base))
            .multipart(form)
            .send()
            .await
            .expect("the in-flight request must get an answer, not a dropped connection");
        (r.status().as_u16(), r.text().await.unwrap_or_default())
    }
}

#[tokio::test]
async fn killing_the_service_with_sigkill_leaves_no_worker_behind() {
    let mut svc = Service::start(&[]);
    let (_, h) = svc.get_json("/health").await;
    let worker = h["worker_pid"].as_u64().expect("worker pid") as u32;
    assert!(alive(worker));
    assert_eq!(
        worker_children(svc.pid()),
        vec![worker],
        "the worker is the service's child"
    );

    signal(svc.pid(), libc::SIGKILL);
    let _ = svc.child().wait();
    let deadline = Instant::now() + Duration::from_secs(2);
    while alive(worker) {
        assert!(
            Instant::now() < deadline,
            "worker {worker} outlived its parent by more than 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
