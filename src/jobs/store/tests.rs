//! Unit tests of the SQLite store: the writer thread, recovery at open,
//! durable uploads.

use super::*;
use crate::api::DecodeOptions;

fn spec() -> JobSpec {
    JobSpec {
        options: DecodeOptions::default(),
        response_format: crate::api::ResponseFormat::Srt,
        granularities: Default::default(),
        file_hint: Some("wav".into()),
        audio_secs: 12.5,
        upload_bytes: 3,
        fault: None,
    }
}

fn new_job(id: JobId, created: u64) -> StoredJob {
    StoredJob {
        id,
        status: JobStatus::Queued,
        created_at_ms: created,
        started_at_ms: None,
        finished_at_ms: None,
        decoded_secs: 0.0,
        interruptions: 0,
        spec: spec(),
        result: None,
        error: None,
    }
}

async fn insert(h: &StoreHandle, job: StoredJob) {
    let (ack, rx) = oneshot::channel();
    h.send(Write::Insert {
        job: Box::new(job),
        ack,
    });
    rx.await.unwrap().unwrap();
}

fn result(text: &str) -> JobResult {
    JobResult {
        job_id: 1,
        text: text.into(),
        segments: vec![],
        language: "en".into(),
        language_probability: 1.0,
        duration_secs: 12.5,
        timings: Default::default(),
    }
}

#[tokio::test]
async fn jobs_survive_a_reopen_in_their_last_committed_state() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (JobId::random(), JobId::random(), JobId::random());
    {
        let opened = open(dir.path()).unwrap();
        assert!(opened.jobs.is_empty());
        let h = opened.handle;
        for (i, id) in [a, b, c].into_iter().enumerate() {
            write_audio(dir.path(), id, b"abc").unwrap();
            insert(&h, new_job(id, 1000 + i as u64)).await;
        }
        h.send(Write::Running {
            id: b,
            started_at_ms: 2000,
        });
        h.send(Write::Progress {
            id: b,
            decoded_secs: 30.0,
        });
        h.send(Write::Running {
            id: c,
            started_at_ms: 2001,
        });
        h.send(Write::Finished {
            id: c,
            status: JobStatus::Done,
            finished_at_ms: 3000,
            result: Some(Arc::new(result("hello"))),
            error: None,
        });
        assert!(h.flush().await);
        assert!(audio_path(dir.path(), a).exists());
        assert!(
            !audio_path(dir.path(), c).exists(),
            "a done job's audio is deleted"
        );
        drop(h);
        opened.thread.join().unwrap();
    }
    // a stray half-written upload and an orphan file are cleaned up
    std::fs::write(dir.path().join(AUDIO_DIR).join("x.tmp"), b"x").unwrap();
    let orphan = JobId::random();
    std::fs::write(audio_path(dir.path(), orphan), b"x").unwrap();

    let opened = open(dir.path()).unwrap();
    let jobs = &opened.jobs;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a, b, c]);
    assert_eq!(jobs[0].status, JobStatus::Queued);
    assert_eq!(jobs[0].spec, spec());
    assert_eq!(
        (jobs[1].status, jobs[1].started_at_ms, jobs[1].decoded_secs),
        (JobStatus::Running, Some(2000), 30.0)
    );
    assert_eq!(jobs[2].status, JobStatus::Done);
    assert_eq!(jobs[2].result.as_ref().unwrap().text, "hello");
    assert_eq!(jobs[2].decoded_secs, 12.5);
    assert!(!dir.path().join(AUDIO_DIR).join("x.tmp").exists());
    assert!(!audio_path(dir.path(), orphan).exists());
    assert!(audio_path(dir.path(), a).exists() && audio_path(dir.path(), b).exists());

    let h = opened.handle.clone();
    h.send(Write::Delete { ids: vec![a] });
    assert!(h.flush().await);
    assert_eq!(read_job(dir.path(), a).unwrap(), None);
    assert!(!audio_path(dir.path(), a).exists());
    assert_eq!(read_job(dir.path(), c).unwrap().unwrap().0, JobStatus::Done);
}

#[tokio::test]
async fn a_second_opener_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = open(dir.path()).unwrap();
    assert!(matches!(open(dir.path()), Err(OpenError::Locked(_))));
}

#[tokio::test]
async fn a_failing_store_fails_inserts_but_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let opened = open(dir.path()).unwrap();
    let h = opened.handle;
    h.hooks().fail.store(true, Ordering::Relaxed);
    let (ack, rx) = oneshot::channel();
    h.send(Write::Insert {
        job: Box::new(new_job(JobId::random(), 1)),
        ack,
    });
    assert!(rx.await.unwrap().is_err());
    // Health (read by /health and /ready) says so until a commit works.
    assert!(h.health().current_error().is_some());
    assert_eq!(h.health().failed_transactions.load(Ordering::Relaxed), 1);
    h.hooks().fail.store(false, Ordering::Relaxed);
    insert(&h, new_job(JobId::random(), 2)).await;
    assert_eq!(h.health().current_error(), None);
}
