//! Async jobs across a fleet (issue 16): real nodes sharing one real
//! PostgreSQL job store (`--jobs-store postgres://…`).

mod common;

use std::time::{Duration, Instant};

use common::postgres::Postgres;
use common::*;

/// Each test starts a PostgreSQL server and two or three nodes: one test
/// at a time, so their timings do not depend on each other's load.
static FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_submitted_to_one_node_run_on_idle_nodes_and_are_readable_from_every_node() {
    let _one_at_a_time = FLEET.lock().await;
    let pg = Postgres::start();
    let flags = [
        "--jobs-store",
        pg.url.as_str(),
        "--jobs-lease-secs",
        "3",
        "--beam-size",
        "1",
    ];
    let a = Service::start(&flags);
    let b = Service::start(&flags);
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;

    // Every job goes to node A; A runs one at a time, so idle B takes some.
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(a.submit_job("hello.wav", &[]).await);
    }
    for id in &ids {
        // Readable from B (the database) while A or B runs it.
        let job = b
            .wait_job(id, "done", Duration::from_secs(120), |j| {
                j["status"] == "done"
            })
            .await;
        assert_eq!(job["status"], "done", "{job}");
        for node in [&a, &b] {
            let (status, r) = node
                .get_json(&format!("/v1/jobs/{id}/result?response_format=json"))
                .await;
            assert_eq!(status, 200, "{r}");
            assert!(
                r["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains("hello"),
                "{r}"
            );
        }
    }
    let claimed_by = |s: &Service| {
        s.logs()
            .matches("job claimed from the shared store")
            .count()
    };
    let (on_a, on_b) = (claimed_by(&a), claimed_by(&b));
    eprintln!("claims: A {on_a}, B {on_b}");
    assert!(on_b >= 1, "idle node B ran none of A's jobs");
    assert_eq!(on_a + on_b, ids.len(), "every job claimed once");

    // Listing and counts through the store, from either node.
    let (status, list) = b.get_json("/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["counts"]["done"], ids.len(), "{list}");
}

/// `POST /v1/jobs` with headers (the fault injection header).
async fn post_job_with(base: &str, fixture_name: &str, headers: &[(&str, &str)]) -> Answer {
    let bytes = std::fs::read(fixture(fixture_name)).unwrap();
    let mut r = client()
        .post(format!("{base}/v1/jobs"))
        .multipart(upload_form(bytes, fixture_name, &[]));
    for (k, v) in headers {
        r = r.header(*k, *v);
    }
    match r.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            let text = r.text().await.unwrap_or_default();
            Answer {
                status,
                headers,
                text,
            }
        }
        // A node that is gone: nothing was accepted.
        Err(e) => Answer {
            status: 0,
            headers: Default::default(),
            text: e.to_string(),
        },
    }
}

fn claimed_here(s: &Service, id: &str) -> bool {
    s.logs()
        .lines()
        .any(|l| l.contains("job claimed from the shared store") && l.contains(id))
}

fn claims(s: &Service) -> usize {
    s.logs()
        .matches("job claimed from the shared store")
        .count()
}

/// Every job is done with a transcript of hello.wav, read from each node.
async fn assert_all_done(ids: &[String], nodes: &[&Service]) {
    for id in ids {
        let job = nodes[0]
            .wait_job(id, "done", Duration::from_secs(120), |j| {
                j["status"] != "queued" && j["status"] != "running"
            })
            .await;
        assert_eq!(job["status"], "done", "{job}");
        for node in nodes {
            let (status, r) = node
                .get_json(&format!("/v1/jobs/{id}/result?response_format=json"))
                .await;
            assert_eq!(status, 200, "{id} from {}: {r}", node.base);
            assert!(
                r["text"]
                    .as_str()
                    .unwrap_or_default()
                    .to_lowercase()
                    .contains("hello"),
                "{r}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_running_on_a_sigkilled_node_is_finished_by_another_after_its_lease_expires() {
    let _one_at_a_time = FLEET.lock().await;
    let pg = Postgres::start();
    let flags = [
        "--jobs-store",
        pg.url.as_str(),
        "--jobs-lease-secs",
        "3",
        "--beam-size",
        "1",
        "--enable-fault-injection",
    ];
    let mut nodes = vec![Service::start(&flags), Service::start(&flags)];
    for n in &nodes {
        n.wait_ready(Duration::from_secs(60)).await;
    }

    // A long job (6 s of injected delay in the worker before it decodes):
    // one of the two nodes claims it.
    let a = post_job_with(
        &nodes[0].base,
        "hello.wav",
        &[("X-Fault-Inject", "slow:6000")],
    )
    .await;
    assert_eq!(a.status, 202, "{}", a.text);
    let long = a.json()["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let victim = loop {
        if let Some(i) = (0..2).find(|&i| claimed_here(&nodes[i], &long)) {
            break i;
        }
        assert!(Instant::now() < deadline, "nobody claimed the long job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let survivor_node = nodes.remove(1 - victim);
    let mut victim_node = nodes.remove(0);
    let (job_status, job) = survivor_node.get_json(&format!("/v1/jobs/{long}")).await;
    assert_eq!(job_status, 200, "{job}");
    assert_eq!(job["status"], "running", "{job}");

    // Jobs keep arriving at the victim until it dies: every one it
    // accepted (202) must end done; a refused connection accepted nothing.
    let mut accepted = vec![long.clone()];
    let submitter = {
        let base = victim_node.base.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let a = post_job_with(&base, "hello.wav", &[]).await;
                match a.status {
                    202 => ids.push(a.json()["id"].as_str().unwrap().to_string()),
                    0 => return ids,
                    other => panic!("job answered {other}: {}", a.text),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(800)).await;
    victim_node
        .child()
        .kill()
        .expect("SIGKILL the node running the job");
    let killed_at = Instant::now();
    victim_node.child().wait().unwrap();
    let more = tokio::time::timeout(Duration::from_secs(30), submitter)
        .await
        .expect("the submitter saw the node die")
        .unwrap();
    eprintln!("accepted by the victim while it lived: {}", more.len());
    accepted.extend(more);
    assert!(
        !claimed_here(&survivor_node, &long),
        "the survivor ran the long job before its lease expired"
    );

    // The survivor takes the long job over once the lease expires (3 s
    // after the victim's last renewal), reruns it and finishes it.
    let job = survivor_node
        .wait_job(&long, "done", Duration::from_secs(90), |j| {
            j["status"] != "queued" && j["status"] != "running"
        })
        .await;
    assert_eq!(job["status"], "done", "{job}");
    assert!(
        claimed_here(&survivor_node, &long),
        "the survivor finished a job it never claimed"
    );
    let took = killed_at.elapsed();
    assert!(
        took >= Duration::from_secs(6),
        "rerun with its 6 s delay: done {took:?} after the kill"
    );

    // Nothing accepted is lost, and every result is readable from the
    // survivor and from a node that joins afterwards.
    let newcomer = Service::start(&flags);
    newcomer.wait_ready(Duration::from_secs(60)).await;
    assert_all_done(&accepted, &[&survivor_node, &newcomer]).await;
    let (status, list) = newcomer.get_json("/v1/jobs").await;
    assert_eq!(status, 200, "{list}");
    // Every accepted job is done; at most one more: a submission the
    // victim committed whose 202 the SIGKILL cut off (durable, so run too).
    let done = list["counts"]["done"].as_u64().unwrap() as usize;
    assert!(
        (accepted.len()..=accepted.len() + 1).contains(&done),
        "{} accepted, {done} done: {list}",
        accepted.len()
    );
    assert_eq!(list["counts"]["failed"], 0, "{list}");
    assert_eq!(list["counts"]["queued"], 0, "{list}");
    assert_eq!(list["counts"]["running"], 0, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_submitted_to_a_node_whose_worker_is_busy_are_run_by_the_idle_node() {
    let _one_at_a_time = FLEET.lock().await;
    let pg = Postgres::start();
    let flags = [
        "--jobs-store",
        pg.url.as_str(),
        "--jobs-lease-secs",
        "3",
        "--beam-size",
        "1",
        "--enable-fault-injection",
    ];
    let a = Service::start(&flags);
    let b = Service::start(&flags);
    a.wait_ready(Duration::from_secs(60)).await;
    b.wait_ready(Duration::from_secs(60)).await;

    // A's worker is busy with a long synchronous request.
    let started = Instant::now();
    let sync = a.spawn_transcribe("hello.wav", &[("X-Fault-Inject", "slow:20000")]);
    a.wait_health("A's worker busy", Duration::from_secs(10), |h| {
        h["worker_state"] == "busy"
    })
    .await;

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(a.submit_job("hello.wav", &[]).await);
    }
    assert_all_done(&ids, &[&a, &b]).await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the jobs waited for A's worker: {:?}",
        started.elapsed()
    );
    assert_eq!(claims(&a), 0, "busy node A claimed a job");
    assert_eq!(claims(&b), ids.len(), "idle node B ran every job");

    let sync = sync.await.unwrap();
    assert_eq!(sync.status, 200, "{}", sync.text);
    assert_words(&sync.transcript(), &["hello"]);
}
