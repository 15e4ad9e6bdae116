//! `SupervisorActor`: the root of the tree and owner of the restart policy.
//!
//! # Protocol
//! - Spawns [`BoundedQueueActor`], [`IngressActor`] and one
//!   [`WorkerProxyActor`] per worker of the pool ([`crate::workers::plan`]:
//!   `--workers`, `--devices`), all linked to itself.
//! - In: [`SupervisorMsg::WorkerLoaded`] and [`SupervisorMsg::WorkerExited`]
//!   from the worker proxies (naming their worker and its generation),
//!   [`SupervisorMsg::RestartWorker`] from its own timer, and ractor's
//!   supervision events.
//!
//! # Restart strategy
//! Ractor restarts nothing by itself; this actor does, for each worker on
//! its own: a worker keeps its id, device and threads across restarts, and
//! has its own restart intensity and backoff. A dead worker is restarted at
//! once while it had at most `max_restarts` restarts in the last
//! `restart_window_secs`; beyond that each of its restarts waits an
//! exponential backoff (1 s, 2 s, 4 s, … capped at `max_backoff_secs`). The
//! queue is told ([`QueueMsg::WorkerDown`]) with the backoff plus the
//! measured model-load time; it refuses new jobs with 503 and that
//! `Retry-After` only while *every* worker is down, and serves on the
//! others meanwhile. Queued jobs stay queued; the jobs of a dead worker are
//! retried or requeued by its proxy.
//!
//! # Start-up
//! The node starts once *every* worker has loaded the model. If any worker
//! cannot load it (or cannot be spawned) before that, that is a start-up
//! error returned by [`crate::AsrNode::start`] (with the path, the worker
//! and its device, and the cause), not a restart loop: a wrong device in
//! `--devices` is found at deployment, not served at part capacity. A
//! worker that loaded and died during start-up is restarted like later.
//! The ingress and the queue are not expected to fail; if one does, the
//! node stops admitting work and reports not ready.

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
use crate::workers::WorkerPlan;

/// Messages of the [`SupervisorActor`].
#[derive(Debug)]
pub enum SupervisorMsg {
    /// A worker finished loading its model.
    WorkerLoaded {
        /// Its id in the pool.
        worker: usize,
        /// Its generation.
        generation: u64,
        /// Its handshake.
        hello: asr_ipc::Hello,
    },
    /// A worker process exited.
    WorkerExited {
        /// Its id in the pool.
        worker: usize,
        /// Its generation.
        generation: u64,
        /// How and why it ended (exit code, signal, or killed by its proxy
        /// for a reason), and whether it had loaded its model.
        exit: WorkerExit,
    },
    /// Time to start the next process of this worker.
    RestartWorker(usize),
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
    /// The pool: one worker per plan ([`crate::workers::plan`]).
    pub plans: Vec<WorkerPlan>,
    /// Answered once every worker loaded (or one failed to).
    pub startup: Startup,
}

/// One worker of the pool, as the supervisor keeps it.
struct WorkerSlot {
    plan: WorkerPlan,
    proxy: Option<ActorRef<WorkerProxyMsg>>,
    generation: u64,
    /// Whether any of its processes loaded the model.
    loaded: bool,
    recent_restarts: VecDeque<Instant>,
}

/// State of the [`SupervisorActor`].
pub struct SupervisorState {
    config: Arc<NodeConfig>,
    shared: Arc<Shared>,
    startup: Option<Startup>,
    ingress: ActorRef<IngressMsg>,
    queue: ActorRef<QueueMsg>,
    workers: Vec<WorkerSlot>,
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

/// Counts a restart at `now` in `recent` (the restarts of one worker inside
/// `window`) and returns how many there were, this one included.
pub fn count_restart(recent: &mut VecDeque<Instant>, now: Instant, window: Duration) -> usize {
    while recent
        .front()
        .is_some_and(|t| now.duration_since(*t) > window)
    {
        recent.pop_front();
    }
    recent.push_back(now);
    recent.len()
}

impl SupervisorState {
    async fn spawn_worker(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: usize,
    ) -> Result<(), String> {
        let slot = &self.workers[id];
        let args = WorkerProxyArgs {
            config: self.config.clone(),
            plan: slot.plan.clone(),
            generation: slot.generation,
            queue: self.queue.clone(),
            supervisor: myself.clone(),
            shared: self.shared.worker(id),
        };
        match Actor::spawn_linked(None, WorkerProxyActor, args, myself.get_cell()).await {
            Ok((worker, _)) => {
                self.workers[id].proxy = Some(worker);
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    fn schedule_restart(&mut self, myself: &ActorRef<SupervisorMsg>, id: usize, cause: &str) {
        let window = Duration::from_secs_f64(self.config.restart_window_secs);
        let slot = &mut self.workers[id];
        let in_window = count_restart(&mut slot.recent_restarts, Instant::now(), window);
        let delay = restart_delay(
            in_window,
            self.config.max_restarts,
            Duration::from_secs_f64(self.config.max_backoff_secs),
        );
        let load = self.shared.load_time().unwrap_or(Duration::from_secs(1));
        tracing::warn!(
            worker_id = id,
            generation = slot.generation,
            cause,
            restarts_in_window = in_window,
            delay_ms = delay.as_millis() as u64,
            "restarting worker"
        );
        let _ = self.queue.cast(QueueMsg::WorkerDown {
            worker: id,
            retry_after: delay + load,
        });
        myself.send_after(delay, move || SupervisorMsg::RestartWorker(id));
    }

    /// Which worker `cell` is the proxy of, if any.
    fn worker_of(&self, cell: &ractor::ActorCell) -> Option<usize> {
        self.workers.iter().position(|w| {
            w.proxy
                .as_ref()
                .is_some_and(|p| p.get_id() == cell.get_id())
        })
    }

    /// The start-up failed: answer it, stop everything.
    fn fail_startup(&mut self, myself: &ActorRef<SupervisorMsg>, err: StartError, why: &str) {
        if let Some(startup) = self.startup.take() {
            let _ = startup.send(Err(err));
        }
        self.shared.worker_stopped();
        myself.stop(Some(why.into()));
    }

    /// A worker loaded: once every one has, the node is up.
    fn loaded(&mut self, id: usize) {
        self.workers[id].loaded = true;
        if self.workers.iter().all(|w| w.loaded) {
            if let Some(startup) = self.startup.take() {
                let _ = startup.send(Ok(Handles {
                    ingress: self.ingress.clone(),
                    queue: self.queue.clone(),
                }));
            }
        }
    }

    /// What to say about worker `id` in an error: nothing for a lone worker.
    fn which(&self, id: usize) -> String {
        if self.workers.len() == 1 {
            return String::new();
        }
        format!("worker {id} ({}): ", self.workers[id].plan.device_label())
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
            workers: args
                .plans
                .into_iter()
                .map(|plan| WorkerSlot {
                    plan,
                    proxy: None,
                    generation: 0,
                    loaded: false,
                    recent_restarts: VecDeque::new(),
                })
                .collect(),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for id in 0..state.workers.len() {
            if let Err(cause) = state.spawn_worker(&myself, id).await {
                let path = state.config.resolve_worker_path().display().to_string();
                let cause = format!("{}{cause}", state.which(id));
                let err = StartError::WorkerSpawn { path, cause };
                state.fail_startup(&myself, err, "worker could not be spawned");
                break;
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Wait for the worker proxies to close their workers' stdin and see
        // them exit, so a shutdown leaves nothing behind.
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
            SupervisorMsg::WorkerLoaded {
                worker, generation, ..
            } => {
                if state
                    .workers
                    .get(worker)
                    .is_some_and(|w| w.generation == generation)
                {
                    state.loaded(worker);
                }
            }
            SupervisorMsg::WorkerExited {
                worker,
                generation,
                exit,
            } => {
                let Some(slot) = state.workers.get_mut(worker) else {
                    return Ok(());
                };
                if generation != slot.generation {
                    return Ok(());
                }
                slot.proxy = None;
                tracing::info!(
                    worker_id = worker,
                    generation,
                    kind = exit.cause.label(),
                    loaded = exit.loaded,
                    "worker ended"
                );
                if state.startup.is_some() && !slot.loaded {
                    // A worker never loaded during start-up: a start-up
                    // error, not a restart loop.
                    let cause = exit.load_failure().unwrap_or_else(|| exit.to_string());
                    let err = StartError::ModelLoad {
                        model_path: state.config.model_dir.display().to_string(),
                        cause: format!("{}{cause}", state.which(worker)),
                    };
                    state.fail_startup(&myself, err, "the model could not be loaded");
                    return Ok(());
                }
                let cause = match exit.load_failure() {
                    Some(f) => format!("{exit} (load failed: {f})"),
                    None => exit.to_string(),
                };
                state.schedule_restart(&myself, worker, &cause);
            }
            SupervisorMsg::RestartWorker(id) => {
                let Some(slot) = state.workers.get_mut(id) else {
                    return Ok(());
                };
                if slot.proxy.is_some() {
                    return Ok(());
                }
                slot.generation += 1;
                let generation = slot.generation;
                state.shared.worker_restarted(id);
                if let Err(cause) = state.spawn_worker(&myself, id).await {
                    tracing::error!(worker_id = id, generation, cause = %cause, "worker restart failed");
                    state.schedule_restart(&myself, id, &cause);
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
                if let Some(id) = state.worker_of(&cell) {
                    // The proxy panicked; its ChildGuard already killed the
                    // child. Treat it like a worker exit.
                    let cause = format!("worker proxy failed: {err}");
                    tracing::error!(
                        worker_id = id,
                        generation = state.workers[id].generation,
                        "{cause}"
                    );
                    state.workers[id].proxy = None;
                    state.shared.worker_exited(id, cause.clone());
                    let _ = state.queue.cast(QueueMsg::WorkerGone {
                        worker: ActorRef::from(cell),
                    });
                    state.schedule_restart(&myself, id, &cause);
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

    #[test]
    fn each_worker_counts_its_own_restarts_inside_the_window() {
        let window = Duration::from_secs(60);
        let cap = Duration::from_secs(30);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let (mut a, mut b) = (VecDeque::new(), VecDeque::new());
        for i in 1..=6 {
            assert_eq!(count_restart(&mut a, at(i), window), i as usize);
        }
        assert_eq!(
            restart_delay(a.len(), 5, cap),
            Duration::from_secs(1),
            "worker a backs off"
        );
        let n = count_restart(&mut b, at(7), window);
        assert_eq!(n, 1, "worker a's restarts are not worker b's");
        assert_eq!(
            restart_delay(n, 5, cap),
            Duration::ZERO,
            "b restarts at once"
        );
        // Restarts older than the window stop counting.
        assert_eq!(
            count_restart(&mut a, at(62), window),
            6,
            "the one at 1 s left"
        );
        assert_eq!(count_restart(&mut a, at(130), window), 1);
    }
}
