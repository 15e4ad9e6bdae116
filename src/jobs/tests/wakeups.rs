//! The runner and the drain wait to be woken (job status changes, node
//! state changes) instead of polling. Deterministic: the clock is paused,
//! so a timer fires only when the test moves time on, and every assertion
//! on "at once" is made without letting time pass.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::*;

/// Long enough for any polling runner to look at the node many times: the
/// old runner looked every 50 ms (200 times here).
const QUIET: Duration = Duration::from_secs(10);
/// "At once": an answer that needs no timer to fire. With the clock
/// paused, the clock moves on only when every task waits, so this fails
/// whenever the awaited change depends on a timer.
const AT_ONCE: Duration = Duration::from_millis(1);

/// Lets every task that is ready run until all of them wait again.
async fn settle() {
    for _ in 0..16 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn the_runner_waits_for_the_node_to_become_idle_without_polling() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::ZERO);
    fake.set_idle(false);
    let jobs = start(&fake, config(dir.path())).await;

    // Nothing queued: the runner does not even look at the node.
    assert_eq!(fake.loads.load(Ordering::SeqCst), 0);
    let id = jobs.submit(submission(1.0)).await.unwrap().id;
    // The submission woke it: it looked once, found the node busy, and
    // now waits.
    tokio::time::timeout(Duration::from_secs(5), fake.looked.notified())
        .await
        .expect("the runner looked at the node after the submission");

    tokio::time::pause();
    settle().await;
    let looked = fake.loads.load(Ordering::SeqCst);
    tokio::time::advance(QUIET).await;
    settle().await;
    assert_eq!(
        fake.loads.load(Ordering::SeqCst),
        looked,
        "the runner polled the node while it waited for it to become idle"
    );
    assert_eq!(jobs.get(id).unwrap().status, JobStatus::Queued);

    // The node says it is idle: the job is handed over at once, with no
    // timer in between (it may even be done by the time we look: the fake
    // answers at once).
    fake.set_idle(true);
    let handed = wait_until(&jobs, id, |v| v.started_at.is_some(), AT_ONCE).await;
    assert_ne!(handed.status, JobStatus::Queued);

    tokio::time::resume();
    wait_status(&jobs, id, JobStatus::Done, Duration::from_secs(5)).await;
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
    jobs.shutdown().await;
}

#[tokio::test]
async fn a_submission_wakes_an_idle_runner_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::ZERO);
    fake.hold.store(true, Ordering::SeqCst);
    let jobs = start(&fake, config(dir.path())).await;
    settle().await;
    let id = jobs.submit(submission(1.0)).await.unwrap().id;
    // From the accept's publication to the node, no timer fires.
    tokio::time::pause();
    wait_until(&jobs, id, |v| v.status != JobStatus::Queued, AT_ONCE).await;
    tokio::time::resume();
    fake.release.notify_one();
    wait_status(&jobs, id, JobStatus::Done, Duration::from_secs(5)).await;
    jobs.shutdown().await;
}

#[tokio::test]
async fn the_drain_waits_for_the_running_job_and_wakes_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let fake = Fake::new(Duration::ZERO);
    fake.hold.store(true, Ordering::SeqCst);
    let jobs = start(&fake, config(dir.path())).await;
    let id = jobs.submit(submission(1.0)).await.unwrap().id;
    tokio::time::timeout(Duration::from_secs(5), fake.entered.notified())
        .await
        .expect("the job reached the node");

    // Shutdown drains: it refuses new jobs at once, and waits for the job
    // the node decodes (well within the grace period, 1 s + 15 s here).
    tokio::time::pause();
    let stopping = tokio::spawn({
        let jobs = jobs.clone();
        async move { jobs.shutdown().await }
    });
    settle().await;
    assert!(matches!(
        jobs.submit(submission(1.0)).await,
        Err(SubmitError::ShuttingDown)
    ));
    let mut drained = Box::pin(jobs.drained());
    tokio::time::advance(Duration::from_secs(5)).await;
    settle().await;
    assert!(!stopping.is_finished(), "shutdown did not wait for the job");
    assert!(
        futures::poll!(drained.as_mut()).is_pending(),
        "drained while a job runs"
    );
    assert_eq!(jobs.get(id).unwrap().status, JobStatus::Running);

    // The node answers: the job is done (not handed back), and the drain
    // is woken by that status change, with no timer in between.
    fake.release.notify_one();
    let done = wait_status(&jobs, id, JobStatus::Done, AT_ONCE).await;
    assert!(done.result.is_some());
    tokio::time::timeout(AT_ONCE, drained)
        .await
        .expect("the drain woke on the status change");

    tokio::time::resume();
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown ends once the job is done")
        .unwrap();
    assert_eq!(fake.calls.load(Ordering::SeqCst), 1);
}
