//! The job service's behaviour: durability, the runner, cancel, backlog,
//! recovery, retention, a slow or failing store.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::jobs::store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_durable_when_accepted_then_runs_to_done() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::from_millis(20));
    fake.set_idle(false);
    let jobs = start(&fake, config(dir.path())).await;

    let view = jobs.submit(submission(1.5)).await.unwrap();
    assert_eq!(view.status, JobStatus::Queued);
    assert_eq!(view.queue_position, Some(1));
    assert!((view.progress.total_secs - 1.5).abs() < 0.01);
    assert_eq!(view.response_format, "srt");
    // Durable before `submit` returned: the upload and the committed row,
    // read through a separate connection.
    assert_eq!(
        std::fs::read(store::audio_path(dir.path(), view.id)).unwrap(),
        wav(1.5)
    );
    assert_eq!(
        store::read_job(dir.path(), view.id).unwrap().unwrap().0,
        JobStatus::Queued
    );

    fake.set_idle(true);
    let done = wait_status(&jobs, view.id, JobStatus::Done, Duration::from_secs(5)).await;
    assert_eq!(done.result.as_ref().unwrap().text, " the lazy dog");
    assert_eq!(done.progress.decoded_secs, done.progress.total_secs);
    assert!(done.started_at.is_some() && done.finished_at.is_some() && done.expires_at.is_some());
    assert!(done.error.is_none());

    assert!(jobs.flush().await);
    let (status, result) = store::read_job(dir.path(), view.id).unwrap().unwrap();
    assert_eq!(status, JobStatus::Done);
    assert!(result.unwrap().contains("lazy dog"));
    assert!(
        !store::audio_path(dir.path(), view.id).exists(),
        "audio deleted once done is committed"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    jobs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_store_never_stalls_polls_or_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::from_millis(30));
    fake.set_idle(false);
    let jobs = start(&fake, config(dir.path())).await;
    let mut ids = vec![];
    for _ in 0..3 {
        ids.push(jobs.submit(submission(1.0)).await.unwrap().id);
    }

    // From now on every store transaction takes 3 s.
    let commits_before = jobs.store_hooks().commits.load(Ordering::SeqCst);
    jobs.store_hooks().delay_ms.store(3000, Ordering::SeqCst);
    let t0 = Instant::now();
    fake.set_idle(true);

    // All three decode back to back, and every poll answers at once.
    let mut slowest_poll = Duration::ZERO;
    loop {
        let mut done = 0;
        for id in &ids {
            let p = Instant::now();
            let v = jobs.get(*id).unwrap();
            slowest_poll = slowest_poll.max(p.elapsed());
            done += usize::from(v.status == JobStatus::Done);
        }
        if done == ids.len() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "jobs stalled behind the slow store"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all_done = t0.elapsed();
    assert!(
        all_done < Duration::from_secs(2),
        "three 30 ms decodes took {all_done:?}"
    );
    assert!(
        slowest_poll < Duration::from_millis(50),
        "a poll took {slowest_poll:?}"
    );
    assert_eq!(fake.calls.load(Ordering::SeqCst), 3);
    // The store had not caught up while all that happened.
    assert!(jobs.store_hooks().commits.load(Ordering::SeqCst) <= commits_before + 1);
    assert_eq!(jobs.list(Some(JobStatus::Done), 10).len(), 3);

    // A failing store: new submissions are refused (they cannot be made
    // durable), but what was accepted still finishes and polls still work.
    jobs.store_hooks().delay_ms.store(0, Ordering::SeqCst);
    assert!(jobs.flush().await);
    for id in &ids {
        assert_eq!(
            store::read_job(dir.path(), *id).unwrap().unwrap().0,
            JobStatus::Done
        );
    }
    fake.set_idle(false);
    let queued = jobs.submit(submission(1.0)).await.unwrap().id;
    jobs.store_hooks().fail.store(true, Ordering::SeqCst);
    let refused = jobs.submit(submission(1.0)).await;
    assert!(matches!(refused, Err(SubmitError::Store(_))), "{refused:?}");
    fake.set_idle(true);
    wait_status(&jobs, queued, JobStatus::Done, Duration::from_secs(5)).await;
    assert_eq!(jobs.counts().done, 4);
    jobs.store_hooks().fail.store(false, Ordering::SeqCst);
    jobs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_deletes_and_the_backlog_limit() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::from_millis(400));
    fake.set_idle(false);
    let mut c = config(dir.path());
    c.max_pending = 2;
    let jobs = start(&fake, c).await;

    // Queued and cancelled: never reaches the node.
    let a = jobs.submit(submission(1.0)).await.unwrap().id;
    let b = jobs.submit(submission(1.0)).await.unwrap().id;
    match jobs.submit(submission(1.0)).await {
        Err(SubmitError::BacklogFull {
            pending,
            retry_after,
        }) => {
            assert_eq!(pending, 2);
            assert!(retry_after >= Duration::from_secs(1), "{retry_after:?}");
        }
        other => panic!("expected a full backlog, got {other:?}"),
    }
    match jobs.cancel(a) {
        CancelOutcome::Cancelled(v) => assert_eq!(v.status, JobStatus::Cancelled),
        other => panic!("{other:?}"),
    }
    assert_eq!(jobs.get(b).unwrap().queue_position, Some(1));

    // Running and cancelled: the runner stops waiting at once.
    fake.set_idle(true);
    wait_status(&jobs, b, JobStatus::Running, Duration::from_secs(2)).await;
    // Its stored audio is decoded first; cancel once the node has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.calls.load(Ordering::SeqCst) == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(matches!(jobs.cancel(b), CancelOutcome::Cancelled(_)));
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        jobs.get(b).unwrap().status,
        JobStatus::Cancelled,
        "a late result does not resurrect it"
    );
    assert_eq!(jobs.get(a).unwrap().status, JobStatus::Cancelled);
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        1,
        "the queued job never reached the node"
    );

    // Finished jobs are deleted; unknown ones are not found.
    assert!(matches!(jobs.cancel(a), CancelOutcome::Deleted));
    assert!(jobs.get(a).is_none());
    assert!(matches!(jobs.cancel(a), CancelOutcome::NotFound));
    assert!(jobs.flush().await);
    assert_eq!(store::read_job(dir.path(), a).unwrap(), None);
    assert_eq!(
        store::read_job(dir.path(), b).unwrap().unwrap().0,
        JobStatus::Cancelled
    );
    assert!(!store::audio_path(dir.path(), b).exists());
    jobs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_refusals_requeue_and_node_errors_fail() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::from_millis(10));
    fake.answers.lock().unwrap().extend([
        Err(AsrError::Busy {
            retry_after: Duration::from_millis(50),
            queued: 3,
        }),
        Err(AsrError::QueueTimeout {
            waited: Duration::from_secs(8),
        }),
        Ok(()),
        Err(AsrError::DecodeTimeout {
            limit: Duration::from_secs(30),
        }),
    ]);
    let jobs = start(&fake, config(dir.path())).await;
    let ok = jobs.submit(submission(1.0)).await.unwrap().id;
    let done = wait_status(&jobs, ok, JobStatus::Done, Duration::from_secs(5)).await;
    assert!(done.result.is_some());
    assert_eq!(
        fake.calls.load(Ordering::SeqCst),
        3,
        "busy and queue timeout were retried"
    );

    let bad = jobs.submit(submission(1.0)).await.unwrap().id;
    let failed = wait_status(&jobs, bad, JobStatus::Failed, Duration::from_secs(5)).await;
    let e = failed.error.unwrap();
    assert_eq!(e.code, "decode_timeout");
    assert!(failed.result.is_none());

    // Bad audio never becomes a job.
    let mut garbage = submission(1.0);
    garbage.upload = b"definitely not audio".to_vec().into();
    assert!(matches!(
        jobs.submit(garbage).await,
        Err(SubmitError::Audio(_))
    ));
    assert_eq!(jobs.counts().queued, 0);
    jobs.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_jobs_are_requeued_after_a_restart_and_expired_ones_purged() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::from_millis(10));
    let jobs = start(&fake, config(dir.path())).await;
    let done = jobs.submit(submission(1.0)).await.unwrap().id;
    wait_status(&jobs, done, JobStatus::Done, Duration::from_secs(5)).await;
    fake.set_idle(false);
    let waiting = jobs.submit(submission(2.0)).await.unwrap().id;
    jobs.close().await;

    // Restart: the finished job is still there, the waiting one runs.
    let fake = Fake::new(Duration::from_millis(10));
    let jobs = start(&fake, config(dir.path())).await;
    assert_eq!(jobs.get(done).unwrap().status, JobStatus::Done);
    assert!(jobs.get(done).unwrap().result.is_some());
    let v = wait_status(&jobs, waiting, JobStatus::Done, Duration::from_secs(5)).await;
    assert!((v.progress.total_secs - 2.0).abs() < 0.01);
    jobs.close().await;

    // A short retention purges both, records and all.
    let mut c = config(dir.path());
    c.retention_secs = 0.2;
    let jobs = start(&fake, c).await;
    let deadline = Instant::now() + Duration::from_secs(3);
    while jobs.get(done).is_some() || jobs.get(waiting).is_some() {
        assert!(Instant::now() < deadline, "expired jobs were not purged");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(jobs.flush().await);
    assert_eq!(store::read_job(dir.path(), done).unwrap(), None);
    assert_eq!(store::read_job(dir.path(), waiting).unwrap(), None);
    jobs.shutdown().await;
}
