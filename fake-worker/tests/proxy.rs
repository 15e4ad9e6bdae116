//! The worker proxy and the supervisor, for real, against `fake-worker`:
//! the handshake's failure paths and crashes with jobs in flight and
//! staged. No model and no engine: the fake answers every job it serves
//! with an engine error naming the job, so these tests check who gets
//! which answer, never a transcript.

use std::path::Path;
use std::time::{Duration, Instant};

use whisper_node::api::{StartError, WorkerState};
use whisper_node::{AsrError, AsrNode, NodeConfig, TranscriptionRequest};

/// A model directory holding the fake's scenario, one behaviour per start.
fn scenario(behaviours: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("scenario"), behaviours.join("\n")).unwrap();
    dir
}

fn config(dir: &Path) -> NodeConfig {
    NodeConfig {
        worker_path: Some(env!("CARGO_BIN_EXE_fake-worker").into()),
        model_dir: dir.to_path_buf(),
        load_timeout_secs: 10.0,
        // One worker, one job per decode: these tests follow one child's
        // protocol, staging and crash handling.
        workers: Some(1),
        max_batch: 1,
        ..NodeConfig::default()
    }
}

async fn start_error(behaviour: &str, tweak: impl FnOnce(&mut NodeConfig)) -> String {
    let dir = scenario(&[behaviour]);
    let mut c = config(dir.path());
    tweak(&mut c);
    match AsrNode::start(c).await {
        Err(StartError::ModelLoad { model_path, cause }) => {
            assert_eq!(model_path, dir.path().display().to_string());
            cause
        }
        Err(other) => panic!("expected a model-load error, got {other}"),
        Ok(_) => panic!("a {behaviour} worker must not start"),
    }
}

/// One second of audio whose first sample is `marker` (the fake echoes it).
fn audio(marker: i16) -> TranscriptionRequest {
    let mut pcm = vec![0i16; 16_000];
    pcm[0] = marker;
    TranscriptionRequest::new(pcm)
}

/// The fake's answer for a job: its marker.
fn fake_marker(r: Result<whisper_node::Transcript, AsrError>) -> i16 {
    match r {
        Err(AsrError::Rejected(asr_ipc::WorkerError::Engine(msg))) => msg
            .rsplit(' ')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or_else(|| panic!("unexpected fake answer {msg}")),
        other => panic!("expected the fake's engine error, got {other:?}"),
    }
}

async fn until(what: &str, node: &AsrNode, cond: impl Fn(&whisper_node::NodeStatus) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = node.status();
        if cond(&s) {
            return;
        }
        assert!(Instant::now() < deadline, "never {what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn a_worker_speaking_another_protocol_version_is_a_start_error() {
    let cause = start_error("wrong-version", |_| {}).await;
    let want = format!(
        "worker speaks protocol {} but the service speaks {}",
        asr_ipc::PROTOCOL_VERSION + 1,
        asr_ipc::PROTOCOL_VERSION
    );
    assert_eq!(cause, want);
}

#[tokio::test]
async fn load_failed_is_the_start_error_with_the_workers_cause() {
    let dir = scenario(&["load-failed"]);
    match AsrNode::start(config(dir.path())).await {
        Err(StartError::ModelLoad { cause, .. }) => assert_eq!(
            cause,
            format!("{}: fake: no model here", dir.path().display())
        ),
        other => panic!("expected a model-load error, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn garbage_on_stdout_kills_the_worker_as_a_protocol_breaker() {
    let cause = start_error("garbage", |_| {}).await;
    assert!(
        cause.starts_with("worker killed by SIGKILL (9); broke the protocol: "),
        "{cause}"
    );
    assert!(cause.ends_with(" while loading the model"), "{cause}");
}

#[tokio::test]
async fn an_exit_before_hello_is_a_start_error_with_the_exit_code() {
    let cause = start_error("exit-before-hello", |_| {}).await;
    assert_eq!(cause, "worker exited with code 3 while loading the model");
}

#[tokio::test]
async fn a_worker_that_never_says_hello_is_killed_at_the_load_deadline() {
    let t0 = Instant::now();
    let cause = start_error("silent", |c| c.load_timeout_secs = 0.3).await;
    assert_eq!(cause, "model did not load within 0.3 s");
    assert!(t0.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_crash_with_a_job_staged_retries_the_one_in_flight_first_and_requeues_the_staged_one() {
    let dir = scenario(&["crash-when-staged", "serve"]);
    let node = AsrNode::start(config(dir.path()))
        .await
        .expect("gen 0 loads");
    let n = node.clone();
    let first = tokio::spawn(async move { n.transcribe(audio(1111)).await });
    until("busy with the first job", &node, |s| s.in_flight == 1).await;
    let n = node.clone();
    let second = tokio::spawn(async move { n.transcribe(audio(2222)).await });
    // Generation 0 exits once the second job is staged; both jobs are
    // answered by generation 1, each with its own audio's answer.
    assert_eq!(fake_marker(first.await.unwrap()), 1111);
    assert_eq!(fake_marker(second.await.unwrap()), 2222);
    let s = node.status();
    assert_eq!((s.worker_generation, s.worker_restarts), (1, 1), "{s:?}");
    assert_eq!(s.last_worker_exit.as_deref(), Some("exited with code 3"));
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 4, "{log}");
    assert!(
        lines[0].starts_with("gen 0 ") && lines[0].ends_with("marker 1111"),
        "{log}"
    );
    assert!(
        lines[1].starts_with("gen 0 ") && lines[1].ends_with("marker 2222"),
        "{log}"
    );
    // The crashed job's retry goes ahead of the staged job it passed.
    assert!(
        lines[2].starts_with("gen 1 ") && lines[2].ends_with("marker 1111"),
        "{log}"
    );
    assert!(
        lines[3].starts_with("gen 1 ") && lines[3].ends_with("marker 2222"),
        "{log}"
    );
    node.shutdown().await;
}

#[tokio::test]
async fn an_input_that_crashes_the_worker_twice_is_quarantined() {
    let dir = scenario(&["crash-on-job", "crash-on-job", "serve"]);
    let node = AsrNode::start(config(dir.path()))
        .await
        .expect("gen 0 loads");
    let r = node.transcribe(audio(3333)).await;
    assert!(matches!(r, Err(AsrError::Quarantined)), "{r:?}");
    until("restarted twice and ready", &node, |s| {
        s.worker_restarts == 2 && s.worker_state == WorkerState::Ready
    })
    .await;
    let s = node.status();
    assert_eq!(
        s.last_worker_exit.as_deref(),
        Some("killed by SIGABRT (6)"),
        "{s:?}"
    );
    // The same audio is refused without reaching the worker; other audio
    // reaches it.
    let r = node.transcribe(audio(3333)).await;
    assert!(matches!(r, Err(AsrError::Quarantined)), "{r:?}");
    assert_eq!(fake_marker(node.transcribe(audio(4444)).await), 4444);
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert_eq!(
        log.lines().filter(|l| l.ends_with("marker 3333")).count(),
        2,
        "tried once, retried once, then never again: {log}"
    );
    node.shutdown().await;
}
