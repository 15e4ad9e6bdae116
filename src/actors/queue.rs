//! `BoundedQueueActor`: admission control and dispatch.
//!
//! # Protocol
//! - In: [`QueueMsg::Submit`] from the ingress, [`QueueMsg::WorkerIdle`] from
//!   a worker proxy when it can take a job (or a batch), [`QueueMsg::WorkerDown`] from
//!   the supervisor when a worker died, [`QueueMsg::Expire`] from its own
//!   timers.
//! - Out: [`WorkerProxyMsg::Run`] (a batch of one or more jobs) to an idle
//!   worker (any worker of the pool, one with a free engine first; see
//!   [`pool`]); every refused or
//!   expired job is answered on its reply port at once.
//!
//! # Rules
//! - The queue lives in this actor's state with an explicit capacity (jobs
//!   and audio seconds). Ractor mailboxes are unbounded, so the limit is
//!   enforced here, and a full queue answers [`AsrError::Busy`] immediately
//!   with a `Retry-After` computed from the queued audio, the measured
//!   real-time factor and the workers accepting work
//!   ([`pool::pool_drain_secs`]); the audio-seconds limit is per accepting
//!   worker ([`pool::pool_audio_allowance`]).
//! - While every worker is down, new jobs get [`AsrError::Unavailable`];
//!   jobs already queued stay queued for the restarted workers. While
//!   some worker accepts work, the node serves on it.
//! - A job that waits past its deadline is answered
//!   [`AsrError::QueueTimeout`] and never sent to the worker; a job whose
//!   client has gone (reply port closed) is dropped before decode.
//! - The worker is handed the next job the moment it reports idle; with
//!   staging it asks again while it decodes, and the job it then gets waits
//!   in the worker ([`super::worker_proxy`] checks its client and deadline
//!   there) and still counts against the capacity.
//! - Dynamic batching (`max_batch` > 1): the worker is handed the head job
//!   plus up to `max_batch − 1` further waiting jobs that may be decoded
//!   with it (same class, compatible options, short audio: see [`batch`]),
//!   as one [`WorkerProxyMsg::Run`]. Jobs whose client left are dropped and
//!   expired ones answered before a batch is formed, as for a lone job. A
//!   batch to *stage* is sent only when full (otherwise its jobs keep
//!   waiting here, where more may join, until the worker is idle); an idle
//!   worker gets what waits at once, or, with `batch_wait` > 0, once the
//!   partial batch has waited that long for more ([`QueueMsg::BatchDue`]).
//!   A lone request is thus never delayed with the default `batch_wait` 0.
//!   With `max_batch` 1 every batch is one job: exactly the behaviour
//!   without batching. A retried job ([`QueuedJob::solo`]) always goes
//!   alone.
//! - A job whose decode crashed the worker comes back as
//!   [`QueueMsg::Retry`] and goes first in line (capacity does not apply: it
//!   was admitted already); an input that crashed the worker too often is
//!   [`QueueMsg::Quarantine`]d, and the same audio submitted again is answered
//!   [`AsrError::Quarantined`] at once.
//! - Priority classes ([`JobClass`]): a job is queued behind every waiting
//!   job of its own or a higher class and ahead of every job of a lower
//!   class, so the worker always gets the oldest job of the highest class
//!   waiting: realtime utterances, then synchronous uploads, then async
//!   jobs. All classes share the one capacity (a realtime utterance is
//!   refused [`AsrError::Busy`] like any job when the queue is full; it is
//!   never silently dropped), and nothing is preempted: a job already
//!   dispatched or staged decodes to its end. Lower classes cannot starve
//!   for long, because realtime work is bounded by design (a few seconds
//!   of speech per utterance, a bounded number of sessions, each with a
//!   bounded number of utterances waiting; see [`crate::realtime`]).
//!   Retried and requeued jobs still go first in line.
//! - [`QueueMsg::Drain`] (shutdown) answers every waiting job
//!   [`AsrError::ShuttingDown`] and refuses new ones.
//! - `handle` never panics and never awaits anything slow: every branch is a
//!   few pointer moves and sends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, MessagingErr};

pub use super::job::{fingerprint, JobPayload, QueuedJob, Reply};
use super::shared::Shared;
use super::worker_proxy::WorkerProxyMsg;
use crate::api::{AsrError, JobClass};
use pool::Pool;

pub mod batch;

/// Messages of the [`BoundedQueueActor`].
#[derive(Debug)]
pub enum QueueMsg {
    /// Admit (or refuse) a job.
    Submit(QueuedJob),
    /// The worker can take a job (or a batch) now. Sent only while the proxy
    /// holds no staged batch.
    WorkerIdle {
        /// The proxy to send it to.
        worker: ActorRef<WorkerProxyMsg>,
        /// Its worker's id in the pool.
        worker_id: usize,
        /// Real-time factor of the batch (or job) it just finished, if any:
        /// decode wall time over the batch's total audio, so Retry-After and
        /// the audio-seconds admission follow the drain rate with batching.
        rtf: Option<f64>,
        /// The job would be staged behind the one in flight (it still waits,
        /// so it keeps counting against the queue's capacity), rather than
        /// decoded at once.
        stage: bool,
    },
    /// This worker proxy's child exited: never dispatch to it again (sent
    /// before the jobs it gives back).
    WorkerGone {
        /// The proxy.
        worker: ActorRef<WorkerProxyMsg>,
    },
    /// A worker died; while every worker is down, new jobs are refused
    /// with 503.
    WorkerDown {
        /// Its id in the pool.
        worker: usize,
        /// Expected time until it accepts work again.
        retry_after: Duration,
    },
    /// A job's queue deadline passed (job id, attempt it was set for).
    Expire(u64, u32),
    /// A job that was in flight when the worker crashed: run it again first.
    Retry(QueuedJob),
    /// A job the worker proxy took but did not decode (staged in a worker
    /// that died, or sent to a proxy that could not take it): first in line
    /// again, its attempts unchanged.
    Requeue(QueuedJob),
    /// This audio crashed the worker too often: refuse it from now on.
    Quarantine(u64),
    /// Shutdown: answer everything waiting with 503 and admit nothing more.
    Drain,
    /// A forming batch's `batch_wait` may have passed: dispatch what waits.
    BatchDue,
}

/// How long until a client refused for a full queue should retry: the
/// waiting audio times the measured real-time factor (decode seconds per
/// audio second), in whole seconds, between 1 and 120.
pub fn busy_retry_after(waiting_audio_secs: f64, rtf: f64) -> Duration {
    let secs = (waiting_audio_secs * rtf).clamp(1.0, 120.0);
    Duration::from_secs_f64(secs.ceil())
}

/// The moving average of the real-time factor, with a finished job's `rtf`
/// (ignored unless finite and positive).
pub fn update_rtf(average: f64, rtf: Option<f64>) -> f64 {
    match rtf.filter(|r| r.is_finite() && *r > 0.0) {
        Some(r) => 0.8 * average + 0.2 * r,
        None => average,
    }
}

/// Where a new job of `class` goes in `jobs`: after every job of the same
/// or a higher class (first come, first served within a class), before the
/// first job of a lower class.
fn queue_position(jobs: &VecDeque<QueuedJob>, class: JobClass) -> usize {
    jobs.iter()
        .position(|j| j.class > class)
        .unwrap_or(jobs.len())
}

/// Quarantined inputs remembered (oldest forgotten first).
const QUARANTINE_CAPACITY: usize = 1024;

/// Limits of the queue.
#[derive(Debug, Clone)]
pub struct QueueLimits {
    /// Jobs allowed to wait.
    pub capacity: usize,
    /// Audio seconds allowed to wait (0 = unlimited).
    pub max_audio_secs: f64,
    /// Default longest wait (used for retried jobs' fresh deadline).
    pub max_wait: Duration,
    /// Most jobs per batch (1 = batching off).
    pub max_batch: usize,
    /// How long a partial batch may wait for more jobs while the worker is
    /// idle (zero: never).
    pub batch_wait: Duration,
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
    max_wait: Duration,
    shared: Arc<Shared>,
    jobs: VecDeque<QueuedJob>,
    queued_audio_secs: f64,
    /// The workers: which asked for a job, what is staged in each, which
    /// are down.
    pool: Pool,
    /// When the batch at the head began waiting for more jobs (with
    /// `batch_wait`), while a worker is idle.
    forming_since: Option<Instant>,
    /// Moving average of decode seconds per audio second.
    rtf: f64,
    quarantine: VecDeque<u64>,
    draining: bool,
}

impl QueueState {
    /// Jobs waiting: in this queue, plus those staged in the workers.
    fn waiting(&self) -> usize {
        self.jobs.len() + self.pool.staged_jobs()
    }

    /// Audio seconds waiting: in this queue, plus the jobs staged in the
    /// workers.
    fn waiting_audio_secs(&self) -> f64 {
        self.queued_audio_secs + self.pool.staged_audio_secs()
    }

    fn publish(&self) {
        let full = (self.waiting() >= self.limits.capacity).then(|| self.busy_retry_after());
        self.shared.set_queue_depth(self.waiting(), full);
    }

    /// How long until a refused client should retry ([`busy_retry_after`]
    /// with the pool's drain rate).
    fn busy_retry_after(&self) -> Duration {
        let per_worker = pool::pool_drain_secs(1.0, self.rtf, self.pool.accepting());
        busy_retry_after(self.waiting_audio_secs(), per_worker)
    }

    fn down_retry_after(&self) -> Duration {
        self.pool.first_back_in().max(Duration::from_secs(1))
    }

    fn admit(&mut self, myself: &ActorRef<QueueMsg>, mut job: QueuedJob) {
        if self.draining {
            let _ = job.reply.send(Err(AsrError::ShuttingDown));
            return;
        }
        if self.quarantine.contains(&job.fingerprint) {
            tracing::warn!(parent: &job.span, job_id = job.id, "refusing quarantined input");
            let _ = job.reply.send(Err(AsrError::Quarantined));
            return;
        }
        if self.pool.all_down() {
            let retry_after = self.down_retry_after();
            tracing::info!(parent: &job.span, job_id = job.id, ?retry_after, "worker down, refusing job");
            let _ = job.reply.send(Err(AsrError::Unavailable {
                retry_after,
                reason: "the worker is restarting".into(),
            }));
            return;
        }
        self.sweep_gone();
        let allowance =
            pool::pool_audio_allowance(self.limits.max_audio_secs, self.pool.accepting());
        let over_audio = self.limits.max_audio_secs > 0.0
            && self.waiting() > 0
            && self.waiting_audio_secs() + job.audio_secs > allowance;
        if self.waiting() >= self.limits.capacity || over_audio {
            let retry_after = self.busy_retry_after();
            tracing::info!(parent: &job.span, job_id = job.id, queued = self.waiting(), ?retry_after, "queue full, refusing job");
            crate::metrics::busy_rejection();
            let _ = job.reply.send(Err(AsrError::Busy {
                retry_after,
                queued: self.waiting(),
            }));
            return;
        }
        self.arm_deadline(myself, &job);
        self.queued_audio_secs += job.audio_secs;
        let at = queue_position(&self.jobs, job.class);
        job.start_queue_wait(at);
        self.jobs.insert(at, job);
        self.dispatch(myself);
    }

    fn arm_deadline(&self, myself: &ActorRef<QueueMsg>, job: &QueuedJob) {
        let until_deadline = job.deadline.saturating_duration_since(Instant::now());
        let (id, attempt) = (job.id, job.attempts);
        myself.send_after(until_deadline, move || QueueMsg::Expire(id, attempt));
    }

    /// A crashed (or requeued) job goes first in line with a fresh deadline
    /// that allows for the worker's restart.
    fn retry(
        &mut self,
        myself: &ActorRef<QueueMsg>,
        mut job: QueuedJob,
        max_wait: Duration,
        crashed: bool,
    ) {
        if self.draining {
            let _ = job.reply.send(Err(AsrError::ShuttingDown));
            return;
        }
        if crashed {
            tracing::warn!(parent: &job.span, job_id = job.id, attempt = job.attempts, "retrying job after a worker crash");
        } else {
            tracing::info!(parent: &job.span, job_id = job.id, "job back in the queue before decode");
        }
        job.deadline = Instant::now() + max_wait + self.down_retry_after();
        self.arm_deadline(myself, &job);
        self.queued_audio_secs += job.audio_secs;
        job.start_queue_wait(self.jobs.len());
        self.jobs.push_front(job);
        self.dispatch(myself);
    }

    fn drain(&mut self) {
        self.draining = true;
        while let Some(job) = self.take_front() {
            let _ = job.reply.send(Err(AsrError::ShuttingDown));
        }
        self.publish();
    }

    fn take_front(&mut self) -> Option<QueuedJob> {
        let job = self.jobs.pop_front()?;
        self.forget_audio(&job);
        Some(job)
    }

    /// `job` left `jobs`: its audio stops counting as queued.
    fn forget_audio(&mut self, job: &QueuedJob) {
        self.queued_audio_secs = (self.queued_audio_secs - job.audio_secs).max(0.0);
    }

    /// Takes the jobs at the front whose client left (dropped) or whose
    /// deadline passed (answered `QueueTimeout`) out of the queue.
    fn clean_front(&mut self) {
        let now = Instant::now();
        while let Some(why) = self.jobs.front().and_then(|j| batch::stale(j, now)) {
            if let Some(job) = self.take_front() {
                self.drop_stale(job, why, now);
            }
        }
    }

    /// Drops (client gone) or answers (expired) a job taken out of the
    /// queue without being dispatched.
    fn drop_stale(&mut self, mut job: QueuedJob, why: batch::Dropped, now: Instant) {
        match why {
            batch::Dropped::ClientGone => {
                tracing::info!(parent: &job.span, job_id = job.id, "client gone, dropping job before decode");
                job.end_queue_wait("client_gone");
            }
            batch::Dropped::Expired => {
                let waited = now - job.admitted_at;
                tracing::info!(parent: &job.span, job_id = job.id, ?waited, "job waited past its deadline");
                crate::metrics::queue_timeout();
                job.end_queue_wait("expired");
                let _ = job.reply.send(Err(AsrError::QueueTimeout { waited }));
            }
        }
    }

    /// Whether the head waits for more jobs before it is sent: with
    /// batching, a batch to *stage* is sent only when full (the worker is
    /// busy anyway; when it is idle it asks again without staging), and an
    /// idle worker gets a partial batch once `batch_wait` has passed since
    /// the batch began forming (at once with the default 0).
    fn hold_for_batch(&mut self, myself: &ActorRef<QueueMsg>, stage: bool) -> bool {
        let Some(head) = self.jobs.front() else {
            return false;
        };
        if self.limits.max_batch <= 1 || !batch::batchable(head) {
            return false;
        }
        let now = Instant::now();
        let available = 1 + batch::joinable(self.jobs.range(1..), head, now);
        if available >= self.limits.max_batch {
            return false;
        }
        if stage {
            return true;
        }
        if self.limits.batch_wait.is_zero() {
            return false;
        }
        let since = match self.forming_since {
            Some(t) => t,
            None => {
                self.forming_since = Some(now);
                myself.send_after(self.limits.batch_wait, || QueueMsg::BatchDue);
                now
            }
        };
        now < since + self.limits.batch_wait
    }

    /// Hands the head of the queue, with up to `max_batch − 1` compatible
    /// waiting jobs ([`batch`]), to an idle worker (one with a free engine
    /// first), skipping jobs whose client left or whose deadline passed.
    fn dispatch(&mut self, myself: &ActorRef<QueueMsg>) {
        while let Some(idle) = self.pool.take() {
            let (worker, stage) = (idle.proxy.clone(), idle.stage);
            self.clean_front();
            if self.jobs.is_empty() || self.hold_for_batch(myself, stage) {
                self.pool.put_back(idle);
                break;
            }
            self.forming_since = None;
            let Some(head) = self.take_front() else {
                self.pool.put_back(idle);
                break;
            };
            let now = Instant::now();
            let room = self.limits.max_batch.saturating_sub(1);
            let (members, dropped) = batch::take_members(&mut self.jobs, &head, room, now);
            for (job, why) in dropped {
                self.forget_audio(&job);
                self.drop_stale(job, why, now);
            }
            for job in &members {
                self.forget_audio(job);
            }
            let mut jobs = Vec::with_capacity(1 + members.len());
            jobs.push(head);
            jobs.extend(members);
            // A staged job still waits: the proxy ends its queue wait when the
            // engine starts it.
            if !stage {
                for job in &mut jobs {
                    job.end_queue_wait("dispatched");
                }
            }
            if jobs.len() > 1 {
                let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
                tracing::debug!(?ids, stage, "batch formed");
            }
            let staged = (jobs.len(), jobs.iter().map(|j| j.audio_secs).sum::<f64>());
            match worker.cast(WorkerProxyMsg::Run(jobs)) {
                Ok(()) => {
                    if stage {
                        self.pool.staged(idle.worker_id, staged.0, staged.1);
                    }
                }
                Err(MessagingErr::SendErr(WorkerProxyMsg::Run(jobs))) => {
                    // The proxy stopped between reporting idle and now: keep
                    // the jobs first in line for the next worker.
                    tracing::warn!(jobs = jobs.len(), "worker gone at dispatch, requeueing");
                    for job in jobs.into_iter().rev() {
                        self.queued_audio_secs += job.audio_secs;
                        self.jobs.push_front(job);
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "unexpected dispatch failure");
                }
            }
        }
        self.publish();
    }

    /// Drops waiting jobs whose client has gone (reply port closed), so they
    /// neither hold queue slots nor reach the worker.
    fn sweep_gone(&mut self) {
        let before = self.jobs.len();
        let now = Instant::now();
        for job in std::mem::take(&mut self.jobs) {
            if job.reply.is_closed() {
                self.forget_audio(&job);
                self.drop_stale(job, batch::Dropped::ClientGone, now);
            } else {
                self.jobs.push_back(job);
            }
        }
        if self.jobs.len() != before {
            self.publish();
        }
    }

    fn expire(&mut self, id: u64, attempt: u32) {
        self.sweep_gone();
        if let Some(pos) = self
            .jobs
            .iter()
            .position(|j| j.id == id && j.attempts == attempt)
        {
            if let Some(job) = self.jobs.remove(pos) {
                self.forget_audio(&job);
                self.drop_stale(job, batch::Dropped::Expired, Instant::now());
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
        // The node only admits work after its workers loaded: all up.
        let pool = Pool::new(args.shared.pool_size());
        Ok(QueueState {
            pool,
            max_wait: args.limits.max_wait,
            limits: args.limits,
            shared: args.shared,
            jobs: VecDeque::new(),
            queued_audio_secs: 0.0,
            forming_since: None,
            rtf: 0.2,
            quarantine: VecDeque::new(),
            draining: false,
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
            QueueMsg::WorkerIdle {
                worker,
                worker_id,
                rtf,
                stage,
            } => {
                state.rtf = update_rtf(state.rtf, rtf);
                state.pool.idle(worker_id, worker, stage);
                state.dispatch(&myself);
            }
            QueueMsg::WorkerGone { worker } => {
                state.pool.gone(&worker);
                if state.pool.idle_count() == 0 {
                    state.forming_since = None;
                }
                state.publish();
            }
            QueueMsg::BatchDue => state.dispatch(&myself),
            QueueMsg::WorkerDown {
                worker,
                retry_after,
            } => {
                state.pool.down(worker, Instant::now() + retry_after);
                if state.pool.idle_count() == 0 {
                    state.forming_since = None;
                }
                state.publish();
            }
            QueueMsg::Expire(id, attempt) => state.expire(id, attempt),
            QueueMsg::Retry(job) => state.retry(&myself, job, state.max_wait, true),
            QueueMsg::Requeue(job) => state.retry(&myself, job, state.max_wait, false),
            QueueMsg::Quarantine(fp) => {
                if !state.quarantine.contains(&fp) {
                    if state.quarantine.len() >= QUARANTINE_CAPACITY {
                        state.quarantine.pop_front();
                    }
                    state.quarantine.push_back(fp);
                }
            }
            QueueMsg::Drain => state.drain(),
        }
        Ok(())
    }
}

pub mod pool;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pool;
