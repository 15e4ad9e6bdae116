//! The shared store's runner and janitor.
//!
//! The runner claims one job at a time (`FOR UPDATE SKIP LOCKED`), only
//! while this node's worker is idle, so a busy node leaves the backlog to
//! idle ones. It waits for the node to become idle on the node's state
//! channel ([`Engine::load_changes`]), never by polling it. One poll must
//! remain: jobs submitted to OTHER nodes of the fleet, and jobs whose lease
//! expired on a dead node, appear only in the database, which publishes no
//! event (no `LISTEN/NOTIFY` here), so an idle runner with nothing to claim
//! looks again every [`POLL`]; a job submitted to THIS node wakes it at
//! once. The other timers are the lease renewal, retry back-offs after a
//! database error or a refusal, and the janitor's purge.
//!
//! [`Engine::load_changes`]: crate::jobs::service::engine::Engine::load_changes

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::{lock, Inner, Running};
use crate::api::{AsrError, JobClass, Progress, TranscriptionRequest};
use crate::audio::{self, AudioError, Upload};
use crate::error_code::Code;
use crate::ingest::IngestError;
use crate::jobs::pg::{Claim, PgJob};
use crate::jobs::service::MAX_INTERRUPTIONS;
use crate::jobs::types::{JobError, JobId, JobSpec, JobStatus};

/// How often an idle runner looks for work in the shared backlog (jobs of
/// other nodes, expired leases); see the module doc.
const POLL: Duration = Duration::from_millis(500);
/// Only if the node's state channel closed: how often the runner then
/// looks at the node instead.
const NODE_GONE_POLL: Duration = Duration::from_millis(100);

/// The runner: claims a job only while this node's worker is idle.
pub(super) async fn run(inner: Arc<Inner>) {
    // Marked changed by every change of the node's state.
    let mut node = inner.engine.load_changes();
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        // Seen before the load is read: a change after this wakes us.
        node.borrow_and_update();
        let load = inner.engine.load();
        if !load.idle || load.shutting_down {
            // Woken when the node's state changes, not by a timer.
            tokio::select! {
                changed = node.changed() => {
                    if changed.is_err() {
                        // Only if the node were gone (it cannot be while
                        // `engine` is held): look again later, not in a spin.
                        tokio::time::sleep(NODE_GONE_POLL).await;
                    }
                }
                () = inner.stop.cancelled() => break,
            }
            continue;
        }
        let claimed = inner
            .pg
            .claim(&inner.owner, inner.lease, MAX_INTERRUPTIONS)
            .await;
        inner.record(&claimed);
        let wait = match claimed {
            Ok(Some(claim)) => match run_claim(&inner, claim).await {
                Some(wait) => wait,
                None => continue,
            },
            // The poll that must remain (module doc): nothing to claim now,
            // and other nodes' submissions publish no event here.
            Ok(None) => POLL,
            // A back-off after a database error.
            Err(e) => {
                tracing::warn!(error = %e, "could not claim a job from the shared store");
                Duration::from_secs(1)
            }
        };
        // Early on a local event: a job accepted by this node.
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = inner.wake.notified() => {}
            () = inner.stop.cancelled() => break,
        }
    }
}

/// Runs one claimed job; `Some(wait)` when it was given back.
async fn run_claim(inner: &Arc<Inner>, claim: Claim) -> Option<Duration> {
    let Claim { job, audio, token } = claim;
    let id = job.id;
    let spec = job.spec.clone();
    let span = tracing::info_span!("async_job", job = %id, audio_secs = spec.audio_secs, claims = job.claims);
    tracing::info!(parent: &span, "job claimed from the shared store");
    let cancel = CancellationToken::new();
    let (progress_tx, live) = watch::channel(Progress {
        decoded_secs: job.decoded_secs as f32,
        total_secs: spec.audio_secs as f32,
    });
    *lock(&inner.running) = Some(Running {
        job: PgJob {
            status: JobStatus::Running,
            ..job
        },
        live: live.clone(),
        cancel: cancel.clone(),
    });

    // The lease, renewed every third of it with the progress; a renewal
    // that finds the lease gone (taken over, cancelled) stops the wait.
    let renewer = {
        let (inner, cancel, live) = (inner.clone(), cancel.clone(), live.clone());
        tokio::spawn(async move {
            let every = inner.lease / 3;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(every) => {}
                    () = cancel.cancelled() => return,
                }
                let decoded = f64::from(live.borrow().decoded_secs);
                let renewed = inner.pg.renew(id, token, inner.lease, decoded).await;
                inner.record(&renewed);
                match renewed {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(job = %id, "lease lost (cancelled or taken over); stopping");
                        cancel.cancel();
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(job = %id, error = %e, "lease renewal failed; retrying")
                    }
                }
            }
        })
    };
    let end = run_decode(inner, id, &spec, audio, token, &cancel, progress_tx)
        .instrument(span)
        .await;
    cancel.cancel();
    let _ = renewer.await;
    *lock(&inner.running) = None;
    end
}

async fn run_decode(
    inner: &Arc<Inner>,
    id: JobId,
    spec: &JobSpec,
    audio: Vec<u8>,
    token: uuid::Uuid,
    cancel: &CancellationToken,
    progress_tx: watch::Sender<Progress>,
) -> Option<Duration> {
    let decoded = inner
        .ingest
        .decode(Arc::new(Upload::from(audio)), spec.file_hint.clone())
        .await;
    let (samples, _pcm) = match decoded {
        Ok((d, lease)) => (d.samples, lease),
        Err(IngestError::Audio(AudioError::OverBudget { .. })) => {
            release(inner, id, token).await;
            return Some(audio::OVER_BUDGET_RETRY_AFTER);
        }
        Err(e) => {
            tracing::error!(error = %e, "the stored audio of a job is unusable");
            let err = JobError {
                code: Code::AudioLost.name().into(),
                message: "the job's stored audio could not be read".into(),
            };
            write_finish(inner, id, token, Err(&err)).await;
            return None;
        }
    };
    let mut request = TranscriptionRequest::new(samples);
    request.options = spec.options.clone();
    request.parent_span = tracing::Span::current();
    request.fault = spec.fault;
    // Behind realtime utterances and synchronous uploads in the queue.
    request.class = JobClass::Async;
    request.progress = Some(progress_tx);
    tracing::info!("async job handed to the node");
    let answer = tokio::select! {
        a = inner.engine.transcribe(request) => a,
        () = cancel.cancelled() => {
            tracing::info!("stopped waiting: the job was cancelled or its lease lost");
            return None;
        }
    };
    match answer {
        Ok(t) => {
            tracing::info!(
                decode_ms = t.decode_time.as_millis() as u64,
                "async job done"
            );
            write_finish(inner, id, token, Ok(&t.result)).await;
            None
        }
        Err(e) => {
            let again = matches!(
                e,
                AsrError::Busy { .. }
                    | AsrError::Unavailable { .. }
                    | AsrError::QueueTimeout { .. }
                    | AsrError::Cancelled
                    | AsrError::ShuttingDown
            ) || inner.stop.is_cancelled();
            if again {
                tracing::info!(error = %e, "async job not decoded now; given back to the shared backlog");
                release(inner, id, token).await;
                Some(Duration::from_secs(1))
            } else {
                let code = e.code();
                tracing::warn!(error = %e, code = code.name(), "async job failed");
                let err = JobError {
                    code: code.name().into(),
                    message: e.client_message(),
                };
                write_finish(inner, id, token, Err(&err)).await;
                None
            }
        }
    }
}

/// The final write, under the fencing token; retried while the database
/// is unreachable (until the lease would have expired anyway).
async fn write_finish(
    inner: &Arc<Inner>,
    id: JobId,
    token: uuid::Uuid,
    outcome: Result<&crate::api::JobResult, &JobError>,
) {
    let deadline = tokio::time::Instant::now() + inner.lease;
    loop {
        let r = inner.pg.finish(id, token, outcome).await;
        inner.record(&r);
        match r {
            Ok(true) => return,
            Ok(false) => {
                tracing::warn!(job = %id, "outcome dropped: the lease was no longer this node's");
                return;
            }
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::warn!(job = %id, error = %e, "could not write the outcome; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => {
                tracing::error!(job = %id, error = %e, "could not write the outcome; the job will run again elsewhere");
                return;
            }
        }
    }
}

async fn release(inner: &Arc<Inner>, id: JobId, token: uuid::Uuid) {
    let r = inner.pg.release(id, token).await;
    inner.record(&r);
    if let Err(e) = r {
        tracing::warn!(job = %id, error = %e, "could not give the job back; it returns when its lease expires");
    }
}

/// Purges finished jobs past their retention, from time to time.
pub(super) async fn janitor(inner: Arc<Inner>) {
    let retention = Duration::from_secs_f64(inner.config.retention_secs);
    loop {
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(60)) => {}
            () = inner.stop.cancelled() => return,
        }
        let r = inner.pg.purge(retention).await;
        inner.record(&r);
    }
}
