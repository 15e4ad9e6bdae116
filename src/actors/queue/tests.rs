//! The queue alone: a real `BoundedQueueActor` with a probe for the worker,
//! no model, no process.

use super::*;
use crate::actors::testing::{answer, eventually, job, next, probe};

const SEC: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);
const SOON: Duration = Duration::from_millis(500);

async fn queue(capacity: usize, max_audio_secs: f64) -> (ActorRef<QueueMsg>, Arc<Shared>) {
    batching_queue(capacity, max_audio_secs, 1, Duration::ZERO).await
}

/// A queue with batching: at most `max_batch` jobs per batch, a partial
/// batch waiting up to `batch_wait` for more.
pub(super) async fn batching_queue(
    capacity: usize,
    max_audio_secs: f64,
    max_batch: usize,
    batch_wait: Duration,
) -> (ActorRef<QueueMsg>, Arc<Shared>) {
    let shared = Arc::new(Shared::new(capacity));
    let args = QueueArgs {
        limits: QueueLimits {
            capacity,
            max_audio_secs,
            max_wait: LONG,
            max_batch,
            batch_wait,
        },
        shared: shared.clone(),
    };
    let (q, _) = Actor::spawn(None, BoundedQueueActor, args)
        .await
        .expect("queue");
    (q, shared)
}

pub(super) fn idle(worker: &ActorRef<WorkerProxyMsg>, stage: bool) -> QueueMsg {
    QueueMsg::WorkerIdle {
        worker: worker.clone(),
        worker_id: 0,
        rtf: None,
        stage,
    }
}

/// The id of a batch of one (without batching, every batch is one job).
fn run_id(msg: WorkerProxyMsg) -> u64 {
    match run_ids(msg).as_slice() {
        [id] => *id,
        other => panic!("expected a batch of one, got {other:?}"),
    }
}

/// The ids of a batch, in order.
pub(super) fn run_ids(msg: WorkerProxyMsg) -> Vec<u64> {
    match msg {
        WorkerProxyMsg::Run(jobs) => jobs.iter().map(|j| j.id).collect(),
        other => panic!("expected Run, got {other:?}"),
    }
}

#[test]
fn retry_after_is_waiting_audio_times_rtf_in_whole_seconds() {
    assert_eq!(busy_retry_after(20.0, 0.2), 4 * SEC);
    assert_eq!(busy_retry_after(21.0, 0.2), 5 * SEC, "rounded up");
    assert_eq!(busy_retry_after(0.5, 0.2), SEC, "at least a second");
    assert_eq!(busy_retry_after(10_000.0, 1.0), 120 * SEC, "capped");
    assert_eq!(update_rtf(0.2, Some(1.2)), 0.8 * 0.2 + 0.2 * 1.2);
    assert_eq!(update_rtf(0.2, None), 0.2);
    assert_eq!(update_rtf(0.2, Some(f64::NAN)), 0.2);
    assert_eq!(update_rtf(0.2, Some(0.0)), 0.2);
}

#[tokio::test]
async fn a_full_queue_refuses_at_once_with_retry_after() {
    let (q, shared) = queue(2, 0.0).await;
    let (a, _ra) = job(1, 10.0, LONG);
    let (b, _rb) = job(2, 10.0, LONG);
    let (c, rc) = job(3, 10.0, LONG);
    for j in [a, b, c] {
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    match answer(rc, SEC).await {
        Err(AsrError::Busy {
            retry_after,
            queued,
        }) => assert_eq!((retry_after, queued), (4 * SEC, 2), "20 s × rtf 0.2"),
        other => panic!("expected Busy, got {other:?}"),
    }
    eventually("depth 2, full", || {
        shared.status().queue_depth == 2 && shared.early_refusal().is_some()
    })
    .await;
}

#[tokio::test]
async fn the_audio_seconds_limit_refuses_but_a_lone_long_job_waits() {
    let (q, _) = queue(10, 15.0).await;
    let (a, mut ra) = job(1, 30.0, LONG);
    let (b, rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(QueueMsg::Submit(b)).unwrap();
    assert!(
        matches!(answer(rb, SEC).await, Err(AsrError::Busy { queued: 1, .. })),
        "30 s waiting + 1 s > 15 s"
    );
    assert!(ra.try_recv().is_err(), "the lone long job was admitted");
}

#[tokio::test]
async fn the_measured_rtf_sets_the_retry_after() {
    let (q, _) = queue(1, 0.0).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    // A worker reports a job at 1.2 s per audio second: rtf 0.2 → 0.4.
    q.cast(QueueMsg::WorkerIdle {
        worker: w.clone(),
        worker_id: 0,
        rtf: Some(1.2),
        stage: false,
    })
    .unwrap();
    q.cast(QueueMsg::WorkerGone { worker: w }).unwrap();
    let (a, _ra) = job(1, 20.0, LONG);
    let (b, rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(QueueMsg::Submit(b)).unwrap();
    match answer(rb, SEC).await {
        Err(AsrError::Busy { retry_after, .. }) => assert_eq!(retry_after, 8 * SEC),
        other => panic!("expected Busy, got {other:?}"),
    }
    assert!(runs.try_recv().is_err(), "a gone worker gets nothing");
}

#[tokio::test]
async fn a_down_worker_means_503_until_it_is_idle_again() {
    let (q, _) = queue(4, 0.0).await;
    q.cast(QueueMsg::WorkerDown {
        worker: 0,
        retry_after: 7 * SEC,
    })
    .unwrap();
    let (a, ra) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    match answer(ra, SEC).await {
        Err(AsrError::Unavailable { retry_after, .. }) => {
            assert!(
                (6 * SEC..=7 * SEC).contains(&retry_after),
                "{retry_after:?}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    let (b, _rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(b)).unwrap();
    assert_eq!(run_id(next(&mut runs).await), 2);
}

#[tokio::test]
async fn a_job_past_its_queue_deadline_times_out_and_is_never_dispatched() {
    let (q, shared) = queue(4, 0.0).await;
    let (a, ra) = job(1, 1.0, Duration::from_millis(30));
    q.cast(QueueMsg::Submit(a)).unwrap();
    assert!(matches!(
        answer(ra, SEC).await,
        Err(AsrError::QueueTimeout { .. })
    ));
    eventually("empty again", || shared.status().queue_depth == 0).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(runs.try_recv().is_err());
}

#[tokio::test]
async fn a_job_whose_client_left_is_dropped_before_the_worker() {
    let (q, _) = queue(4, 0.0).await;
    let (a, ra) = job(1, 1.0, LONG);
    let (b, _rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(QueueMsg::Submit(b)).unwrap();
    drop(ra); // the client hangs up
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_id(next(&mut runs).await), 2, "job 1 skipped");
}

#[tokio::test]
async fn a_crashed_job_goes_first_and_a_quarantined_input_is_refused() {
    let (q, _) = queue(4, 0.0).await;
    let (a, _ra) = job(1, 1.0, LONG);
    let (mut retried, _rr) = job(7, 1.0, LONG);
    retried.attempts = 1;
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(QueueMsg::Retry(retried)).unwrap();
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    match next(&mut runs).await {
        WorkerProxyMsg::Run(j) => {
            assert_eq!(
                (j.len(), j[0].id, j[0].attempts),
                (1, 7, 1),
                "the retry first"
            )
        }
        other => panic!("{other:?}"),
    }
    let (poison, rp) = job(9, 1.0, LONG);
    q.cast(QueueMsg::Quarantine(poison.fingerprint)).unwrap();
    q.cast(QueueMsg::Submit(poison)).unwrap();
    assert!(matches!(answer(rp, SEC).await, Err(AsrError::Quarantined)));
}

#[tokio::test]
async fn a_staged_job_counts_against_capacity_until_the_worker_asks_again() {
    let (q, shared) = queue(1, 0.0).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    let (a, _ra) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(idle(&w, true)).unwrap();
    assert_eq!(run_id(next(&mut runs).await), 1, "sent for staging");
    let (b, rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(b)).unwrap();
    assert!(
        matches!(answer(rb, SEC).await, Err(AsrError::Busy { queued: 1, .. })),
        "the staged job still waits"
    );
    assert_eq!(shared.status().queue_depth, 1);
    // The staged job started decoding: the proxy asks again.
    q.cast(idle(&w, true)).unwrap();
    let (c, _rc) = job(3, 1.0, LONG);
    q.cast(QueueMsg::Submit(c)).unwrap();
    assert_eq!(run_id(next(&mut runs).await), 3);
    // A requeued (unstaged) job goes first again.
    let (d, _rd) = job(4, 1.0, LONG);
    q.cast(QueueMsg::WorkerDown {
        worker: 0,
        retry_after: SEC,
    })
    .unwrap();
    q.cast(QueueMsg::Requeue(d)).unwrap();
    eventually("the requeued job waits", || {
        shared.status().queue_depth == 1
    })
    .await;
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_id(next(&mut runs).await), 4);
}

#[tokio::test]
async fn drain_answers_every_waiting_job_and_refuses_new_ones() {
    let (q, shared) = queue(4, 0.0).await;
    let (a, ra) = job(1, 1.0, LONG);
    let (b, rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    q.cast(QueueMsg::Submit(b)).unwrap();
    q.cast(QueueMsg::Drain).unwrap();
    for r in [ra, rb] {
        assert!(matches!(answer(r, SEC).await, Err(AsrError::ShuttingDown)));
    }
    let (c, rc) = job(3, 1.0, LONG);
    q.cast(QueueMsg::Submit(c)).unwrap();
    assert!(matches!(answer(rc, SEC).await, Err(AsrError::ShuttingDown)));
    let (d, rd) = job(4, 1.0, LONG);
    q.cast(QueueMsg::Retry(d)).unwrap();
    assert!(matches!(
        answer(rd, SOON).await,
        Err(AsrError::ShuttingDown)
    ));
    assert_eq!(shared.status().queue_depth, 0);
}

#[tokio::test]
async fn realtime_jobs_go_before_uploads_and_uploads_before_async_jobs() {
    let (q, _) = queue(8, 0.0).await;
    let mut answers = Vec::new();
    // Submitted: async 1, sync 2, realtime 3, async 4, realtime 5, sync 6.
    for (id, class) in [
        (1, JobClass::Async),
        (2, JobClass::Sync),
        (3, JobClass::Realtime),
        (4, JobClass::Async),
        (5, JobClass::Realtime),
        (6, JobClass::Sync),
    ] {
        let (mut j, r) = job(id, 1.0, LONG);
        j.class = class;
        answers.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    let mut order = Vec::new();
    for _ in 0..6 {
        q.cast(idle(&w, false)).unwrap();
        order.push(run_id(next(&mut runs).await));
    }
    assert_eq!(order, [3, 5, 2, 6, 1, 4], "by class, then first come");
}

#[tokio::test]
async fn a_realtime_job_is_refused_like_any_other_when_the_queue_is_full() {
    let (q, _) = queue(1, 0.0).await;
    let (a, _ra) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    let (mut rt, rr) = job(2, 1.0, LONG);
    rt.class = JobClass::Realtime;
    q.cast(QueueMsg::Submit(rt)).unwrap();
    assert!(matches!(
        answer(rr, SEC).await,
        Err(AsrError::Busy { queued: 1, .. })
    ));
}
