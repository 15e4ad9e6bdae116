//! The queue with a pool of two workers (probes), no model, no process:
//! dispatch to any idle worker, 503 only while every worker is down, and
//! the pool's drain rate in Retry-After and the audio-seconds admission.

use super::*;
use crate::actors::testing::{answer, eventually, job, next, probe};

const SEC: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

async fn pool_queue(capacity: usize, max_audio_secs: f64) -> (ActorRef<QueueMsg>, Arc<Shared>) {
    batching_pool_queue(capacity, max_audio_secs, 1).await
}

/// Two workers, batches of at most `max_batch` jobs, no batch wait.
async fn batching_pool_queue(
    capacity: usize,
    max_audio_secs: f64,
    max_batch: usize,
) -> (ActorRef<QueueMsg>, Arc<Shared>) {
    let plans = crate::workers::plan(&crate::NodeConfig {
        workers: Some(2),
        threads: 2,
        ..Default::default()
    })
    .unwrap();
    let shared = Arc::new(Shared::with_workers(capacity, &plans));
    let args = QueueArgs {
        limits: QueueLimits {
            capacity,
            max_audio_secs,
            max_wait: LONG,
            max_batch,
            batch_wait: Duration::ZERO,
        },
        shared: shared.clone(),
    };
    let (q, _) = Actor::spawn(None, BoundedQueueActor, args)
        .await
        .expect("queue");
    (q, shared)
}

fn idle(worker: &ActorRef<WorkerProxyMsg>, worker_id: usize, stage: bool) -> QueueMsg {
    QueueMsg::WorkerIdle {
        worker: worker.clone(),
        worker_id,
        rtf: None,
        stage,
    }
}

fn down(worker: usize) -> QueueMsg {
    QueueMsg::WorkerDown {
        worker,
        retry_after: 5 * SEC,
    }
}

fn run_id(msg: WorkerProxyMsg) -> u64 {
    match msg {
        WorkerProxyMsg::Run(jobs) => {
            assert_eq!(jobs.len(), 1, "batching is off");
            jobs[0].id
        }
        other => panic!("expected Run, got {other:?}"),
    }
}

#[tokio::test]
async fn a_job_goes_to_a_free_engine_before_it_is_staged_behind_a_decode() {
    let (q, shared) = pool_queue(4, 0.0).await;
    let (a, mut runs_a) = probe::<WorkerProxyMsg>().await;
    let (b, mut runs_b) = probe::<WorkerProxyMsg>().await;
    // Worker 0 decodes and would stage; worker 1 is free.
    q.cast(idle(&a, 0, true)).unwrap();
    q.cast(idle(&b, 1, false)).unwrap();
    let (j1, _r1) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(j1)).unwrap();
    assert_eq!(run_id(next(&mut runs_b).await), 1, "the free worker first");
    let (j2, _r2) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(j2)).unwrap();
    assert_eq!(
        run_id(next(&mut runs_a).await),
        2,
        "then staged in the busy one"
    );
    eventually("the staged job still waits", || {
        shared.status().queue_depth == 1
    })
    .await;
    // Worker 0 dies: its staged job stops counting (it is requeued).
    q.cast(QueueMsg::WorkerGone { worker: a }).unwrap();
    eventually("nothing waits", || shared.status().queue_depth == 0).await;
    assert!(runs_a.try_recv().is_err());
}

#[tokio::test]
async fn one_worker_down_keeps_the_node_serving_and_all_down_is_503() {
    let (q, _) = pool_queue(4, 0.0).await;
    let (b, mut runs_b) = probe::<WorkerProxyMsg>().await;
    q.cast(down(0)).unwrap();
    q.cast(idle(&b, 1, false)).unwrap();
    let (j1, _r1) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(j1)).unwrap();
    assert_eq!(run_id(next(&mut runs_b).await), 1, "served on worker 1");
    q.cast(down(1)).unwrap();
    let (j2, r2) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(j2)).unwrap();
    match answer(r2, SEC).await {
        Err(AsrError::Unavailable { retry_after, .. }) => {
            assert!(
                (4 * SEC..=5 * SEC).contains(&retry_after),
                "{retry_after:?}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Worker 0's new process asks for work: the node takes jobs again.
    let (a, mut runs_a) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&a, 0, false)).unwrap();
    let (j3, _r3) = job(3, 1.0, LONG);
    q.cast(QueueMsg::Submit(j3)).unwrap();
    assert_eq!(run_id(next(&mut runs_a).await), 3);
}

#[tokio::test]
async fn retry_after_uses_the_drain_rate_of_the_workers_accepting() {
    let (q, _) = pool_queue(2, 0.0).await;
    let busy_after = |q: ActorRef<QueueMsg>, id| async move {
        let (j, r) = job(id, 1.0, LONG);
        q.cast(QueueMsg::Submit(j)).unwrap();
        match answer(r, SEC).await {
            Err(AsrError::Busy { retry_after, .. }) => retry_after,
            other => panic!("expected Busy, got {other:?}"),
        }
    };
    let mut waiting = Vec::new(); // the clients stay connected
    for id in [1, 2] {
        let (j, r) = job(id, 20.0, LONG);
        waiting.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    // 40 s waiting × rtf 0.2 over two workers.
    assert_eq!(busy_after(q.clone(), 3).await, 4 * SEC);
    q.cast(down(1)).unwrap();
    assert_eq!(busy_after(q.clone(), 4).await, 8 * SEC, "one worker left");
}

#[tokio::test]
async fn the_audio_seconds_limit_is_per_accepting_worker() {
    let (q, _) = pool_queue(10, 15.0).await;
    let submit = |id, secs| {
        let (j, r) = job(id, secs, LONG);
        q.cast(QueueMsg::Submit(j)).unwrap();
        r
    };
    let _r1 = submit(1, 20.0);
    let mut r2 = submit(2, 9.0);
    let r3 = submit(3, 2.0);
    assert!(
        matches!(answer(r3, SEC).await, Err(AsrError::Busy { queued: 2, .. })),
        "29 s + 2 s > 2 × 15 s"
    );
    assert!(r2.try_recv().is_err(), "29 s fit in two workers' 30 s");
    q.cast(down(0)).unwrap();
    let r4 = submit(4, 0.5);
    assert!(
        matches!(answer(r4, SEC).await, Err(AsrError::Busy { .. })),
        "one worker left: 15 s"
    );
}

#[tokio::test]
async fn batches_form_for_any_worker_and_a_staged_batch_counts_per_job() {
    let (q, shared) = batching_pool_queue(4, 0.0, 2).await;
    let (a, mut runs_a) = probe::<WorkerProxyMsg>().await;
    let (b, mut runs_b) = probe::<WorkerProxyMsg>().await;
    // Worker 0 decodes and would stage: a batch to stage goes only full.
    q.cast(idle(&a, 0, true)).unwrap();
    let mut replies = Vec::new();
    for id in [1, 2, 3] {
        let (j, r) = job(id, 1.0, LONG);
        replies.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    let ids = |m: WorkerProxyMsg| match m {
        WorkerProxyMsg::Run(jobs) => jobs.iter().map(|j| j.id).collect::<Vec<_>>(),
        other => panic!("expected Run, got {other:?}"),
    };
    assert_eq!(
        ids(next(&mut runs_a).await),
        vec![1, 2],
        "a full batch staged"
    );
    eventually("both staged jobs and the third still wait", || {
        shared.status().queue_depth == 3
    })
    .await;
    // Worker 1 is free: it takes the lone job at once (no batch wait).
    q.cast(idle(&b, 1, false)).unwrap();
    assert_eq!(ids(next(&mut runs_b).await), vec![3]);
    eventually("the staged batch still waits", || {
        shared.status().queue_depth == 2
    })
    .await;
    // Worker 0 dies: its staged batch stops counting (it is requeued).
    q.cast(QueueMsg::WorkerGone { worker: a }).unwrap();
    eventually("nothing waits", || shared.status().queue_depth == 0).await;
}
