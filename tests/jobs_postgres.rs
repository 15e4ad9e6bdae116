//! The shared PostgreSQL job store (issue 16) against a real PostgreSQL
//! server (Debian's `postgresql` package, installed by `make setup`): the
//! test runs `initdb` in a temporary folder, starts `postgres` on a free
//! loopback port and stops it at the end.
//!
//! These tests drive the store's claim/lease protocol directly, as two
//! nodes would: exclusive claims (`FOR UPDATE SKIP LOCKED`), lease renewal,
//! take-over after a lease expires, fencing of the node that lost its lease,
//! cancellation from another node, the crash-loop limit, and migrations
//! run by nodes starting together.

mod common;

use std::time::{Duration, Instant};

use whisper_node::api::{DecodeOptions, Granularities, JobResult, ResponseFormat};
use whisper_node::jobs::pg::{PgCancel, PgStore};
use whisper_node::jobs::{JobError, JobId, JobSpec, JobStatus};

use common::postgres::Postgres;

fn spec(audio_secs: f64) -> JobSpec {
    JobSpec {
        options: DecodeOptions::default(),
        response_format: ResponseFormat::Json,
        granularities: Granularities {
            segment: false,
            word: false,
        },
        file_hint: Some("wav".into()),
        audio_secs,
        upload_bytes: 4,
        fault: None,
    }
}

fn result(text: &str) -> JobResult {
    JobResult {
        job_id: 1,
        text: text.into(),
        segments: vec![],
        language: "en".into(),
        language_probability: 1.0,
        duration_secs: 2.5,
        timings: Default::default(),
    }
}

async fn connect(url: &str) -> PgStore {
    // The server may still be starting up right after it listens.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match PgStore::connect(url).await {
            Ok(s) => return s,
            Err(e) if Instant::now() < deadline => {
                eprintln!("waiting for postgres: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("connect: {e}"),
        }
    }
}

const LEASE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_claim_exclusively_and_a_lost_lease_is_taken_over_and_fenced() {
    let pg = Postgres::start();
    // Two nodes starting together both migrate: the advisory lock makes
    // one apply the schema and the other find it done.
    let first = connect(&pg.url).await;
    let (a, b) = tokio::join!(PgStore::connect(&pg.url), PgStore::connect(&pg.url));
    let (a, b) = (a.expect("node a"), b.expect("node b"));
    drop(first);

    // Submitted to A: audio and record durable before `insert` returns.
    let ids: Vec<JobId> = {
        let mut v = vec![];
        for i in 0..6 {
            let id = JobId::random();
            a.insert(id, &spec(2.5), format!("wav{i}").as_bytes())
                .await
                .unwrap();
            v.push(id);
        }
        v
    };
    assert_eq!(a.pending().await.unwrap(), 6);
    let seen = b.get(ids[0]).await.unwrap().expect("B reads A's job");
    assert_eq!(seen.status, JobStatus::Queued);
    assert_eq!(seen.spec, spec(2.5));

    // Both claim at once, three times each: six different jobs, oldest
    // first overall, and nothing left.
    let mut claims = vec![];
    for _ in 0..3 {
        let (ca, cb) = tokio::join!(a.claim("a", LEASE, 3), b.claim("b", LEASE, 3));
        claims.push(("a", ca.unwrap().expect("a claim")));
        claims.push(("b", cb.unwrap().expect("b claim")));
    }
    let mut got: Vec<JobId> = claims.iter().map(|(_, c)| c.job.id).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want, "every job claimed exactly once");
    assert!(a.claim("a", LEASE, 3).await.unwrap().is_none());
    for (owner, c) in &claims {
        assert_eq!(c.job.status, JobStatus::Running);
        assert_eq!(c.job.lease_owner.as_deref(), Some(*owner));
        assert_eq!(c.job.claims, 1);
        let i = ids.iter().position(|id| *id == c.job.id).unwrap();
        assert_eq!(
            c.audio,
            format!("wav{i}").as_bytes(),
            "the audio travels with the claim"
        );
    }

    // Renewal keeps the lease; another token cannot renew or finish it.
    let (_, c0) = &claims[0];
    assert!(a.renew(c0.job.id, c0.token, LEASE, 1.0).await.unwrap());
    assert!(!b
        .renew(c0.job.id, uuid::Uuid::new_v4(), LEASE, 2.0)
        .await
        .unwrap());
    assert!(!b
        .finish(c0.job.id, uuid::Uuid::new_v4(), Ok(&result("forged")))
        .await
        .unwrap());
    let j = b.get(c0.job.id).await.unwrap().unwrap();
    assert_eq!((j.status, j.decoded_secs), (JobStatus::Running, 1.0));

    // Every other job finishes normally, its result readable from both.
    for (owner, c) in &claims[1..] {
        let store = if *owner == "a" { &a } else { &b };
        assert!(store
            .finish(c.job.id, c.token, Ok(&result("hello")))
            .await
            .unwrap());
    }
    for store in [&a, &b] {
        let j = store.get(claims[1].1.job.id).await.unwrap().unwrap();
        assert_eq!(j.status, JobStatus::Done);
        assert_eq!(j.result.as_ref().map(|r| r.text.as_str()), Some("hello"));
        assert!(j.finished_at_ms.is_some());
    }

    // A node dies holding a short lease: nobody can claim the job until
    // the lease expires, then B takes it over; A's late writes are fenced.
    let id = JobId::random();
    a.insert(id, &spec(1.0), b"audio").await.unwrap();
    let lease = Duration::from_millis(400);
    let dead = a.claim("a", lease, 3).await.unwrap().expect("a claims");
    assert_eq!(dead.job.id, id);
    assert!(
        b.claim("b", LEASE, 3).await.unwrap().is_none(),
        "lease still held"
    );
    tokio::time::sleep(lease + Duration::from_millis(200)).await;
    let took = b.claim("b", LEASE, 3).await.unwrap().expect("b takes over");
    assert_eq!((took.job.id, took.job.claims), (id, 2));
    assert_eq!(took.audio, b"audio");
    assert!(
        !a.renew(id, dead.token, lease, 0.5).await.unwrap(),
        "a lost its lease"
    );
    assert!(!a
        .finish(id, dead.token, Ok(&result("stale")))
        .await
        .unwrap());
    assert!(b
        .finish(id, took.token, Ok(&result("taken over")))
        .await
        .unwrap());
    let j = a.get(id).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Done);
    assert_eq!(j.result.unwrap().text, "taken over");
    assert_eq!(j.lease_owner.as_deref(), Some("b"));

    // Cancelled from B while A runs it: A's next renewal says stop.
    let (_, running) = &claims[0];
    assert_eq!(b.cancel(running.job.id).await.unwrap(), PgCancel::Cancelled);
    assert!(!a
        .renew(running.job.id, running.token, LEASE, 2.0)
        .await
        .unwrap());
    assert!(!a
        .finish(running.job.id, running.token, Ok(&result("late")))
        .await
        .unwrap());
    assert_eq!(
        a.get(running.job.id).await.unwrap().unwrap().status,
        JobStatus::Cancelled
    );
    // A finished job is deleted; then it is gone.
    assert_eq!(a.cancel(running.job.id).await.unwrap(), PgCancel::Deleted);
    assert_eq!(a.cancel(running.job.id).await.unwrap(), PgCancel::NotFound);
    assert!(a.get(running.job.id).await.unwrap().is_none());

    // Released (the node was busy): queued again, the claim not counted.
    let id = JobId::random();
    a.insert(id, &spec(1.0), b"x").await.unwrap();
    let c = a.claim("a", LEASE, 3).await.unwrap().unwrap();
    assert!(a.release(id, c.token).await.unwrap());
    let c = b.claim("b", LEASE, 3).await.unwrap().unwrap();
    assert_eq!((c.job.id, c.job.claims), (id, 1));
    let err = JobError {
        code: "decode_timeout".into(),
        message: "too slow".into(),
    };
    assert!(b.finish(id, c.token, Err(&err)).await.unwrap());
    assert_eq!(a.get(id).await.unwrap().unwrap().error, Some(err));

    assert_eq!(a.pending().await.unwrap(), 0);
    assert_eq!(a.list(Some(JobStatus::Done), 100).await.unwrap().len(), 6);
    let all = b.list(None, 3).await.unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].id, id, "newest first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_keeps_killing_nodes_is_failed_not_run_forever() {
    let pg = Postgres::start();
    let s = connect(&pg.url).await;
    let id = JobId::random();
    s.insert(id, &spec(1.0), b"poison").await.unwrap();
    let lease = Duration::from_millis(200);
    for attempt in 1..=2 {
        let c = s
            .claim(&format!("n{attempt}"), lease, 2)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.job.claims, attempt);
        tokio::time::sleep(lease + Duration::from_millis(150)).await;
    }
    assert!(s.claim("n3", lease, 2).await.unwrap().is_none());
    let j = s.get(id).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.unwrap().code, "worker_crashed");

    // Purge: finished jobs past their retention go.
    assert_eq!(s.purge(Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(s.purge(Duration::ZERO).await.unwrap(), 1);
    assert!(s.get(id).await.unwrap().is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_are_recorded_once_and_a_newer_schema_is_refused() {
    let pg = Postgres::start();
    connect(&pg.url).await;
    let (client, conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM whisper_jobs_migrations ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let want: Vec<i32> = (1..=PgStore::schema_version()).collect();
    assert_eq!(versions, want);
    PgStore::connect(&pg.url)
        .await
        .expect("reconnect: nothing to migrate");
    client
        .execute(
            "INSERT INTO whisper_jobs_migrations (version) VALUES (999)",
            &[],
        )
        .await
        .unwrap();
    let err = PgStore::connect(&pg.url).await.unwrap_err();
    assert!(err.to_string().contains("999"), "{err}");
}
