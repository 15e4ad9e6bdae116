//! `SupervisorActor`: the root of the tree and owner of the restart policy.
//!
//! # Protocol
//! - Spawns [`BoundedQueueActor`], [`IngressActor`] and the first
//!   [`WorkerProxyActor`], all linked to itself.
//! - In: [`SupervisorMsg::WorkerLoaded`] and [`SupervisorMsg::WorkerExited`]
//!   from the worker proxy, [`SupervisorMsg::RestartWorker`] from its own
//!   timer, and ractor's supervision events.
//!
//! # Restart strategy
//! Ractor restarts nothing by itself; this actor does. A dead worker is
//! restarted at once while there were at most `max_restarts` restarts in the
//! last `restart_window_secs`; beyond that each restart waits an exponential
//! backoff (1 s, 2 s, 4 s, … capped at `max_backoff_secs`). While the worker
//! is down the queue refuses new jobs with 503 and a `Retry-After` of the
//! backoff plus the measured model-load time; queued jobs stay queued.
//!
//! If the *first* worker cannot load the model, that is a start-up error
//! returned by [`crate::AsrNode::start`] (with the path and cause), not a
//! restart loop. The ingress and the queue are not expected to fail; if one
//! does, the node stops admitting work and reports not ready.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::oneshot;

use super::ingress::{IngressActor, IngressArgs, IngressMsg};
use super::queue::{BoundedQueueActor, QueueArgs, QueueLimits, QueueMsg};
use super::shared::Shared;
use super::worker_proxy::exit::WorkerExit;
use super::worker_proxy::{WorkerProxyActor, WorkerProxyArgs, WorkerProxyMsg};
use crate::api::StartError;
use crate::config::NodeConfig;

/// Messages of the [`SupervisorActor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// A worker finished loading its model.
    WorkerLoaded {
        /// Its generation.
        generation: u64,
        /// Its handshake.
        hello: asr_ipc::Hello,
    },
    /// A worker process exited.
    WorkerExited {
        /// Its generation.
        generation: u64,
        /// How and why it ended (exit code, signal, or killed by its proxy
        /// for a reason), and whether it had loaded its model.
        exit: WorkerExit,
    },
    /// Time to start the next worker.
    RestartWorker,
}

/// What [`crate::AsrNode::start`] waits for.
pub type Startup = oneshot::Sender<Result<Handles, StartError>>;

/// The refs a running node hands out.
#[derive(Debug, Clone)]
pub struct Handles {
    /// Where requests go.
    pub ingress: ActorRef<IngressMsg>,
    /// The queue.
    pub queue: ActorRef<QueueMsg>,
}

/// Arguments of the [`SupervisorActor`].
pub struct SupervisorArgs {
    /// Node configuration.
    pub config: Arc<NodeConfig>,
    /// Published state.
    pub shared: Arc<Shared>,
    /// Answered once the first worker loaded (or failed to).
    pub startup: Startup,
}

/// State of the [`SupervisorActor`].
pub struct SupervisorState {
    config: Arc<NodeConfig>,
    shared: Arc<Shared>,
    startup: Option<Startup>,
    ingress: ActorRef<IngressMsg>,
    queue: ActorRef<QueueMsg>,
    worker: Option<ActorRef<WorkerProxyMsg>>,
    generation: u64,
    recent_restarts: VecDeque<Instant>,
}

/// The root supervisor.
pub struct SupervisorActor;

/// Delay before the next restart, given how many restarts happened inside the
/// intensity window (this one included).
pub fn restart_delay(
    restarts_in_window: usize,
    max_restarts: u32,
    max_backoff: Duration,
) -> Duration {
    let max = max_restarts as usize;
    if restarts_in_window <= max {
        return Duration::ZERO;
    }
    let exp = (restarts_in_window - max - 1).min(16) as u32;
    Duration::from_secs(1u64 << exp).min(max_backoff)
}

impl SupervisorState {
    async fn spawn_worker(&mut self, myself: &ActorRef<SupervisorMsg>) -> Result<(), String> {
        let args = WorkerProxyArgs {
            config: self.config.clone(),
            generation: self.generation,
            queue: self.queue.clone(),
            supervisor: myself.clone(),
            shared: self.shared.clone(),
        };
        match Actor::spawn_linked(None, WorkerProxyActor, args, myself.get_cell()).await {
            Ok((worker, _)) => {
                self.worker = Some(worker);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn schedule_restart(&mut self, myself: &ActorRef<SupervisorMsg>, cause: &str) {
        let now = Instant::now();
        let window = Duration::from_secs_f64(self.config.restart_window_secs);
        while self
            .recent_restarts
            .front()
            .is_some_and(|t| now.duration_since(*t) > window)
        {
            self.recent_restarts.pop_front();
        }
        self.recent_restarts.push_back(now);
        let delay = restart_delay(
            self.recent_restarts.len(),
            self.config.max_restarts,
            Duration::from_secs_f64(self.config.max_backoff_secs),
        );
        let load = self.shared.load_time().unwrap_or(Duration::from_secs(1));
        tracing::warn!(
            generation = self.generation,
            cause,
            restarts_in_window = self.recent_restarts.len(),
            delay_ms = delay.as_millis() as u64,
            "restarting worker"
        );
        let _ = self.queue.cast(QueueMsg::WorkerDown {
            retry_after: delay + load,
        });
        myself.send_after(delay, || SupervisorMsg::RestartWorker);
    }
}

impl Actor for SupervisorActor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let limits = QueueLimits {
            capacity: args.config.effective_queue_capacity(),
            max_audio_secs: args.config.queue_max_audio_secs,
            max_wait: args.config.max_queue_wait(),
            max_batch: args.config.max_batch,
            batch_wait: args.config.batch_wait(),
        };
        let (queue, _) = Actor::spawn_linked(
            None,
            BoundedQueueActor,
            QueueArgs {
                limits,
                shared: args.shared.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        let (ingress, _) = Actor::spawn_linked(
            None,
            IngressActor,
            IngressArgs {
                config: args.config.clone(),
                queue: queue.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        Ok(SupervisorState {
            config: args.config,
            shared: args.shared,
            startup: Some(args.startup),
            ingress,
            queue,
            worker: None,
            generation: 0,
            recent_restarts: VecDeque::new(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Err(cause) = state.spawn_worker(&myself).await {
            let path = state.config.resolve_worker_path().display().to_string();
            if let Some(startup) = state.startup.take() {
                let _ = startup.send(Err(StartError::WorkerSpawn { path, cause }));
            }
            state.shared.worker_stopped();
            myself.stop(Some("worker could not be spawned".into()));
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Wait for the worker proxy to close the worker's stdin and see it
        // exit, so a shutdown leaves nothing behind.
        myself
            .stop_children_and_wait(
                Some("supervisor stopping".into()),
                Some(Duration::from_secs(5)),
            )
            .await;
        state.shared.worker_stopped();
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SupervisorMsg::WorkerLoaded { generation, .. } => {
                if generation == state.generation {
                    if let Some(startup) = state.startup.take() {
                        let _ = startup.send(Ok(Handles {
                            ingress: state.ingress.clone(),
                            queue: state.queue.clone(),
                        }));
                    }
                }
            }
            SupervisorMsg::WorkerExited { generation, exit } => {
                if generation != state.generation {
                    return Ok(());
                }
                state.worker = None;
                tracing::info!(
                    generation,
                    kind = exit.cause.label(),
                    loaded = exit.loaded,
                    "worker ended"
                );
                if let Some(startup) = state.startup.take() {
                    // The very first worker never loaded: a start-up error,
                    // not a restart loop.
                    let cause = exit.load_failure().unwrap_or_else(|| exit.to_string());
                    let _ = startup.send(Err(StartError::ModelLoad {
                        model_path: state.config.model_dir.display().to_string(),
                        cause,
                    }));
                    state.shared.worker_stopped();
                    myself.stop(Some("the model could not be loaded".into()));
                    return Ok(());
                }
                let cause = match exit.load_failure() {
                    Some(f) => format!("{exit} (load failed: {f})"),
                    None => exit.to_string(),
                };
                state.schedule_restart(&myself, &cause);
            }
            SupervisorMsg::RestartWorker => {
                if state.worker.is_some() {
                    return Ok(());
                }
                state.generation += 1;
                state.shared.worker_restarted();
                if let Err(cause) = state.spawn_worker(&myself).await {
                    tracing::error!(generation = state.generation, cause = %cause, "worker restart failed");
                    state.schedule_restart(&myself, &cause);
                }
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorFailed(cell, err) => {
                let is_worker = state
                    .worker
                    .as_ref()
                    .is_some_and(|w| w.get_id() == cell.get_id());
                if is_worker {
                    // The proxy panicked; its ChildGuard already killed the
                    // child. Treat it like a worker exit.
                    let cause = format!("worker proxy failed: {err}");
                    tracing::error!(generation = state.generation, "{cause}");
                    state.worker = None;
                    state.shared.worker_exited(cause.clone());
                    state.schedule_restart(&myself, &cause);
                } else if cell.get_id() == state.queue.get_id()
                    || cell.get_id() == state.ingress.get_id()
                {
                    tracing::error!(error = %err, "a core actor failed; the node stops");
                    state.shared.set_shutting_down();
                    myself.stop(Some("core actor failed".into()));
                }
            }
            // Worker proxies stop themselves after WorkerExited, which
            // carries the cause; only the core actors matter here.
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if cell.get_id() == state.queue.get_id()
                    || cell.get_id() == state.ingress.get_id() =>
            {
                tracing::warn!(?reason, "a core actor stopped; the node stops");
                state.shared.set_shutting_down();
                myself.stop(Some("core actor stopped".into()));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_immediate_within_the_intensity_limit_then_back_off() {
        let cap = Duration::from_secs(30);
        assert_eq!(restart_delay(1, 5, cap), Duration::ZERO);
        assert_eq!(restart_delay(5, 5, cap), Duration::ZERO);
        assert_eq!(restart_delay(6, 5, cap), Duration::from_secs(1));
        assert_eq!(restart_delay(7, 5, cap), Duration::from_secs(2));
        assert_eq!(restart_delay(9, 5, cap), Duration::from_secs(8));
        assert_eq!(restart_delay(40, 5, cap), cap, "capped");
    }
}
