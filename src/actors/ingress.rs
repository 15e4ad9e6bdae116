//! `IngressActor`: the tree's front door.
//!
//! # Protocol
//! - In: [`IngressMsg::Transcribe`] with the request and its reply port
//!   (from [`crate::AsrNode::transcribe`]).
//! - Out: [`QueueMsg::Submit`] with a [`QueuedJob`]; the reply port travels
//!   with the job, so whoever ends the job (queue, worker proxy) answers the
//!   client directly and this actor never waits on a transcription.
//!
//! It assigns the job id, opens the job's span under the request's span,
//! enforces per-request limits (audio length, queue-wait deadline) and
//! refuses work while the node shuts down.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};

use super::queue::{fingerprint, JobPayload, QueueMsg, QueuedJob, Reply};
use crate::api::{AsrError, TranscriptionRequest};
use crate::config::NodeConfig;

/// Messages of the [`IngressActor`].
#[derive(Debug)]
pub enum IngressMsg {
    /// Transcribe; the answer goes to the port.
    Transcribe(Box<TranscriptionRequest>, Reply),
    /// Refuse all new work from now on (shutdown).
    StopAdmitting,
}

/// Arguments of the [`IngressActor`].
pub struct IngressArgs {
    /// Node configuration.
    pub config: Arc<NodeConfig>,
    /// The queue jobs go to.
    pub queue: ActorRef<QueueMsg>,
}

/// State of the [`IngressActor`].
pub struct IngressState {
    config: Arc<NodeConfig>,
    queue: ActorRef<QueueMsg>,
    next_id: AtomicU64,
    admitting: bool,
}

/// The front-door actor.
pub struct IngressActor;

impl Actor for IngressActor {
    type Msg = IngressMsg;
    type State = IngressState;
    type Arguments = IngressArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: IngressArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(IngressState {
            config: args.config,
            queue: args.queue,
            next_id: AtomicU64::new(1),
            admitting: true,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            IngressMsg::StopAdmitting => state.admitting = false,
            IngressMsg::Transcribe(req, reply) => {
                if !state.admitting {
                    let _ = reply.send(Err(AsrError::ShuttingDown));
                    return Ok(());
                }
                let audio_secs = req.audio_secs();
                if audio_secs > state.config.max_audio_secs {
                    let _ = reply.send(Err(AsrError::Rejected(
                        asr_ipc::WorkerError::InvalidAudio(format!(
                            "audio is {audio_secs:.0} s long; the limit is {:.0} s",
                            state.config.max_audio_secs
                        )),
                    )));
                    return Ok(());
                }
                let id = state.next_id.fetch_add(1, Ordering::Relaxed);
                let max_wait = req
                    .max_queue_wait
                    .map(|w| w.min(state.config.max_queue_wait()))
                    .unwrap_or_else(|| state.config.max_queue_wait())
                    .max(Duration::from_millis(1));
                let now = Instant::now();
                let span = crate::telemetry::job_span(&req.parent_span, id, audio_secs);
                let req = *req;
                // Hashed by AsrNode::transcribe off the runtime; only a host
                // messaging the ingress directly leaves it to this handler.
                let fingerprint = req.fingerprint.unwrap_or_else(|| fingerprint(&req.samples));
                let job = QueuedJob {
                    id,
                    payload: Arc::new(JobPayload {
                        samples: req.samples,
                        options: req.options,
                        fault: req.fault,
                        stream_segments: req.segments.is_some(),
                    }),
                    audio_secs,
                    admitted_at: now,
                    deadline: now + max_wait,
                    span,
                    reply,
                    attempts: 0,
                    fingerprint,
                    progress: req.progress,
                    segments: req.segments,
                    queue_wait: None,
                    class: req.class,
                    solo: false,
                };
                match state.queue.cast(QueueMsg::Submit(job)) {
                    Ok(()) => {}
                    Err(MessagingErr::SendErr(QueueMsg::Submit(job))) => {
                        let _ = job
                            .reply
                            .send(Err(AsrError::Internal("the queue is not running".into())));
                    }
                    Err(e) => tracing::error!(error = %e, "could not submit job"),
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
