//! `WorkerProxyActor`: owns one `worker-proc` child process, worker
//! `plan.id` of the pool (one proxy per worker; see [`crate::workers`]).
//!
//! # Protocol
//! - On start it spawns the child and its four I/O tasks (see
//!   [`super::child`] and [`super::child::io`]): a writer that sends jobs to
//!   the child's stdin through the `asr_ipc` codec, a reader that turns
//!   stdout frames into [`WorkerProxyMsg::Frame`], a stderr forwarder, and
//!   an exit watcher that sends [`WorkerProxyMsg::Exited`] the moment the
//!   child dies (no polling, seed lesson 3).
//! - When the child's `Hello` arrives it tells the supervisor
//!   ([`SupervisorMsg::WorkerLoaded`]) and the queue ([`QueueMsg::WorkerIdle`]).
//! - It holds one job in flight and, with `stage_next_job` (the default),
//!   one more *staged*: sent to the child while the first decodes, so the
//!   child has the next job's audio in memory when the engine finishes and
//!   the engine does not wait for the hand-over (one decode at a time all
//!   the same: the child runs jobs strictly in order). It asks the queue
//!   for a job ([`QueueMsg::WorkerIdle`]) whenever a slot is free; an answer
//!   goes straight to the job's reply port and the staged job becomes the
//!   one in flight.
//! - A staged job is still waiting: every [`TICK`] the proxy checks it
//!   like the queue would, and cancels it in the child
//!   ([`asr_ipc::ToWorker::Cancel`]) if its client has gone (no answer),
//!   its queue deadline passed ([`AsrError::QueueTimeout`]) or the node is
//!   shutting down ([`AsrError::ShuttingDown`]). A job in flight whose
//!   client has gone (a closed connection, a cancelled async job) is
//!   cancelled in the child too, which stops it before its next 30 s window.
//! - Each job has a decode deadline from its audio length, counted from the
//!   moment it is in flight; past it the child's process group is killed and
//!   the job answered [`AsrError::DecodeTimeout`].
//!
//! # Batches
//! The queue hands the proxy a *batch* ([`WorkerProxyMsg::Run`]): one job,
//! or several that the worker decodes together (dynamic batching, see
//! [`super::queue`]). Everything above holds per batch: one batch in
//! flight and one staged; a lone job is a batch of one and is sent exactly
//! as before. Within a batch every job is its own: its answers pair with it
//! by id, its client leaving cancels only it (in flight or staged), its
//! `Done` or `Failed` answers it alone; the batch is over (the staged batch
//! promoted, the queue asked for more) when its last job is answered, and
//! its real-time factor (decode wall time over the audio of its jobs
//! answered `Done`) is what the queue learns. A batch's decode deadline is
//! the node's floor plus its factor times the batch's *total* audio (as
//! for one job of the summed length, which a sequential decode of the batch
//! meets too), counted from its start. When the worker dies or is killed
//! (crash, decode deadline, silence) with a batch of more than one job in
//! flight, nothing tells which job is to blame: each job of the batch goes
//! back to the queue ([`QueueMsg::Retry`]) with its crash count unchanged,
//! to be decoded *alone* (`QueuedJob::solo`) from then on, where the
//! rules of *Failure* find a poisoned input.
//!
//! # Sending a job
//! A job's header ([`asr_ipc::JobHeader`]) is encoded in the actor before
//! anything else happens to it: if that fails (a job the protocol cannot
//! carry), the job is answered [`AsrError::Unsendable`] at once and the
//! proxy is left exactly as if it had never seen it (nothing sent, nothing
//! in flight or staged; the free slot is offered to the queue again). The
//! writer task ([`super::child::io`]) then sends the header and the audio
//! as 16-bit PCM chunks
//! (`asr_ipc` *Audio*), encoding one chunk (1 MiB) at a time, so sending
//! hours of audio costs neither a second copy of it nor a giant frame.
//!
//! # Pairing answers with jobs
//! An answer ([`FromWorker::Progress`], [`FromWorker::Done`],
//! [`FromWorker::Failed`]) is delivered only to the job whose id it carries,
//! and that must be a job of the batch in flight (the child decodes in the
//! order batches were sent); answers for staged jobs cancelled earlier are dropped. Any
//! other id (the staged job's, answered out of turn, or an unknown one)
//! means the child and the proxy disagree about what is running, so
//! nothing it says can be paired any more: every job the proxy holds (in
//! flight and staged) is answered [`AsrError::WorkerProtocol`], the node is
//! not ready from that instant, and the child is killed and restarted. No
//! client can ever receive a transcript of another client's audio. Once a
//! child is being killed, nothing it still sends is delivered.
//!
//! # Liveness
//! From its `Hello` on, the child sends [`FromWorker::Heartbeat`] every
//! `worker_heartbeat_interval_secs` (1 s) from a thread of its own that the
//! engine cannot block; any frame counts as a sign of life. Every [`TICK`]
//! the proxy checks the silence: past `heartbeat_late` (three intervals)
//! the worker is published [`crate::api::WorkerState::Unresponsive`] and the
//! node is not ready (it is ready again if the heartbeat comes back); past
//! `worker_heartbeat_timeout_secs` (10 s) it is taken for hung (stopped,
//! starved, swapped out): as for a decode deadline, its process group is
//! killed, the job in flight is answered [`AsrError::WorkerUnresponsive`]
//! (504) at once, the staged job goes back to the queue, and the
//! supervisor restarts the worker. A frozen worker is thus found within
//! the heartbeat timeout instead of the job's length-based deadline.
//!
//! # Failure
//! When the child exits, a staged batch goes back to the front of the queue
//! ([`QueueMsg::Requeue`]: it never reached the engine), and the in-flight
//! job (if not answered yet) goes back too as [`QueueMsg::Retry`], ahead of
//! it, to be decoded alone, while it has crash retries left
//! (`max_crash_retries`, default 1); past that its input is quarantined and it
//! is answered [`AsrError::Quarantined`] (with retries set to 0 it is answered
//! [`AsrError::WorkerCrashed`], and so is every job of a batch). The jobs
//! of a batch of more than one are retried alone (see *Batches*). The
//! supervisor gets
//! [`SupervisorMsg::WorkerExited`], and this actor stops; the supervisor
//! decides about the restart. The child is killed by
//! [`super::child::ChildGuard`]'s `Drop` however this actor ends, panics
//! included.
//!
//! Why it ended is typed ([`exit::ExitCause`]): an exit code, a signal
//! nobody here sent (a native crash), or a kill by this proxy with its
//! [`exit::KillReason`] (decode deadline, unresponsive, unpaired answer,
//! protocol error, wrong protocol version, load deadline). The supervisor
//! gets it in an [`exit::WorkerExit`], with whether the model had loaded
//! and what the child reported if it could not load it; `/health`'s
//! `last_worker_exit` is its text (`killed by SIGKILL (9); killed after
//! the decode deadline of 5s`).
//!
//! # Layout
//! - this file: the messages and the actor (start, stop, dispatch);
//! - [`slots`]: the I/O-free slot state machine (lifecycle, batch in
//!   flight, staged batch, skipped, pairing, heartbeat), tested on its own;
//! - `state`: what the actor does with each event, on top of the slots;
//! - `crash`: the batch in flight when the child dies or is killed;
//! - [`exit`]: the typed exit causes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use asr_ipc::FromWorker;
use ractor::{Actor, ActorProcessingErr, ActorRef};

use super::child::io::ChildEvent;
use super::child::{spawn_worker, ProcessExit};
use super::queue::{QueueMsg, QueuedJob};
use super::shared::WorkerShared;
use super::supervisor::SupervisorMsg;
use crate::api::AsrError;
use crate::config::NodeConfig;

mod crash;
pub mod exit;
pub mod slots;
mod state;

use exit::KillReason;
use slots::Slots;
pub use state::WorkerProxyState;

/// Messages of the [`WorkerProxyActor`].
#[derive(Debug)]
pub enum WorkerProxyMsg {
    /// Decode these jobs as one batch (one job or more; sent by the queue
    /// only when this proxy said idle).
    Run(Vec<QueuedJob>),
    /// A frame from the child.
    Frame(FromWorker),
    /// The child's stdout carried something that is not a valid frame.
    ProtocolError(String),
    /// The child process ended (it has been reaped).
    Exited(ProcessExit),
    /// A batch's decode deadline passed (the id of its first job).
    DecodeDeadline(u64),
    /// The model-load deadline passed.
    LoadDeadline,
    /// Periodic check of the staged and in-flight jobs' clients and
    /// deadlines, and of the heartbeat (every [`TICK`]).
    Tick,
    /// Stop now (sent to itself after the child exited, behind any job the
    /// queue had already dispatched, so that job is requeued, not lost).
    Stop(String),
}

impl From<ChildEvent> for WorkerProxyMsg {
    fn from(e: ChildEvent) -> Self {
        match e {
            ChildEvent::Frame(f) => WorkerProxyMsg::Frame(f),
            ChildEvent::ProtocolError(e) => WorkerProxyMsg::ProtocolError(e),
            ChildEvent::Exited(x) => WorkerProxyMsg::Exited(x),
        }
    }
}

/// How often staged and in-flight jobs are checked for a vanished client, a
/// passed queue deadline or a shutdown (the HTTP layer notices a closed
/// connection within 50 ms too).
pub const TICK: Duration = Duration::from_millis(50);

/// Arguments of the [`WorkerProxyActor`].
pub struct WorkerProxyArgs {
    /// Node configuration.
    pub config: Arc<NodeConfig>,
    /// Which worker of the pool this is (id, device, threads).
    pub plan: crate::workers::WorkerPlan,
    /// 0 for the worker's first process, +1 per restart.
    pub generation: u64,
    /// Where to report idleness.
    pub queue: ActorRef<QueueMsg>,
    /// Where to report load and exit.
    pub supervisor: ActorRef<SupervisorMsg>,
    /// Published state: this worker's part of it.
    pub shared: WorkerShared,
}

/// The actor owning the child process.
pub struct WorkerProxyActor;

impl Actor for WorkerProxyActor {
    type Msg = WorkerProxyMsg;
    type State = WorkerProxyState;
    type Arguments = WorkerProxyArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: WorkerProxyArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let generation = args.generation;
        let (child, guard) = spawn_worker(&args.config, &args.plan).await.map_err(|e| {
            format!(
                "could not start {}: {e}",
                args.config.resolve_worker_path().display()
            )
        })?;
        let pid = guard.pid();
        args.shared.worker_spawned(pid, generation);
        tracing::info!(
            pid,
            generation,
            worker_id = args.plan.id,
            device = %args.plan.device_label(),
            threads = args.plan.threads,
            "worker spawned, loading model"
        );

        let me = myself.clone();
        let io = super::child::io::start(child, guard.reaped_flag(), generation, pid, move |e| {
            me.cast(WorkerProxyMsg::from(e)).is_ok()
        })?;

        myself.send_after(
            Duration::from_secs_f64(args.config.load_timeout_secs),
            || WorkerProxyMsg::LoadDeadline,
        );

        Ok(WorkerProxyState {
            slots: Slots::new(args.config.stage_next_job, Instant::now()),
            args,
            guard,
            to_child: Some(io.input),
            hello: None,
            load_failure: None,
            tasks: io.tasks,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for h in state
            .slots
            .take_in_flight()
            .map(|f| f.jobs)
            .unwrap_or_default()
        {
            crate::telemetry::decode_failed(
                &h.span,
                "shutting_down",
                &"the node stopped before the answer",
            );
            let _ = h.job.reply.send(Err(AsrError::ShuttingDown));
        }
        // As in `tick` during a drain; the cancel (sent before stdin closes)
        // also spares the child decoding them before it exits.
        for job in state.unstage_all("shutting_down") {
            let _ = job.reply.send(Err(AsrError::ShuttingDown));
        }
        if *state.slots.lifecycle() != slots::Lifecycle::Exited {
            // Closing stdin asks the worker to exit; give it a moment, then
            // the guard's SIGKILL (on drop) makes sure.
            state.to_child = None;
            let reaped = state.guard.reaped_flag();
            let deadline = Instant::now() + Duration::from_secs(2);
            while !reaped.load(Ordering::Acquire) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let generation = state.generation();
        if matches!(msg, WorkerProxyMsg::Frame(_)) {
            state.heard();
        }
        match msg {
            WorkerProxyMsg::Frame(FromWorker::Heartbeat { running }) => {
                tracing::trace!(generation, ?running, "worker heartbeat");
            }
            WorkerProxyMsg::Frame(FromWorker::Hello(hello)) => state.on_hello(&myself, hello),
            WorkerProxyMsg::Frame(FromWorker::LoadFailed(f)) => {
                tracing::error!(generation, model_path = %f.model_path, cause = %f.cause, "worker could not load the model");
                state.load_failure = Some(f);
            }
            WorkerProxyMsg::Frame(FromWorker::Progress {
                job_id,
                decoded_secs,
                total_secs,
                segments,
            }) => {
                tracing::debug!(
                    job_id,
                    decoded_secs,
                    total_secs,
                    segments = segments.len(),
                    "decode progress"
                );
                if !state.deliverable(job_id, false) {
                    return Ok(());
                }
                if let Some(job) = state.slots.in_flight_job(job_id).map(|h| &h.job) {
                    if let Some(sink) = &job.progress {
                        let _ = sink.send(crate::api::Progress {
                            decoded_secs,
                            total_secs,
                        });
                    }
                    if let (Some(sink), false) = (&job.segments, segments.is_empty()) {
                        let _ = sink.send(segments);
                    }
                }
            }
            WorkerProxyMsg::Frame(FromWorker::Done(result)) => state.on_done(&myself, result),
            WorkerProxyMsg::Frame(FromWorker::Failed { job_id, error }) => {
                state.on_failed(&myself, job_id, error)
            }
            WorkerProxyMsg::Run(job) => state.on_run(&myself, job),
            WorkerProxyMsg::Tick => state.tick(&myself),
            WorkerProxyMsg::DecodeDeadline(id) => {
                if let Some(limit) = state.slots.decode_deadline_passed(id) {
                    tracing::error!(
                        batch = id,
                        generation,
                        ?limit,
                        "decode deadline passed, killing the worker"
                    );
                    state.kill_loaded(KillReason::DecodeDeadline { limit });
                    state.fail_in_flight(AsrError::DecodeTimeout { limit });
                }
            }
            WorkerProxyMsg::LoadDeadline => {
                if *state.slots.lifecycle() == slots::Lifecycle::Loading {
                    let reason = KillReason::LoadDeadline {
                        secs: state.args.config.load_timeout_secs,
                    };
                    tracing::error!(generation, "{reason}");
                    state.kill(reason);
                }
            }
            WorkerProxyMsg::ProtocolError(e) => {
                tracing::error!(generation, error = %e, "worker broke the protocol, killing it");
                state.kill(KillReason::BrokeProtocol { error: e });
            }
            WorkerProxyMsg::Exited(status) => state.on_exited(&myself, status),
            WorkerProxyMsg::Stop(desc) => {
                myself.stop(Some(desc));
            }
        }
        Ok(())
    }
}
