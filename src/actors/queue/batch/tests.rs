//! Batch forming: the compatibility rules alone, then a real
//! `BoundedQueueActor` with a probe for the worker.

use super::*;
use crate::actors::queue::tests::{batching_queue, idle, run_ids};
use crate::actors::queue::{QueueMsg, WorkerProxyMsg};
use crate::actors::testing::{answer, job, next, probe};
use crate::api::{AsrError, JobClass, Task};

use std::time::Duration;

const SEC: Duration = Duration::from_secs(1);
const LONG: Duration = Duration::from_secs(60);

#[test]
fn options_are_compatible_apart_from_language_and_prompts() {
    let base = DecodeOptions::default();
    let own = DecodeOptions {
        language: Some("de".into()),
        initial_prompt: Some("Namen: Ilse".into()),
        hotwords: Some("Ilse".into()),
        // A `json` answer next to a `verbose_json` one: no effect on one
        // window of audio.
        text_only: true,
        ..base.clone()
    };
    assert!(compatible_options(&base, &own));
    for other in [
        DecodeOptions {
            task: Task::Translate,
            ..base.clone()
        },
        DecodeOptions {
            beam_size: 1,
            ..base.clone()
        },
        DecodeOptions {
            word_timestamps: true,
            ..base.clone()
        },
        DecodeOptions {
            vad_filter: true,
            ..base.clone()
        },
        DecodeOptions {
            temperatures: vec![0.0],
            ..base.clone()
        },
    ] {
        assert!(!compatible_options(&base, &other), "{other:?}");
    }
}

#[test]
fn long_retried_and_other_class_jobs_do_not_join() {
    let (head, _r0) = job(1, 10.0, LONG);
    let (short, _r1) = job(2, 30.0, LONG);
    assert!(joins(&head, &short), "30 s (one window) is batchable");
    let (long, _r2) = job(3, 30.5, LONG);
    assert!(!joins(&head, &long), "longer than a window");
    assert!(!joins(&long, &short), "nor does it head a batch");
    let (mut retried, _r3) = job(4, 1.0, LONG);
    retried.solo = true;
    assert!(!joins(&head, &retried));
    let (mut crashed, _r4) = job(5, 1.0, LONG);
    crashed.attempts = 1;
    assert!(!batchable(&crashed));
    let (mut realtime, _r5) = job(6, 1.0, LONG);
    realtime.class = JobClass::Realtime;
    assert!(!joins(&head, &realtime));
}

#[test]
fn members_come_in_queue_order_and_stale_jobs_are_taken_out() {
    let now = std::time::Instant::now();
    let (head, _rh) = job(1, 1.0, LONG);
    let mut jobs = std::collections::VecDeque::new();
    let mut keep = Vec::new();
    for (id, secs) in [(2, 1.0), (3, 40.0), (4, 1.0), (5, 1.0), (6, 1.0), (7, 1.0)] {
        let (j, r) = job(id, secs, LONG);
        jobs.push_back(j);
        keep.push((id, r));
    }
    // Job 4's client left; job 5 expired.
    keep.retain(|(id, _)| *id != 4);
    jobs[3].deadline = now;
    assert_eq!(joinable(&jobs, &head, now), 3, "2, 6 and 7");
    let (members, dropped) = take_members(&mut jobs, &head, 2, now);
    let ids: Vec<u64> = members.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![2, 6], "the first two that join, in order");
    let dropped: Vec<(u64, Dropped)> = dropped.iter().map(|(j, w)| (j.id, *w)).collect();
    assert_eq!(
        dropped,
        vec![(4, Dropped::ClientGone), (5, Dropped::Expired)]
    );
    let left: Vec<u64> = jobs.iter().map(|j| j.id).collect();
    assert_eq!(left, vec![3, 7], "the others keep their places");
}

#[tokio::test]
async fn an_idle_worker_gets_the_head_and_compatible_waiting_jobs_up_to_max_batch() {
    let (q, _) = batching_queue(8, 0.0, 3, Duration::ZERO).await;
    let mut answers = Vec::new();
    for (id, secs) in [(1, 1.0), (2, 45.0), (3, 2.0), (4, 3.0), (5, 4.0)] {
        let (j, r) = job(id, secs, LONG);
        answers.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![1, 3, 4]);
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![2], "a long job alone");
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![5]);
}

#[tokio::test]
async fn a_lone_job_is_sent_at_once_and_a_staged_batch_only_when_full() {
    let (q, _) = batching_queue(8, 0.0, 2, Duration::ZERO).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    let (a, _ra) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![1], "never delayed");
    // The worker decodes job 1 and asks for a batch to stage.
    q.cast(idle(&w, true)).unwrap();
    let (b, _rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(b)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        runs.try_recv().is_err(),
        "one job is not a full batch to stage"
    );
    let (c, _rc) = job(3, 1.0, LONG);
    q.cast(QueueMsg::Submit(c)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![2, 3], "full: staged");
    // A partial batch waits for the idle worker, which gets it at once.
    q.cast(idle(&w, true)).unwrap();
    let (d, _rd) = job(4, 1.0, LONG);
    q.cast(QueueMsg::Submit(d)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(runs.try_recv().is_err());
    q.cast(idle(&w, false)).unwrap();
    assert_eq!(run_ids(next(&mut runs).await), vec![4]);
}

#[tokio::test]
async fn with_a_batch_wait_a_partial_batch_waits_for_more_then_goes() {
    let (q, _) = batching_queue(8, 0.0, 3, Duration::from_millis(300)).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    let (a, _ra) = job(1, 1.0, LONG);
    q.cast(QueueMsg::Submit(a)).unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(runs.try_recv().is_err(), "job 1 waits for company");
    let (b, _rb) = job(2, 1.0, LONG);
    q.cast(QueueMsg::Submit(b)).unwrap();
    assert_eq!(
        run_ids(next(&mut runs).await),
        vec![1, 2],
        "sent when the wait is over, with the job that came meanwhile"
    );
    // A full batch does not wait.
    q.cast(idle(&w, false)).unwrap();
    let mut clients = Vec::new();
    for id in 3..=5 {
        let (j, r) = job(id, 1.0, LONG);
        clients.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    assert_eq!(run_ids(next(&mut runs).await), vec![3, 4, 5]);
}

#[tokio::test]
async fn a_client_that_leaves_a_forming_batch_is_dropped_and_an_expired_job_answered() {
    let (q, _) = batching_queue(8, 0.0, 4, Duration::from_millis(300)).await;
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    q.cast(idle(&w, false)).unwrap();
    let (a, _ra) = job(1, 1.0, LONG);
    let (b, rb) = job(2, 1.0, LONG);
    let (c, rc) = job(3, 1.0, Duration::from_millis(100));
    for j in [a, b, c] {
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    drop(rb); // job 2's client leaves while the batch forms
    assert!(matches!(
        answer(rc, SEC).await,
        Err(AsrError::QueueTimeout { .. })
    ));
    assert_eq!(
        run_ids(next(&mut runs).await),
        vec![1],
        "only job 1 is sent"
    );
}

#[tokio::test]
async fn a_batch_takes_no_job_of_another_class_and_the_retried_job_goes_alone() {
    let (q, _) = batching_queue(8, 0.0, 4, Duration::ZERO).await;
    let mut answers = Vec::new();
    for (id, class) in [
        (1, JobClass::Sync),
        (2, JobClass::Async),
        (3, JobClass::Realtime),
        (4, JobClass::Sync),
        (5, JobClass::Realtime),
    ] {
        let (mut j, r) = job(id, 1.0, LONG);
        j.class = class;
        answers.push(r);
        q.cast(QueueMsg::Submit(j)).unwrap();
    }
    let (mut retried, _rr) = job(9, 1.0, LONG);
    retried.solo = true;
    q.cast(QueueMsg::Retry(retried)).unwrap();
    let (w, mut runs) = probe::<WorkerProxyMsg>().await;
    let mut batches = Vec::new();
    for _ in 0..4 {
        q.cast(idle(&w, false)).unwrap();
        batches.push(run_ids(next(&mut runs).await));
    }
    assert_eq!(
        batches,
        vec![vec![9], vec![3, 5], vec![1, 4], vec![2]],
        "the retry alone first, then by class"
    );
}
