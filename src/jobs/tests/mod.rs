//! Unit tests of the job service against a fake node and a real store in a
//! temporary directory. This file holds the fake node and the helpers;
//! `service` tests durability before acceptance, the runner, cancel, the
//! backlog limit, recovery, retention, and a slow or failing store that
//! must stall neither polling nor decoding; `wakeups` tests that the runner
//! and the drain wait to be woken instead of polling.

mod service;
mod wakeups;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;

use tokio::sync::{watch, Notify};

use super::service::engine::{Engine, EngineLimits, EngineLoad};
use super::*;
use crate::api::{
    AsrError, DecodeOptions, JobClass, JobResult, Progress, Segment, Transcript,
    TranscriptionRequest,
};
use crate::api::{Granularities, ResponseFormat};
use crate::config::JobsConfig;

/// A node that "decodes" in `decode` time and answers scripted results.
struct Fake {
    ingest: crate::ingest::Ingest,
    calls: AtomicUsize,
    decode: Duration,
    idle: AtomicBool,
    answers: Mutex<VecDeque<Result<(), AsrError>>>,
    /// Ticks on every change of `idle` (the node's state channel).
    load_tx: watch::Sender<()>,
    /// Calls of `load()`: a polling runner would make many.
    loads: AtomicUsize,
    /// Notified (one permit) on each call of `load()`.
    looked: Notify,
    /// Notified (one permit) when a job reaches the node.
    entered: Notify,
    /// While set, an answer waits for a permit of `release`.
    hold: AtomicBool,
    release: Arc<Notify>,
}

impl Fake {
    fn new(decode: Duration) -> Arc<Fake> {
        Arc::new(Fake {
            ingest: crate::ingest::Ingest::new(&crate::config::NodeConfig {
                max_audio_secs: 600.0,
                ..Default::default()
            }),
            calls: AtomicUsize::new(0),
            decode,
            idle: AtomicBool::new(true),
            answers: Mutex::new(VecDeque::new()),
            load_tx: watch::Sender::new(()),
            loads: AtomicUsize::new(0),
            looked: Notify::new(),
            entered: Notify::new(),
            hold: AtomicBool::new(false),
            release: Arc::new(Notify::new()),
        })
    }

    /// The node becomes idle (or busy), and says so on its state channel.
    fn set_idle(&self, idle: bool) {
        self.idle.store(idle, Ordering::SeqCst);
        self.load_tx.send_replace(());
    }
}

impl Engine for Fake {
    fn transcribe(
        &self,
        req: TranscriptionRequest,
    ) -> BoxFuture<'static, Result<Transcript, AsrError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if req.class != JobClass::Async {
            // Every async job must queue behind realtime and sync work.
            let class = req.class;
            return Box::pin(async move {
                Err(AsrError::Internal(format!(
                    "an async job came as {class:?}"
                )))
            });
        }
        let scripted = self.answers.lock().unwrap().pop_front();
        let decode = self.decode;
        self.entered.notify_one();
        let gate = self
            .hold
            .load(Ordering::SeqCst)
            .then(|| self.release.clone());
        Box::pin(async move {
            if let Some(gate) = gate {
                gate.notified().await;
            }
            let total = req.audio_secs() as f32;
            if let Some(p) = &req.progress {
                let _ = p.send(Progress {
                    decoded_secs: total / 2.0,
                    total_secs: total,
                });
            }
            if !decode.is_zero() {
                tokio::time::sleep(decode).await;
            }
            scripted.unwrap_or(Ok(()))?;
            Ok(Transcript {
                job_id: 1,
                result: JobResult {
                    job_id: 1,
                    text: " the lazy dog".into(),
                    segments: vec![Segment {
                        id: 0,
                        seek: 0,
                        start: 0.0,
                        end: total,
                        text: " the lazy dog".into(),
                        tokens: vec![1, 2],
                        temperature: 0.0,
                        avg_logprob: -0.1,
                        compression_ratio: 1.0,
                        no_speech_prob: 0.0,
                        words: vec![],
                    }],
                    language: "en".into(),
                    language_probability: 1.0,
                    duration_secs: total,
                    timings: Default::default(),
                },
                queue_wait: Duration::ZERO,
                decode_time: decode,
                worker_generation: 0,
            })
        })
    }

    fn load(&self) -> EngineLoad {
        self.loads.fetch_add(1, Ordering::SeqCst);
        self.looked.notify_one();
        EngineLoad {
            ready: true,
            idle: self.idle.load(Ordering::SeqCst),
            shutting_down: false,
        }
    }

    fn load_changes(&self) -> watch::Receiver<()> {
        self.load_tx.subscribe()
    }

    fn limits(&self) -> EngineLimits {
        EngineLimits {
            max_upload_bytes: 10 << 20,
            max_audio_secs: 600.0,
            beam_size: 5,
            fault_injection: false,
            shutdown_grace: Duration::from_secs(1),
        }
    }

    fn ingest(&self) -> crate::ingest::Ingest {
        self.ingest.clone()
    }
}

/// `secs` of a 440 Hz tone as a 16 kHz mono 16-bit WAV.
fn wav(secs: f32) -> Vec<u8> {
    crate::audio::test_wav::tone(16_000, secs, 8000.0)
}

fn submission(secs: f32) -> JobSubmission {
    JobSubmission {
        upload: wav(secs).into(),
        file_hint: Some("wav".into()),
        options: DecodeOptions::default(),
        response_format: ResponseFormat::Srt,
        granularities: Granularities::default(),
        fault: None,
    }
}

fn config(dir: &std::path::Path) -> JobsConfig {
    JobsConfig {
        data_dir: dir.to_path_buf(),
        max_defer_secs: 600.0,
        ..JobsConfig::default()
    }
}

async fn start(fake: &Arc<Fake>, config: JobsConfig) -> JobService {
    JobService::start_with(fake.clone(), config)
        .await
        .expect("job service starts")
}

/// Waits, woken by the service's status publication (no polling), until
/// job `id` has `status`; panics after `within`.
async fn wait_status(jobs: &JobService, id: JobId, status: JobStatus, within: Duration) -> JobView {
    wait_until(jobs, id, |v| v.status == status, within).await
}

/// Waits, woken by the service's status publication (no polling), until
/// job `id` satisfies `done`; panics after `within`.
async fn wait_until(
    jobs: &JobService,
    id: JobId,
    done: impl Fn(&JobView) -> bool,
    within: Duration,
) -> JobView {
    let mut changes = jobs.subscribe();
    let wait = async {
        loop {
            changes.borrow_and_update();
            let v = jobs.get(id).expect("job exists");
            if done(&v) {
                return v;
            }
            changes.changed().await.expect("the service is alive");
        }
    };
    match tokio::time::timeout(within, wait).await {
        Ok(v) => v,
        Err(_) => panic!(
            "{id} still {:?} after {within:?}",
            jobs.get(id).map(|v| v.status)
        ),
    }
}
