//! `BoundedQueueActor`: admission control and dispatch.
//!
//! # Protocol
//! - In: [`QueueMsg::Submit`] from the ingress, [`QueueMsg::WorkerIdle`] from
//!   the worker proxy when it can take a job, [`QueueMsg::WorkerDown`] from
//!   the supervisor when the worker died, [`QueueMsg::Expire`] from its own
//!   timers.
//! - Out: [`WorkerProxyMsg::Run`] to an idle worker; every refused or
//!   expired job is answered on its reply port at once.
//!
//! # Rules
//! - The queue lives in this actor's state with an explicit capacity (jobs
//!   and audio seconds). Ractor mailboxes are unbounded, so the limit is
//!   enforced here, and a full queue answers [`AsrError::Busy`] immediately
//!   with a `Retry-After` computed from the queued audio and the measured
//!   real-time factor.
//! - While the worker is down, new jobs get [`AsrError::Unavailable`];
//!   jobs already queued stay queued for the restarted worker.
//! - A job that waits past its deadline is answered
//!   [`AsrError::QueueTimeout`] and never sent to the worker; a job whose
//!   client has gone (reply port closed) is dropped before decode.
//! - The worker is handed the next job the moment it reports idle.
//! - `handle` never panics and never awaits anything slow: every branch is a
//!   few pointer moves and sends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr, RpcReplyPort};

use super::shared::Shared;
use super::worker_proxy::WorkerProxyMsg;
use crate::api::{AsrError, DecodeOptions, Fault, Transcript};

/// Where a job's answer goes.
pub type Reply = RpcReplyPort<Result<Transcript, AsrError>>;

/// The audio and options of a job, shared (not copied) between the queue,
/// the worker proxy and a possible retry.
#[derive(Debug)]
pub struct JobPayload {
    /// 16 kHz mono PCM.
    pub samples: Vec<f32>,
    /// Decode options.
    pub options: DecodeOptions,
    /// Injected fault (tests).
    pub fault: Option<Fault>,
}

/// A job on its way through the tree.
#[derive(Debug)]
pub struct QueuedJob {
    /// Node-unique id.
    pub id: u64,
    /// Audio and options.
    pub payload: Arc<JobPayload>,
    /// Seconds of audio.
    pub audio_secs: f64,
    /// When the queue admitted it.
    pub admitted_at: Instant,
    /// When it must have been dispatched.
    pub deadline: Instant,
    /// The job's span (child of the request's span).
    pub span: tracing::Span,
    /// Where the answer goes.
    pub reply: Reply,
    /// Where decode progress goes, if anyone listens.
    pub progress: Option<crate::api::ProgressSink>,
}

/// Messages of the [`BoundedQueueActor`].
#[derive(Debug)]
pub enum QueueMsg {
    /// Admit (or refuse) a job.
    Submit(QueuedJob),
    /// The worker can take a job now.
    WorkerIdle {
        /// The proxy to send it to.
        worker: ActorRef<WorkerProxyMsg>,
        /// Real-time factor (decode seconds per audio second) of the job it
        /// just finished, if any.
        rtf: Option<f64>,
    },
    /// The worker died; new jobs are refused with 503 until it is back.
    WorkerDown {
        /// Expected time until it accepts work again.
        retry_after: Duration,
    },
    /// A job's queue deadline passed.
    Expire(u64),
}

/// Limits of the queue.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    /// Jobs allowed to wait.
    pub capacity: usize,
    /// Audio seconds allowed to wait (0 = unlimited).
    pub max_audio_secs: f64,
}

/// The admission-control actor.
pub struct BoundedQueueActor;

/// Arguments of the [`BoundedQueueActor`].
pub struct QueueArgs {
    /// Limits.
    pub limits: QueueLimits,
    /// Published state.
    pub shared: Arc<Shared>,
}

/// State of the [`BoundedQueueActor`].
pub struct QueueState {
    limits: QueueLimits,
    shared: Arc<Shared>,
    jobs: VecDeque<QueuedJob>,
    queued_audio_secs: f64,
    idle_worker: Option<ActorRef<WorkerProxyMsg>>,
    worker_up: bool,
    down_until: Option<Instant>,
    /// Moving average of decode seconds per audio second.
    rtf: f64,
}

impl QueueState {
    fn publish(&self) {
        self.shared.set_queue_depth(self.jobs.len());
    }

    /// How long until a refused client should retry: the queued audio times
    /// the measured real-time factor, at least a second.
    fn busy_retry_after(&self) -> Duration {
        let secs = (self.queued_audio_secs * self.rtf).clamp(1.0, 120.0);
        Duration::from_secs_f64(secs.ceil())
    }

    fn down_retry_after(&self) -> Duration {
        let left = self
            .down_until
            .map(|t| t.saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        left.max(Duration::from_secs(1))
    }

    fn admit(&mut self, myself: &ActorRef<QueueMsg>, job: QueuedJob) {
        if !self.worker_up {
            let retry_after = self.down_retry_after();
            tracing::info!(job_id = job.id, ?retry_after, "worker down, refusing job");
            let _ = job.reply.send(Err(AsrError::Unavailable {
                retry_after,
                reason: "the worker is restarting".into(),
            }));
            return;
        }
        let over_audio = self.limits.max_audio_secs > 0.0
            && !self.jobs.is_empty()
            && self.queued_audio_secs + job.audio_secs > self.limits.max_audio_secs;
        if self.jobs.len() >= self.limits.capacity || over_audio {
            let retry_after = self.busy_retry_after();
            tracing::info!(job_id = job.id, queued = self.jobs.len(), ?retry_after, "queue full, refusing job");
            let _ = job.reply.send(Err(AsrError::Busy { retry_after, queued: self.jobs.len() }));
            return;
        }
        let until_deadline = job.deadline.saturating_duration_since(Instant::now());
        myself.send_after(until_deadline, {
            let id = job.id;
            move || QueueMsg::Expire(id)
        });
        self.queued_audio_secs += job.audio_secs;
        self.jobs.push_back(job);
        self.dispatch();
    }

    fn take_front(&mut self) -> Option<QueuedJob> {
        let job = self.jobs.pop_front()?;
        self.queued_audio_secs = (self.queued_audio_secs - job.audio_secs).max(0.0);
        Some(job)
    }

    /// Hands the front job to the idle worker, skipping jobs whose client
    /// left or whose deadline passed.
    fn dispatch(&mut self) {
        while self.idle_worker.is_some() {
            let Some(job) = self.take_front() else { break };
            if job.reply.is_closed() {
                tracing::info!(job_id = job.id, "client gone, dropping job before decode");
                continue;
            }
            let now = Instant::now();
            if now >= job.deadline {
                let waited = now - job.admitted_at;
                let _ = job.reply.send(Err(AsrError::QueueTimeout { waited }));
                continue;
            }
            let worker = self.idle_worker.take().expect("checked above");
            match worker.cast(WorkerProxyMsg::Run(job)) {
                Ok(()) => {}
                Err(MessagingErr::SendErr(WorkerProxyMsg::Run(job))) => {
                    // The proxy stopped between reporting idle and now: keep
                    // the job first in line for the next worker.
                    tracing::warn!(job_id = job.id, "worker gone at dispatch, requeueing");
                    self.queued_audio_secs += job.audio_secs;
                    self.jobs.push_front(job);
                }
                Err(e) => {
                    tracing::error!(error = %e, "unexpected dispatch failure");
                }
            }
        }
        self.publish();
    }

    fn expire(&mut self, id: u64) {
        if let Some(pos) = self.jobs.iter().position(|j| j.id == id) {
            if let Some(job) = self.jobs.remove(pos) {
                self.queued_audio_secs = (self.queued_audio_secs - job.audio_secs).max(0.0);
                let waited = job.admitted_at.elapsed();
                tracing::info!(job_id = id, ?waited, "job waited past its deadline");
                let _ = job.reply.send(Err(AsrError::QueueTimeout { waited }));
            }
        }
        self.publish();
    }
}

impl Actor for BoundedQueueActor {
    type Msg = QueueMsg;
    type State = QueueState;
    type Arguments = QueueArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: QueueArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(QueueState {
            limits: args.limits,
            shared: args.shared,
            jobs: VecDeque::new(),
            queued_audio_secs: 0.0,
            idle_worker: None,
            // The node only admits work after the first worker loaded.
            worker_up: true,
            down_until: None,
            rtf: 0.2,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            QueueMsg::Submit(job) => state.admit(&myself, job),
            QueueMsg::WorkerIdle { worker, rtf } => {
                if let Some(rtf) = rtf.filter(|r| r.is_finite() && *r > 0.0) {
                    state.rtf = 0.8 * state.rtf + 0.2 * rtf;
                }
                state.worker_up = true;
                state.down_until = None;
                state.idle_worker = Some(worker);
                state.dispatch();
            }
            QueueMsg::WorkerDown { retry_after } => {
                state.worker_up = false;
                state.idle_worker = None;
                state.down_until = Some(Instant::now() + retry_after);
            }
            QueueMsg::Expire(id) => state.expire(id),
        }
        Ok(())
    }
}
