//! State the actors publish for readers that must never wait on a mailbox:
//! `/health`, `/ready`, embedding hosts. Actors write it; anyone reads a
//! consistent [`NodeStatus`] snapshot under a short lock. Every change is
//! also published as Prometheus gauges ([`crate::metrics::node_gauges`]).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::api::{NodeStatus, WorkerState};

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
    worker_state: WorkerState,
    worker_pid: Option<u32>,
    worker_generation: u64,
    worker_restarts: u64,
    last_worker_exit: Option<String>,
    model: Option<String>,
    device: Option<String>,
    compute_type: Option<String>,
    engine: Option<asr_ipc::EngineInfo>,
    load_time: Option<Duration>,
    queue_depth: usize,
    /// While the queue is full: its Retry-After estimate.
    queue_full: Option<Duration>,
    in_flight: usize,
    shutting_down: bool,
    jobs: BTreeMap<&'static str, u64>,
}

impl Shared {
    /// Fresh state: worker starting, queue empty.
    pub fn new(queue_capacity: usize) -> Self {
        Self {
            started: Instant::now(),
            queue_capacity,
            inner: Mutex::new(Inner {
                worker_state: WorkerState::Starting,
                worker_pid: None,
                worker_generation: 0,
                worker_restarts: 0,
                last_worker_exit: None,
                model: None,
                device: None,
                compute_type: None,
                engine: None,
                load_time: None,
                queue_depth: 0,
                queue_full: None,
                in_flight: 0,
                shutting_down: false,
                jobs: BTreeMap::new(),
            }),
            changed: tokio::sync::watch::Sender::new(()),
        }
    }

    /// A receiver that is marked changed after every change of the state.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<()> {
        self.changed.subscribe()
    }

    /// [`Self::with`] for a change: readers waiting in [`Self::subscribe`]
    /// are woken.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let r = self.with(f);
        self.changed.send_replace(());
        r
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        // A poisoned lock only means a writer panicked mid-update of plain
        // data; the data is still usable.
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = f(&mut g);
        crate::metrics::node_gauges(crate::metrics::NodeGauges {
            worker_state: g.worker_state,
            worker_generation: g.worker_generation,
            in_flight: g.in_flight,
            queue_depth: g.queue_depth,
            queue_capacity: self.queue_capacity,
            ready: matches!(g.worker_state, WorkerState::Ready | WorkerState::Busy)
                && !g.shutting_down,
        });
        r
    }

    /// A worker process was spawned.
    pub fn worker_spawned(&self, pid: u32, generation: u64) {
        self.update(|s| {
            s.worker_state = WorkerState::Starting;
            s.worker_pid = Some(pid);
            s.worker_generation = generation;
        });
    }

    /// The worker loaded its model.
    pub fn worker_loaded(&self, hello: &asr_ipc::Hello) {
        self.update(|s| {
            s.worker_state = WorkerState::Ready;
            s.model = Some(hello.model.clone());
            s.device = Some(hello.device.clone());
            s.compute_type = Some(hello.compute_type.clone());
            s.engine = Some(hello.engine.clone());
            s.load_time = Some(Duration::from_millis(hello.load_ms));
        });
    }

    /// The worker started or finished a job.
    pub fn worker_busy(&self, busy: bool) {
        self.update(|s| {
            if matches!(s.worker_state, WorkerState::Ready | WorkerState::Busy) {
                s.worker_state = if busy {
                    WorkerState::Busy
                } else {
                    WorkerState::Ready
                };
            }
            s.in_flight = usize::from(busy);
        });
    }

    /// The loaded worker's heartbeat is late (`true`: not ready) or came
    /// back (`false`: ready or busy again, per the jobs in flight).
    pub fn worker_heartbeat_late(&self, late: bool) {
        self.update(|s| match (late, s.worker_state) {
            (true, WorkerState::Ready | WorkerState::Busy) => {
                s.worker_state = WorkerState::Unresponsive;
            }
            (false, WorkerState::Unresponsive) => {
                s.worker_state = if s.in_flight > 0 {
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
        self.update(|s| {
            s.worker_state = WorkerState::Restarting;
            s.worker_pid = None;
            s.in_flight = 0;
            s.last_worker_exit = Some(cause);
        });
    }

    /// A restart was counted.
    pub fn worker_restarted(&self) {
        self.update(|s| s.worker_restarts += 1);
        crate::metrics::worker_restarted();
    }

    /// A job was answered (`outcome` from [`crate::metrics::outcome`]).
    pub fn job_finished(&self, outcome: &'static str) {
        self.update(|s| *s.jobs.entry(outcome).or_default() += 1);
        crate::metrics::job_finished(outcome);
    }

    /// The worker is stopped for good (load failure or shutdown).
    pub fn worker_stopped(&self) {
        self.update(|s| {
            s.worker_state = WorkerState::Stopped;
            s.worker_pid = None;
            s.in_flight = 0;
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
        NodeStatus {
            ready: matches!(s.worker_state, WorkerState::Ready | WorkerState::Busy)
                && !s.shutting_down,
            worker_state: s.worker_state,
            worker_pid: s.worker_pid,
            worker_generation: s.worker_generation,
            worker_restarts: s.worker_restarts,
            last_worker_exit: s.last_worker_exit,
            model: s.model,
            device: s.device,
            compute_type: s.compute_type,
            engine: s.engine,
            queue_depth: s.queue_depth,
            queue_capacity: self.queue_capacity,
            in_flight: s.in_flight,
            uptime_secs: self.started.elapsed().as_secs_f64(),
            shutting_down: s.shutting_down,
            jobs: s.jobs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_tick_subscribers_and_reads_do_not() {
        // The async job runner waits on this channel and reads the status
        // when woken: a read that ticked would make it spin.
        let s = Shared::new(3);
        let mut rx = s.subscribe();
        let _ = s.status();
        let _ = s.load_time();
        assert!(!rx.has_changed().unwrap(), "a read ticked the channel");
        s.set_queue_depth(1, None);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        s.worker_busy(false);
        assert!(rx.has_changed().unwrap());
    }

    #[test]
    fn readiness_follows_the_worker_lifecycle() {
        let s = Shared::new(3);
        assert!(!s.status().ready, "not ready while the model loads");
        s.worker_spawned(42, 0);
        assert_eq!(s.status().worker_pid, Some(42));
        s.worker_loaded(&asr_ipc::Hello {
            protocol_version: 1,
            worker_version: "0".into(),
            model: "tiny.en".into(),
            multilingual: false,
            device: "cpu".into(),
            compute_type: "int8".into(),
            threads: 2,
            load_ms: 300,
            pid: 42,
            engine: asr_ipc::EngineInfo {
                version: "4.8.4".into(),
                ..Default::default()
            },
        });
        assert_eq!(
            s.status().engine.map(|e| e.version).as_deref(),
            Some("4.8.4")
        );
        assert!(s.status().ready);
        s.worker_busy(true);
        assert!(s.status().ready, "busy is still ready: work queues");
        assert_eq!(s.status().in_flight, 1);
        s.worker_exited("killed by SIGKILL (9)".into());
        let st = s.status();
        assert!(!st.ready);
        assert_eq!(st.worker_state, WorkerState::Restarting);
        assert_eq!(st.in_flight, 0);
        s.worker_spawned(43, 1);
        s.worker_loaded(&asr_ipc::Hello {
            protocol_version: 1,
            worker_version: "0".into(),
            model: "tiny.en".into(),
            multilingual: false,
            device: "cpu".into(),
            compute_type: "int8".into(),
            threads: 2,
            load_ms: 300,
            pid: 43,
            engine: Default::default(),
        });
        s.set_shutting_down();
        assert!(!s.status().ready, "draining is not ready");
    }

    #[test]
    fn a_late_heartbeat_makes_the_node_not_ready_until_it_comes_back() {
        let s = Shared::new(3);
        s.worker_heartbeat_late(true);
        assert_eq!(
            s.status().worker_state,
            WorkerState::Starting,
            "only a loaded worker can be late"
        );
        s.worker_loaded(&asr_ipc::Hello {
            protocol_version: asr_ipc::PROTOCOL_VERSION,
            worker_version: "0".into(),
            model: "tiny.en".into(),
            multilingual: false,
            device: "cpu".into(),
            compute_type: "int8".into(),
            threads: 2,
            load_ms: 300,
            pid: 42,
            engine: Default::default(),
        });
        s.worker_busy(true);
        s.worker_heartbeat_late(true);
        let st = s.status();
        assert_eq!(st.worker_state, WorkerState::Unresponsive);
        assert!(!st.ready);
        // The job ends meanwhile: still unresponsive, nothing in flight.
        s.worker_busy(false);
        assert_eq!(s.status().worker_state, WorkerState::Unresponsive);
        s.worker_heartbeat_late(false);
        let st = s.status();
        assert_eq!(st.worker_state, WorkerState::Ready);
        assert!(st.ready);
        s.worker_busy(true);
        s.worker_heartbeat_late(true);
        s.worker_heartbeat_late(false);
        assert_eq!(s.status().worker_state, WorkerState::Busy);
        // Killed for its silence: restarting, not "unresponsive".
        s.worker_heartbeat_late(true);
        s.worker_exited("no heartbeat".into());
        s.worker_heartbeat_late(false);
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
}
