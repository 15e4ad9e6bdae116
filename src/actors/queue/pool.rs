//! The queue's view of the worker pool (`--workers`, `--devices`): which
//! workers asked for a job, what waits staged in each, which are down, and
//! how fast the pool drains the queue.
//!
//! # Rules
//! - A worker is identified by its id (`0..N`, stable across restarts); its
//!   proxy changes with every restart.
//! - A worker that asks for a job ([`Pool::idle`]) is up; it is down from
//!   the supervisor's [`super::QueueMsg::WorkerDown`] until its next
//!   process asks. The queue refuses new jobs (503) only while *every*
//!   worker is down ([`Pool::all_down`]).
//! - [`Pool::take`] hands out a worker whose engine is free before one that
//!   would stage the job behind its decode, so a job never waits behind
//!   another while a worker sits idle.
//! - The pool drains the queue `accepting` times faster than one worker:
//!   Retry-After ([`pool_drain_secs`]) and the audio-seconds admission
//!   ([`pool_audio_allowance`]) use that.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ractor::{ActorId, ActorRef};

use crate::actors::worker_proxy::WorkerProxyMsg;

/// Seconds the pool needs to decode `waiting_audio_secs` of audio at `rtf`
/// (decode seconds per audio second, measured per worker) with
/// `accepting` workers decoding side by side (at least one is assumed:
/// while none accepts, the queue answers 503 with the restart's delay).
pub fn pool_drain_secs(waiting_audio_secs: f64, rtf: f64, accepting: usize) -> f64 {
    waiting_audio_secs * rtf / accepting.max(1) as f64
}

/// Audio seconds allowed to wait when `--queue-max-audio-secs` is
/// `max_audio_secs` (0 = no limit): that much per accepting worker, so the
/// longest wait it stands for stays the same whatever the pool's size.
pub fn pool_audio_allowance(max_audio_secs: f64, accepting: usize) -> f64 {
    max_audio_secs * accepting.max(1) as f64
}

/// A worker that asked for a job.
#[derive(Debug, Clone)]
pub struct Idle {
    /// Its id.
    pub worker_id: usize,
    /// Its proxy, to send the job to.
    pub proxy: ActorRef<WorkerProxyMsg>,
    /// The job would be staged behind the one it decodes.
    pub stage: bool,
}

/// The workers, as the queue sees them.
#[derive(Debug)]
pub struct Pool {
    workers: usize,
    idle: Vec<Idle>,
    /// The proxy each worker last asked from.
    proxies: HashMap<usize, ActorId>,
    /// Jobs and audio seconds staged in each worker (a batch that has left
    /// the queue but still waits, so it counts as queued).
    staged: HashMap<usize, (usize, f64)>,
    /// Workers down, and when each is expected back.
    down: BTreeMap<usize, Instant>,
}

impl Pool {
    /// A pool of `workers` workers, all up (the node admits work only once
    /// they loaded).
    pub fn new(workers: usize) -> Self {
        Self {
            workers: workers.max(1),
            idle: Vec::new(),
            proxies: HashMap::new(),
            staged: HashMap::new(),
            down: BTreeMap::new(),
        }
    }

    /// Worker `worker_id` asks for a job through `proxy`: it is up, and
    /// holds no staged job (a proxy asks only then).
    pub fn idle(&mut self, worker_id: usize, proxy: ActorRef<WorkerProxyMsg>, stage: bool) {
        self.down.remove(&worker_id);
        self.staged.remove(&worker_id);
        self.idle.retain(|i| i.worker_id != worker_id);
        self.proxies.insert(worker_id, proxy.get_id());
        self.idle.push(Idle {
            worker_id,
            proxy,
            stage,
        });
    }

    /// The worker to hand the next job to: one with a free engine first.
    pub fn take(&mut self) -> Option<Idle> {
        let at = self
            .idle
            .iter()
            .position(|i| !i.stage)
            .or_else(|| (!self.idle.is_empty()).then_some(0))?;
        Some(self.idle.remove(at))
    }

    /// A worker taken with [`Self::take`] got no job after all: it still asks.
    pub fn put_back(&mut self, idle: Idle) {
        self.idle.insert(0, idle);
    }

    /// A batch of `jobs` jobs and `audio_secs` of audio was sent to worker
    /// `worker_id` to be staged.
    pub fn staged(&mut self, worker_id: usize, jobs: usize, audio_secs: f64) {
        self.staged.insert(worker_id, (jobs, audio_secs));
    }

    /// The proxy's child exited: never dispatch to it again, and forget its
    /// staged job (it comes back to the queue as a requeue).
    pub fn gone(&mut self, proxy: &ActorRef<WorkerProxyMsg>) {
        let id = proxy.get_id();
        self.idle.retain(|i| i.proxy.get_id() != id);
        let workers: Vec<usize> = self
            .proxies
            .iter()
            .filter(|(_, p)| **p == id)
            .map(|(w, _)| *w)
            .collect();
        for w in workers {
            self.staged.remove(&w);
            self.proxies.remove(&w);
        }
    }

    /// Worker `worker_id` is down until about `back_at`.
    pub fn down(&mut self, worker_id: usize, back_at: Instant) {
        self.down.insert(worker_id, back_at);
        self.staged.remove(&worker_id);
        self.idle.retain(|i| i.worker_id != worker_id);
    }

    /// Workers waiting for a job.
    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Whether no worker accepts work.
    pub fn all_down(&self) -> bool {
        self.down.len() >= self.workers
    }

    /// Workers that accept work (not down).
    pub fn accepting(&self) -> usize {
        self.workers.saturating_sub(self.down.len())
    }

    /// How long until the first worker that is down is expected back (zero
    /// when none is down or the time passed).
    pub fn first_back_in(&self) -> Duration {
        let now = Instant::now();
        self.down
            .values()
            .map(|t| t.saturating_duration_since(now))
            .min()
            .unwrap_or_default()
    }

    /// Jobs staged in workers.
    pub fn staged_jobs(&self) -> usize {
        self.staged.values().map(|(n, _)| n).sum()
    }

    /// Audio seconds staged in workers.
    pub fn staged_audio_secs(&self) -> f64 {
        self.staged.values().map(|(_, a)| a).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_drains_as_fast_as_its_accepting_workers() {
        assert_eq!(pool_drain_secs(30.0, 0.2, 1), 6.0);
        assert_eq!(pool_drain_secs(30.0, 0.2, 2), 3.0);
        assert_eq!(pool_drain_secs(30.0, 0.2, 0), 6.0, "at least one");
        assert_eq!(pool_audio_allowance(60.0, 1), 60.0);
        assert_eq!(pool_audio_allowance(60.0, 3), 180.0);
        assert_eq!(pool_audio_allowance(0.0, 3), 0.0, "0 stays no limit");
    }

    #[test]
    fn down_until_every_worker_is_down_and_back_when_it_asks() {
        let mut p = Pool::new(2);
        assert_eq!(p.accepting(), 2);
        let soon = Instant::now() + Duration::from_secs(3);
        p.down(1, soon);
        assert!(!p.all_down());
        assert_eq!(p.accepting(), 1);
        p.down(0, soon + Duration::from_secs(5));
        assert!(p.all_down());
        assert_eq!(p.accepting(), 0);
        let back = p.first_back_in();
        assert!(back <= Duration::from_secs(3) && back > Duration::from_secs(2));
        p.down(1, soon); // twice: still one entry
        assert_eq!(p.accepting(), 0);
    }
}
