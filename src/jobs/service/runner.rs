//! The runner: the one task that feeds this node's async jobs to the node,
//! one at a time, oldest first, only when the node's worker is idle (or
//! after `max_defer_secs`), so async work never makes an interactive
//! request wait behind it (see the [jobs module doc](crate::jobs)).
//!
//! It never polls. It waits for one of: a job status change published by
//! the service (a job queued, cancelled, requeued: [`Inner::publish`]), a
//! change of the node's state ([`Engine::load_changes`]: the worker became
//! idle or ready), the `max_defer_secs` deadline, or shutdown. The one
//! timer left is the back-off after the node refused a job (busy,
//! unavailable, no decode budget): the node said when to try again.
//!
//! [`Engine::load_changes`]: super::engine::Engine::load_changes

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::Inner;
use crate::api::{AsrError, JobClass, JobResult, Progress, TranscriptionRequest};
use crate::audio::{self, AudioError};
use crate::error_code::Code;
use crate::ingest::IngestError;
use crate::jobs::store::{self, Write};
use crate::jobs::types::{now_ms, JobError, JobId, JobStatus};

/// Longest the runner waits after a busy or unavailable answer.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(30);
/// Only if the node's state channel closed (it cannot while the service
/// holds the node): how often the runner then looks at the node instead.
const NODE_GONE_POLL: Duration = Duration::from_millis(50);

/// What happened to the job the runner handed to the node.
enum RunEnd {
    /// Done, failed or cancelled: take the next job.
    Finished,
    /// Back in the backlog; try again after this long.
    Requeued(Duration),
    /// The service is stopping.
    Stop,
}

/// The runner: one async job at a time, oldest first, handed to the node
/// when its worker is idle (or after `max_defer_secs`).
pub(super) async fn run(inner: Arc<Inner>) {
    // Marked changed by every job status change of this service.
    let mut jobs = inner.changes.subscribe();
    // Marked changed by every change of the node's state.
    let mut node = inner.engine.load_changes();
    loop {
        if inner.stop.is_cancelled() {
            break;
        }
        // Seen before the table is read: a change after this wakes us.
        jobs.borrow_and_update();
        let next = inner.lock().queue.front().copied();
        let Some(id) = next else {
            tokio::select! {
                _ = jobs.changed() => continue,
                () = inner.stop.cancelled() => break,
            }
        };
        if !wait_for_turn(&inner, id, &mut jobs, &mut node).await {
            continue;
        }
        match run_one(&inner, id).await {
            RunEnd::Finished => {}
            RunEnd::Requeued(wait) => {
                // A back-off, not a poll: the node refused the job and said
                // when to try again (Retry-After, or the decode budget's
                // retry hint); trying earlier would be refused again.
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = inner.stop.cancelled() => break,
                }
            }
            RunEnd::Stop => break,
        }
    }
    tracing::debug!("job runner stopped");
}

/// Waits until the node can take `id` without making an interactive
/// request wait: the worker is idle and nothing is queued, or the job has
/// been deferred for `max_defer_secs`. `false` if `id` is no longer first
/// in line or the service stops. Woken by job status changes (`jobs`), node
/// state changes (`node`), the deferral deadline and shutdown; never polls.
async fn wait_for_turn(
    inner: &Arc<Inner>,
    id: JobId,
    jobs: &mut watch::Receiver<()>,
    node: &mut watch::Receiver<()>,
) -> bool {
    let max_defer = Duration::from_secs_f64(inner.config.max_defer_secs);
    let deferred_until = tokio::time::Instant::now() + max_defer;
    loop {
        // Seen before the state is read: a change after this wakes us.
        jobs.borrow_and_update();
        node.borrow_and_update();
        if inner.stop.is_cancelled() || inner.lock().queue.front() != Some(&id) {
            return false;
        }
        let load = inner.engine.load();
        if load.shutting_down {
            return false;
        }
        let deferred = tokio::time::Instant::now() >= deferred_until;
        if load.ready && (load.idle || deferred) {
            return true;
        }
        tokio::select! {
            changed = node.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(NODE_GONE_POLL).await;
                }
            }
            _ = jobs.changed() => {}
            () = tokio::time::sleep_until(deferred_until), if !deferred => {}
            () = inner.stop.cancelled() => return false,
        }
    }
}

/// Hands one job to the node and records how it ended.
async fn run_one(inner: &Arc<Inner>, id: JobId) -> RunEnd {
    // Take it from the backlog.
    let (spec, token, progress_tx) = {
        let mut t = inner.lock();
        if t.queue.front() != Some(&id) {
            return RunEnd::Finished;
        }
        t.queue.pop_front();
        let Some(e) = t.jobs.get_mut(&id) else {
            return RunEnd::Finished;
        };
        // Not a child of `stop`: at shutdown the runner keeps waiting for
        // the node, which drains the in-flight decode.
        let token = CancellationToken::new();
        let (tx, rx) = watch::channel(Progress {
            decoded_secs: 0.0,
            total_secs: e.spec.audio_secs as f32,
        });
        e.status = JobStatus::Running;
        let started = now_ms();
        e.started_at_ms = Some(started);
        e.decoded_secs = 0.0;
        e.live = Some(rx);
        e.cancel = Some(token.clone());
        inner.store.send(Write::Running {
            id,
            started_at_ms: started,
        });
        (e.spec.clone(), token, tx)
    };
    inner.publish();
    let span = tracing::info_span!("async_job", job = %id, audio_secs = spec.audio_secs);

    // Its audio, decoded from the stored file through the node's shared
    // decode slots and PCM budget; the budget is held until the answer.
    let opened = {
        let dir = inner.data_dir.clone();
        tokio::task::spawn_blocking(move || store::open_audio(&dir, id))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| format!("opening the stored audio: {e}")))
    };
    let decoded = match opened {
        Ok(upload) => {
            inner
                .ingest
                .decode(Arc::new(upload), spec.file_hint.clone())
                .instrument(span.clone())
                .await
        }
        Err(e) => Err(IngestError::Internal(e)),
    };
    let (samples, _pcm) = match decoded {
        Ok((d, lease)) => (d.samples, lease),
        Err(IngestError::Audio(AudioError::OverBudget { needed_bytes })) => {
            // The node holds too much decoded audio right now (sync
            // requests): try again later rather than fail the job.
            tracing::info!(parent: &span, needed_bytes, "no decode budget for this async job now; back to the backlog");
            requeue(inner, id);
            return RunEnd::Requeued(audio::OVER_BUDGET_RETRY_AFTER);
        }
        Err(e) => {
            tracing::error!(parent: &span, error = %e, "the stored audio of a job is unusable");
            finish(
                inner,
                id,
                Err(JobError {
                    code: Code::AudioLost.name().into(),
                    message: "the job's stored audio could not be read".into(),
                }),
            );
            return RunEnd::Finished;
        }
    };

    if token.is_cancelled() {
        return RunEnd::Finished;
    }
    let mut request = TranscriptionRequest::new(samples);
    request.options = spec.options.clone();
    request.parent_span = span.clone();
    request.fault = spec.fault;
    // Behind realtime utterances and synchronous uploads in the queue.
    request.class = JobClass::Async;
    let mut progress_rx = progress_tx.subscribe();
    request.progress = Some(progress_tx);
    tracing::info!(parent: &span, "async job handed to the node");
    let mut answer = inner.engine.transcribe(request);
    let answer = loop {
        tokio::select! {
            a = &mut answer => break Some(a),
            () = token.cancelled() => break None,
            changed = progress_rx.changed() => {
                if changed.is_ok() {
                    let decoded = f64::from(progress_rx.borrow_and_update().decoded_secs);
                    inner.store.send(Write::Progress { id, decoded_secs: decoded });
                } else {
                    // The sender went with the request: only the answer is left.
                    break Some(answer.await);
                }
            }
        }
    };
    let Some(answer) = answer else {
        // DELETE already marked it cancelled; dropping the request makes
        // the node drop it if it has not reached the worker yet.
        tracing::info!(parent: &span, "stopped waiting for a cancelled job");
        return RunEnd::Finished;
    };
    match answer {
        Ok(t) => {
            if spec.audio_secs >= 1.0 {
                let rtf = t.decode_time.as_secs_f64() / spec.audio_secs;
                let mut table = inner.lock();
                table.rtf = 0.7 * table.rtf + 0.3 * rtf;
            }
            tracing::info!(parent: &span, decode_ms = t.decode_time.as_millis() as u64, "async job done");
            finish(inner, id, Ok(Arc::new(t.result)));
            RunEnd::Finished
        }
        Err(e) => {
            let stopping = inner.stop.is_cancelled();
            let retry = match &e {
                _ if stopping => Some(Duration::ZERO),
                AsrError::Busy { retry_after, .. } | AsrError::Unavailable { retry_after, .. } => {
                    Some((*retry_after).clamp(Duration::from_millis(100), MAX_RETRY_WAIT))
                }
                AsrError::QueueTimeout { .. } | AsrError::Cancelled | AsrError::ShuttingDown => {
                    Some(Duration::ZERO)
                }
                _ => None,
            };
            match retry {
                Some(wait) => {
                    tracing::info!(parent: &span, error = %e, ?wait, "async job not decoded now; back to the backlog");
                    requeue(inner, id);
                    if stopping || matches!(e, AsrError::ShuttingDown) {
                        RunEnd::Stop
                    } else {
                        RunEnd::Requeued(wait)
                    }
                }
                None => {
                    let code = e.code();
                    tracing::warn!(parent: &span, error = %e, code = code.name(), "async job failed");
                    finish(
                        inner,
                        id,
                        Err(JobError {
                            code: code.name().into(),
                            message: e.client_message(),
                        }),
                    );
                    RunEnd::Finished
                }
            }
        }
    }
}

/// Records a running job's end, unless it was cancelled meanwhile.
fn finish(inner: &Inner, id: JobId, outcome: Result<Arc<JobResult>, JobError>) {
    let now = now_ms();
    let write = {
        let mut t = inner.lock();
        let Some(e) = t.jobs.get_mut(&id) else { return };
        if e.status != JobStatus::Running {
            return;
        }
        e.finished_at_ms = Some(now);
        e.cancel = None;
        e.decoded_secs = e.decoded_now();
        e.live = None;
        match outcome {
            Ok(result) => {
                e.status = JobStatus::Done;
                e.decoded_secs = e.spec.audio_secs;
                e.result = Some(result.clone());
                Write::Finished {
                    id,
                    status: JobStatus::Done,
                    finished_at_ms: now,
                    result: Some(result),
                    error: None,
                }
            }
            Err(err) => {
                e.status = JobStatus::Failed;
                e.error = Some(err.clone());
                Write::Finished {
                    id,
                    status: JobStatus::Failed,
                    finished_at_ms: now,
                    result: None,
                    error: Some(err),
                }
            }
        }
    };
    inner.store.send(write);
    inner.publish();
}

/// Puts a running job back at the head of the backlog.
fn requeue(inner: &Inner, id: JobId) {
    let mut t = inner.lock();
    let Some(e) = t.jobs.get_mut(&id) else { return };
    if e.status != JobStatus::Running {
        return;
    }
    e.status = JobStatus::Queued;
    e.started_at_ms = None;
    e.decoded_secs = 0.0;
    e.live = None;
    e.cancel = None;
    t.queue.push_front(id);
    drop(t);
    inner.store.send(Write::Requeued { id });
    inner.publish();
}
