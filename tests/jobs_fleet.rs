//! Async jobs across a fleet (issue 16): real nodes sharing one real
//! PostgreSQL job store (`--jobs-store postgres://…`).

mod common;

use std::time::Duration;

use common::postgres::Postgres;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jobs_submitted_to_one_node_run_on_idle_nodes_and_are_readable_from_every_node() {
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
