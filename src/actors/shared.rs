//! State the actors publish for readers that must never wait on a mailbox:
//! `/health`, `/ready`, embedding hosts. Actors write it; anyone reads a
//! consistent [`NodeStatus`] snapshot under a short lock. Every change is
//! also published as Prometheus gauges ([`crate::metrics::node_gauges`],
//! [`crate::metrics::worker_gauges`]).
//!
//! Each worker of the pool has its own entry, written through its
//! [`WorkerShared`] view (what its proxy holds); the node is ready while
//! any worker accepts work (see [`NodeStatus`] for how the pool sums up).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::api::{NodeStatus, WorkerState, WorkerStatus};
use crate::workers::WorkerPlan;

/// Published node state.
#[derive(Debug)]
pub struct Shared {
    started: Instant,
    queue_capacity: usize,
    inner: Mutex<Inner>,
    /// Ticks after every change, so a reader (the async job runner) can
    /// wait for the node to become idle instead of polling [`Self::status`].
    changed: tokio::sync::watch::Sender<()>,
}

#[derive(Debug, Clone)]
struct Inner {
    workers: Vec<WorkerStatus>,
    last_worker_exit: Option<String>,
    model: Option<String>,
    device: Option<String>,
    compute_type: Option<String>,
    engine: Option<asr_ipc::EngineInfo>,
    load_time: Option<Duration>,
    queue_depth: usize,
    /// While the queue is full: its Retry-After estimate.
    queue_full: Option<Duration>,
    shutting_down: bool,
    jobs: BTreeMap<&'static str, u64>,
}

/// Whether a worker in `state` takes work.
pub fn accepts(state: WorkerState) -> bool {
    matches!(state, WorkerState::Ready | WorkerState::Busy)
}

/// The pool's state as one: the most useful state of any worker.
fn pool_state(workers: &[WorkerStatus]) -> WorkerState {
    use WorkerState::*;
    [Ready, Busy, Unresponsive, Starting, Restarting]
        .into_iter()
        .find(|s| workers.iter().any(|w| w.state == *s))
        .unwrap_or(Stopped)
}

impl Inner {
    fn accepting(&self) -> usize {
        self.workers.iter().filter(|w| accepts(w.state)).count()
    }

    fn ready(&self) -> bool {
        self.accepting() > 0 && !self.shutting_down
    }

    fn worker(&mut self, id: usize) -> Option<&mut WorkerStatus> {
        self.workers.get_mut(id)
    }
}

impl Shared {
    /// Fresh state of a one-worker node: worker starting, queue empty.
    pub fn new(queue_capacity: usize) -> Self {
        Self::with_workers(
            queue_capacity,
            &[WorkerPlan {
                id: 0,
                device: "cpu".into(),
                cuda_index: None,
                threads: 0,
            }],
        )
    }

    /// Fresh state of a node with the pool `plans`: every worker starting,
    /// queue empty.
    pub fn with_workers(queue_capacity: usize, plans: &[WorkerPlan]) -> Self {
        let workers = plans
            .iter()
            .map(|p| WorkerStatus {
                id: p.id,
                device: p.device_label(),
                threads: p.threads,
                state: WorkerState::Starting,
                pid: None,
                generation: 0,
                restarts: 0,
                last_exit: None,
                in_flight: 0,
            })
            .collect();
        Self {
            started: Instant::now(),
            queue_capacity,
            inner: Mutex::new(Inner {
                workers,
                last_worker_exit: None,
                model: None,
                device: None,
                compute_type: None,
                engine: None,
                load_time: None,
                queue_depth: 0,
                queue_full: None,
                shutting_down: false,
                jobs: BTreeMap::new(),
            }),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    /// Workers in the pool.
    pub fn pool_size(&self) -> usize {
        self.with(|g| g.workers.len())
    }

    /// The view worker `id`'s proxy writes its state through.
    pub fn worker(self: &Arc<Self>, id: usize) -> WorkerShared {
        WorkerShared {
            shared: self.clone(),
            id,
        }
    }

    /// A receiver that is marked changed after every change of the state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// A change: the node's gauges are published and readers waiting in
    /// [`Self::subscribe`] are woken.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.publish_after(false, f)
    }

    /// A change of workers' state: [`Self::update`], and the workers'
    /// gauges too.
    fn update_workers<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        self.publish_after(true, f)
    }

    fn publish_after<R>(&self, workers: bool, f: impl FnOnce(&mut Inner) -> R) -> R {
        let r = self.with(|g| {
            let r = f(g);
            Self::publish(g, self.queue_capacity, workers);
            r
        });
        self.changed.send_replace(());
        r
    }

    /// Publishes the gauges of `g` (the workers' with `workers`).
    fn publish(g: &Inner, queue_capacity: usize, workers: bool) {
        crate::metrics::node_gauges(crate::metrics::NodeGauges {
            worker_state: pool_state(&g.workers),
            worker_generation: g.workers.first().map_or(0, |w| w.generation),
            in_flight: g.workers.iter().map(|w| w.in_flight).sum(),
            queue_depth: g.queue_depth,
            queue_capacity,
            ready: g.ready(),
            workers_accepting: g.accepting(),
        });
        if workers {
            for w in &g.workers {
                crate::metrics::worker_gauges(w.id, w.state, w.generation);
            }
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means a writer panicked mid-update of plain
        // data; the data is still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    /// A change of worker `id` (ignored for an id outside the pool).
    fn update_worker(&self, id: usize, f: impl FnOnce(&mut WorkerStatus)) {
        self.update_workers(|s| {
            if let Some(w) = s.worker(id) {
                f(w);
            }
        });
    }

    /// Worker `id` was restarted (its restart counted).
    pub fn worker_restarted(&self, id: usize) {
        self.update_worker(id, |w| w.restarts += 1);
        crate::metrics::worker_restarted(id);
    }

    /// Worker `id` exited (or its proxy failed); a restart is pending.
    pub fn worker_exited(&self, id: usize, cause: String) {
        self.update_workers(|s| {
            if let Some(w) = s.worker(id) {
                w.state = WorkerState::Restarting;
                w.pid = None;
                w.in_flight = 0;
                w.last_exit = Some(cause.clone());
            }
            s.last_worker_exit = Some(cause);
        });
    }

    /// A job was answered (`outcome` from [`crate::metrics::outcome`]).
    pub fn job_finished(&self, outcome: &'static str) {
        self.update(|s| *s.jobs.entry(outcome).or_default() += 1);
        crate::metrics::job_finished(outcome);
    }

    /// Every worker is stopped for good (load failure or shutdown).
    pub fn worker_stopped(&self) {
        self.update_workers(|s| {
            for w in &mut s.workers {
                w.state = WorkerState::Stopped;
                w.pid = None;
                w.in_flight = 0;
            }
        });
    }

    /// Jobs waiting now, and (when the queue is full) the Retry-After a
    /// refused job would get.
    pub fn set_queue_depth(&self, depth: usize, full: Option<Duration>) {
        self.update(|s| {
            s.queue_depth = depth;
            s.queue_full = full;
        });
    }

    /// The answer a new job would get right now without reaching the
    /// queue, if it is certain: the node is shutting down, or the queue is
    /// full (its Retry-After). A read only, like [`Self::is_shutting_down`].
    pub fn early_refusal(&self) -> Option<crate::api::AsrError> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.shutting_down {
            return Some(crate::api::AsrError::ShuttingDown);
        }
        g.queue_full.map(|retry_after| crate::api::AsrError::Busy {
            retry_after,
            queued: g.queue_depth,
        })
    }

    /// The node stopped admitting work.
    pub fn set_shutting_down(&self) {
        self.update(|s| s.shutting_down = true);
    }

    /// Whether the node stopped admitting work.
    pub fn is_shutting_down(&self) -> bool {
        // A read only: no gauges to publish.
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.shutting_down
    }

    /// The last model load time, if any worker loaded.
    pub fn load_time(&self) -> Option<Duration> {
        self.with(|s| s.load_time)
    }

    /// A consistent snapshot.
    pub fn status(&self) -> NodeStatus {
        let s = self.with(|s| s.clone());
        let first = s.workers.first();
        NodeStatus {
            ready: s.ready(),
            worker_state: pool_state(&s.workers),
            worker_pid: first.and_then(|w| w.pid),
            worker_generation: first.map_or(0, |w| w.generation),
            worker_restarts: s.workers.iter().map(|w| w.restarts).sum(),
            last_worker_exit: s.last_worker_exit.clone(),
            workers_accepting: s.accepting(),
            in_flight: s.workers.iter().map(|w| w.in_flight).sum(),
            workers: s.workers,
            model: s.model,
            device: s.device,
            compute_type: s.compute_type,
            engine: s.engine,
            queue_depth: s.queue_depth,
            queue_capacity: self.queue_capacity,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            shutting_down: s.shutting_down,
            jobs: s.jobs,
        }
    }
}

/// One worker's part of [`Shared`]: what its proxy writes (the same calls
/// as a one-worker node, the worker's id implied).
#[derive(Debug, Clone)]
pub struct WorkerShared {
    shared: Arc<Shared>,
    id: usize,
}

impl WorkerShared {
    /// The worker's id.
    pub fn id(&self) -> usize {
        self.id
    }

    /// The whole node's state.
    pub fn node(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A worker process was spawned.
    pub fn worker_spawned(&self, pid: u32, generation: u64) {
        self.shared.update_worker(self.id, |w| {
            w.state = WorkerState::Starting;
            w.pid = Some(pid);
            w.generation = generation;
        });
    }

    /// The worker loaded its model.
    pub fn worker_loaded(&self, hello: &asr_ipc::Hello) {
        self.shared.update_workers(|s| {
            if let Some(w) = s.worker(self.id) {
                w.state = WorkerState::Ready;
            }
            s.model = Some(hello.model.clone());
            s.device = Some(hello.device.clone());
            s.compute_type = Some(hello.compute_type.clone());
            s.engine = Some(hello.engine.clone());
            s.load_time = Some(Duration::from_millis(hello.load_ms));
        });
    }

    /// The worker started decoding a batch of `jobs` jobs (1 alone), or
    /// finished one (0).
    pub fn worker_in_flight(&self, jobs: usize) {
        self.shared.update_worker(self.id, |w| {
            if accepts(w.state) {
                w.state = if jobs > 0 {
                    WorkerState::Busy
                } else {
                    WorkerState::Ready
                };
            }
            w.in_flight = jobs;
        });
    }

    /// The loaded worker's heartbeat is late (`true`: not accepting) or
    /// came back (`false`: ready or busy again, per the jobs in flight).
    pub fn worker_heartbeat_late(&self, late: bool) {
        self.shared
            .update_worker(self.id, |w| match (late, w.state) {
                (true, WorkerState::Ready | WorkerState::Busy) => {
                    w.state = WorkerState::Unresponsive;
                }
                (false, WorkerState::Unresponsive) => {
                    w.state = if w.in_flight > 0 {
                        WorkerState::Busy
                    } else {
                        WorkerState::Ready
                    };
                }
                _ => {}
            });
    }

    /// The worker exited; a restart is pending.
    pub fn worker_exited(&self, cause: String) {
        self.shared.worker_exited(self.id, cause);
    }

    /// Whether the node stopped admitting work.
    pub fn is_shutting_down(&self) -> bool {
        self.shared.is_shutting_down()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_tick_subscribers_and_reads_do_not() {
        // The async job runner waits on this channel and reads the status
        // when woken: a read that ticked would make it spin.
        let s = Arc::new(Shared::new(3));
        let w = s.worker(0);
        let mut rx = s.subscribe();
        let _ = s.status();
        let _ = s.load_time();
        assert!(!rx.has_changed().unwrap(), "a read ticked the channel");
        s.set_queue_depth(1, None);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        w.worker_in_flight(0);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn readiness_follows_the_worker_lifecycle() {
        let s = Arc::new(Shared::new(3));
        let w = s.worker(0);
        assert!(!s.status().ready, "not ready while the model loads");
        w.worker_spawned(42, 0);
        assert_eq!(s.status().worker_pid, Some(42));
        w.worker_loaded(&asr_ipc::Hello {
            engine: asr_ipc::EngineInfo {
                version: "4.8.4".into(),
                ..Default::default()
            },
            ..hello(42)
        });
        assert_eq!(
            s.status().engine.map(|e| e.version).as_deref(),
            Some("4.8.4")
        );
        assert!(s.status().ready);
        w.worker_in_flight(1);
        assert!(s.status().ready, "busy is still ready: work queues");
        assert_eq!(s.status().in_flight, 1);
        w.worker_in_flight(3);
        assert_eq!(s.status().in_flight, 3, "every job of a batch counts");
        assert_eq!(s.status().workers[0].in_flight, 3);
        w.worker_exited("killed by SIGKILL (9)".into());
        let st = s.status();
        assert!(!st.ready);
        assert_eq!(st.worker_state, WorkerState::Restarting);
        assert_eq!(st.in_flight, 0);
        w.worker_spawned(43, 1);
        w.worker_loaded(&hello(43));
        s.set_shutting_down();
        assert!(!s.status().ready, "draining is not ready");
    }

    #[test]
    fn a_late_heartbeat_makes_the_node_not_ready_until_it_comes_back() {
        let s = Arc::new(Shared::new(3));
        let w = s.worker(0);
        w.worker_heartbeat_late(true);
        assert_eq!(
            s.status().worker_state,
            WorkerState::Starting,
            "only a loaded worker can be late"
        );
        w.worker_loaded(&hello(42));
        w.worker_in_flight(1);
        w.worker_heartbeat_late(true);
        let st = s.status();
        assert_eq!(st.worker_state, WorkerState::Unresponsive);
        assert!(!st.ready);
        // The job ends meanwhile: still unresponsive, nothing in flight.
        w.worker_in_flight(0);
        assert_eq!(s.status().worker_state, WorkerState::Unresponsive);
        w.worker_heartbeat_late(false);
        let st = s.status();
        assert_eq!(st.worker_state, WorkerState::Ready);
        assert!(st.ready);
        w.worker_in_flight(1);
        w.worker_heartbeat_late(true);
        w.worker_heartbeat_late(false);
        assert_eq!(s.status().worker_state, WorkerState::Busy);
        // Killed for its silence: restarting, not "unresponsive".
        w.worker_heartbeat_late(true);
        w.worker_exited("no heartbeat".into());
        w.worker_heartbeat_late(false);
        assert_eq!(s.status().worker_state, WorkerState::Restarting);
    }

    #[test]
    fn early_refusal_only_when_the_answer_is_certain() {
        use crate::api::AsrError;
        let s = Shared::new(3);
        assert!(s.early_refusal().is_none());
        s.set_queue_depth(2, None);
        assert!(s.early_refusal().is_none(), "room left: the queue decides");
        s.set_queue_depth(3, Some(Duration::from_secs(4)));
        match s.early_refusal() {
            Some(AsrError::Busy {
                retry_after,
                queued,
            }) => assert_eq!((retry_after, queued), (Duration::from_secs(4), 3)),
            other => panic!("expected Busy, got {other:?}"),
        }
        assert_eq!(s.status().queue_depth, 3);
        s.set_queue_depth(2, None);
        assert!(s.early_refusal().is_none());
        s.set_shutting_down();
        assert!(matches!(s.early_refusal(), Some(AsrError::ShuttingDown)));
    }

    fn hello(pid: u32) -> asr_ipc::Hello {
        asr_ipc::Hello {
            protocol_version: asr_ipc::PROTOCOL_VERSION,
            worker_version: "0".into(),
            model: "tiny.en".into(),
            multilingual: false,
            device: "cpu".into(),
            compute_type: "int8".into(),
            threads: 1,
            load_ms: 300,
            pid,
            engine: Default::default(),
        }
    }

    #[test]
    fn a_pool_is_ready_while_any_worker_accepts_and_counts_each_worker() {
        let plans = crate::workers::plan(&crate::NodeConfig {
            workers: Some(2),
            threads: 2,
            ..Default::default()
        })
        .unwrap();
        let s = Arc::new(Shared::with_workers(3, &plans));
        let (w0, w1) = (s.worker(0), s.worker(1));
        assert_eq!(s.status().workers.len(), 2);
        assert!(!s.status().ready);
        w0.worker_spawned(10, 0);
        w1.worker_spawned(11, 0);
        w1.worker_loaded(&hello(11));
        let st = s.status();
        assert!(st.ready, "one loaded worker is enough");
        assert_eq!(st.workers_accepting, 1);
        assert_eq!(st.worker_state, WorkerState::Ready);
        assert_eq!(st.workers[0].state, WorkerState::Starting);
        assert_eq!(st.worker_pid, Some(10), "the first worker's");
        w0.worker_loaded(&hello(10));
        w0.worker_in_flight(1);
        w1.worker_in_flight(1);
        let st = s.status();
        assert_eq!((st.in_flight, st.workers_accepting), (2, 2));
        assert_eq!(st.worker_state, WorkerState::Busy);
        // Worker 1 dies and restarts: the node stays ready on worker 0.
        w1.worker_exited("killed by SIGKILL (9)".into());
        s.worker_restarted(1);
        let st = s.status();
        assert!(st.ready);
        assert_eq!(st.workers_accepting, 1);
        assert_eq!(st.in_flight, 1);
        assert_eq!(st.workers[1].state, WorkerState::Restarting);
        assert_eq!(st.workers[1].restarts, 1);
        assert_eq!(st.workers[0].restarts, 0);
        assert_eq!(st.worker_restarts, 1);
        assert_eq!(
            st.workers[1].last_exit.as_deref(),
            Some("killed by SIGKILL (9)")
        );
        assert_eq!(st.workers[1].pid, None);
        // Worker 0 late too: nobody accepts.
        w0.worker_heartbeat_late(true);
        let st = s.status();
        assert!(!st.ready);
        assert_eq!(st.worker_state, WorkerState::Unresponsive);
        w1.worker_spawned(12, 1);
        w1.worker_loaded(&hello(12));
        let st = s.status();
        assert!(st.ready);
        assert_eq!((st.workers[1].generation, st.worker_generation), (1, 0));
        s.worker_stopped();
        assert!(s
            .status()
            .workers
            .iter()
            .all(|w| w.state == WorkerState::Stopped));
    }
}
