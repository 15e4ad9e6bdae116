//! The worker proxy's slots: an I/O-free state machine.
//!
//! It knows the child's [`Lifecycle`], the batch *in flight* (being
//! decoded: one job or more, each answered on its own), the batch *staged*
//! behind it (sent ahead, waiting), the staged jobs *skipped* (cancelled in
//! the child, whose answers are dropped), and when the child was last
//! heard from. A lone job is a batch of one. It sends nothing, answers nobody and
//! reads no clock: every method takes `now` and returns a decision that the
//! actor ([`super::WorkerProxyActor`]) carries out (frames, replies, spans,
//! timers). So every rule of the module docs' *Pairing* and *Liveness* is
//! tested here without a process or a runtime.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::exit::KillReason;

/// What the slots need to know of a job.
pub trait SlotJob {
    /// Its id (what the child's answers carry).
    fn id(&self) -> u64;
    /// Its client has gone (nobody waits for the answer).
    fn client_gone(&self) -> bool;
    /// When it must have started decoding (its queue deadline).
    fn queue_deadline(&self) -> Instant;
    /// Seconds of audio (for the batch's real-time factor).
    fn audio_secs(&self) -> f64;
}

/// Where the child is in its life.
#[derive(Debug, Clone, PartialEq)]
pub enum Lifecycle {
    /// Spawned, loading its model: no `Hello` yet, takes no jobs.
    Loading,
    /// Sent a valid `Hello`: takes jobs.
    Ready,
    /// Killed by the proxy for this reason, its exit on the way: takes no
    /// jobs, and nothing it still says is delivered.
    Dying(KillReason),
    /// The process has ended.
    Exited,
}

/// The batch being decoded (one job or more).
#[derive(Debug)]
pub struct InFlight<J> {
    /// Its jobs not answered yet, in the batch's order.
    pub jobs: Vec<J>,
    /// The id its decode deadline is keyed by (its first job's).
    pub key: u64,
    /// Jobs it started with.
    pub size: usize,
    /// When it became the batch in flight (its decode began).
    pub started_at: Instant,
    /// Its decode deadline, counted from `started_at`.
    pub deadline: Duration,
    /// Its jobs a `Cancel` was sent for (their clients left).
    pub cancel_sent: Vec<u64>,
    /// Audio seconds of its jobs answered `Done` so far.
    pub done_audio_secs: f64,
}

impl<J> InFlight<J> {
    /// Whether it started as a batch of more than one job.
    pub fn is_batch(&self) -> bool {
        self.size > 1
    }
}

/// A batch sent to the child ahead of time, waiting for the one in flight.
#[derive(Debug)]
pub struct Staged<J> {
    /// Its jobs still to be decoded, in the batch's order.
    pub jobs: Vec<J>,
    /// When it was staged.
    pub staged_at: Instant,
}

/// A job of the batch in flight, answered ([`Slots::answered`]).
#[derive(Debug)]
pub struct Answered<J> {
    /// The job.
    pub job: J,
    /// When its batch started decoding.
    pub started_at: Instant,
    /// Set when it was the batch's last job: the batch is done.
    pub batch_done: Option<BatchDone>,
}

/// A batch whose every job is answered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchDone {
    /// Jobs it started with.
    pub size: usize,
    /// Its decode wall time.
    pub decode_time: Duration,
    /// Decode wall time over the audio of its jobs answered `Done` (the
    /// drain rate the queue learns), if any was.
    pub rtf: Option<f64>,
}

/// Where a job the queue sent goes ([`Slots::placement`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Decode it now: nothing is in flight.
    Run,
    /// Stage it behind the job in flight.
    Stage,
    /// No free slot (two answers to one request for work crossed): back to
    /// the front of the queue.
    Requeue,
    /// The child takes no jobs (dying, exited, not loaded): back to the
    /// queue for the next worker.
    Gone,
}

/// What to do with an answer ([`Slots::pair`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pairing {
    /// It is about the job in flight: deliver it.
    Deliver,
    /// Nobody waits for it (a skipped job's, or a dying child's): drop it.
    Drop,
    /// It pairs with no job the child may be answering.
    Broken(String),
}

/// Why a staged job is taken back ([`Slots::check_staged`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unstage {
    /// Its client has gone.
    ClientGone,
    /// Its queue deadline passed.
    Expired,
    /// The node is shutting down.
    ShuttingDown,
}

impl Unstage {
    /// The `queue.wait` outcome label.
    pub fn label(self) -> &'static str {
        match self {
            Unstage::ClientGone => "client_gone",
            Unstage::Expired => "expired",
            Unstage::ShuttingDown => "shutting_down",
        }
    }
}

/// The heartbeat check's verdict ([`Slots::liveness`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Nothing to do.
    Alive,
    /// It just became late (reported once per late spell).
    Late(Duration),
    /// Silent past the timeout: hung.
    Unresponsive(Duration),
}

/// Everything the proxy held when the child ended or broke pairing.
#[derive(Debug)]
pub struct Held<J> {
    /// The batch in flight (its jobs not answered yet), if any.
    pub in_flight: Option<InFlight<J>>,
    /// The staged batch, if any.
    pub staged: Option<Staged<J>>,
}

/// The slot state machine (see the module docs).
#[derive(Debug)]
pub struct Slots<J> {
    lifecycle: Lifecycle,
    stage_next: bool,
    in_flight: Option<InFlight<J>>,
    staged: Option<Staged<J>>,
    /// Staged jobs cancelled in the child, oldest first.
    skipped: VecDeque<u64>,
    last_heard: Instant,
    heartbeat_late: bool,
}

impl<J: SlotJob> Slots<J> {
    /// A child just spawned; `stage_next` is `stage_next_job`.
    pub fn new(stage_next: bool, now: Instant) -> Self {
        Self {
            lifecycle: Lifecycle::Loading,
            stage_next,
            in_flight: None,
            staged: None,
            skipped: VecDeque::new(),
            last_heard: now,
            heartbeat_late: false,
        }
    }

    /// Where the child is in its life.
    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// The batch in flight.
    pub fn in_flight(&self) -> Option<&InFlight<J>> {
        self.in_flight.as_ref()
    }

    /// The job `id` of the batch in flight, if it is one.
    pub fn in_flight_job(&self, id: u64) -> Option<&J> {
        self.in_flight
            .as_ref()
            .and_then(|f| f.jobs.iter().find(|j| j.id() == id))
    }

    /// The staged batch.
    pub fn staged(&self) -> Option<&Staged<J>> {
        self.staged.as_ref()
    }

    /// Whether the child takes jobs.
    pub fn can_take_jobs(&self) -> bool {
        self.lifecycle == Lifecycle::Ready
    }

    /// A valid `Hello` arrived: `Loading` → `Ready` (true), else nothing.
    pub fn loaded(&mut self, now: Instant) -> bool {
        if self.lifecycle != Lifecycle::Loading {
            return false;
        }
        self.lifecycle = Lifecycle::Ready;
        self.last_heard = now;
        true
    }

    /// A free slot to ask the queue for: `Some(false)` none in flight,
    /// `Some(true)` one to stage (never while `stopping`), `None` none.
    pub fn free_slot(&self, stopping: bool) -> Option<bool> {
        if !self.can_take_jobs() {
            return None;
        }
        match (&self.in_flight, &self.staged) {
            (None, _) => Some(false),
            (Some(_), None) if self.stage_next && !stopping => Some(true),
            _ => None,
        }
    }

    /// Where a batch from the queue goes; the caller then [`Self::start`]s
    /// or [`Self::stage`]s it once it is sent (or leaves the slots
    /// untouched if it cannot be sent).
    pub fn placement(&self) -> Placement {
        if !self.can_take_jobs() {
            Placement::Gone
        } else if self.in_flight.is_none() {
            Placement::Run
        } else if self.staged.is_none() && self.stage_next {
            Placement::Stage
        } else {
            Placement::Requeue
        }
    }

    /// `jobs` (one or more) are now the batch the engine decodes (after
    /// [`Placement::Run`]); `deadline` is the batch's.
    pub fn start(&mut self, jobs: Vec<J>, now: Instant, deadline: Duration) {
        debug_assert!(self.in_flight.is_none());
        let Some(key) = jobs.first().map(|j| j.id()) else {
            return;
        };
        self.in_flight = Some(InFlight {
            size: jobs.len(),
            jobs,
            key,
            started_at: now,
            deadline,
            cancel_sent: Vec::new(),
            done_audio_secs: 0.0,
        });
    }

    /// `jobs` wait in the child behind the batch in flight (after
    /// [`Placement::Stage`]).
    pub fn stage(&mut self, jobs: Vec<J>, now: Instant) {
        debug_assert!(self.staged.is_none());
        if jobs.is_empty() {
            return;
        }
        self.staged = Some(Staged {
            jobs,
            staged_at: now,
        });
    }

    /// Whether an answer about `job_id` may be delivered (see *Pairing* in
    /// [`super`]): only to a job of the batch in flight. A final answer
    /// (`Done`, `Failed`) of a skipped job forgets it; its progress is
    /// dropped too.
    pub fn pair(&mut self, job_id: u64, is_final: bool) -> Pairing {
        if matches!(self.lifecycle, Lifecycle::Dying(_) | Lifecycle::Exited) {
            return Pairing::Drop;
        }
        if self.in_flight_job(job_id).is_some() {
            return Pairing::Deliver;
        }
        if let Some(i) = self.skipped.iter().position(|&id| id == job_id) {
            if is_final {
                self.skipped.remove(i);
            }
            return Pairing::Drop;
        }
        let ids = |jobs: &[J]| {
            let ids: Vec<String> = jobs.iter().map(|j| j.id().to_string()).collect();
            match ids.len() {
                1 => format!("job {}", ids[0]),
                _ => format!("jobs {}", ids.join(", ")),
            }
        };
        let staged = self
            .staged
            .as_ref()
            .is_some_and(|s| s.jobs.iter().any(|j| j.id() == job_id));
        Pairing::Broken(match &self.in_flight {
            Some(f) => format!(
                "worker answered job {job_id}{} while {} {} in flight",
                if staged { " (staged)" } else { "" },
                ids(&f.jobs),
                if f.jobs.len() == 1 { "was" } else { "were" }
            ),
            None => format!("worker answered job {job_id} with no job in flight"),
        })
    }

    /// The final answer of job `id` of the batch in flight arrived (`done`:
    /// a transcript): the job, out of its slot; with [`BatchDone`] when it
    /// was the batch's last, which then leaves the slot free.
    pub fn answered(&mut self, id: u64, done: bool, now: Instant) -> Option<Answered<J>> {
        let f = self.in_flight.as_mut()?;
        let i = f.jobs.iter().position(|j| j.id() == id)?;
        let job = f.jobs.remove(i);
        if done {
            f.done_audio_secs += job.audio_secs();
        }
        let started_at = f.started_at;
        let batch_done = f.jobs.is_empty().then(|| {
            let decode_time = now.saturating_duration_since(f.started_at);
            let rtf =
                (f.done_audio_secs > 0.0).then(|| decode_time.as_secs_f64() / f.done_audio_secs);
            BatchDone {
                size: f.size,
                decode_time,
                rtf,
            }
        });
        if batch_done.is_some() {
            self.in_flight = None;
        }
        Some(Answered {
            job,
            started_at,
            batch_done,
        })
    }

    /// The batch in flight, out of its slot (its jobs to be failed).
    pub fn take_in_flight(&mut self) -> Option<InFlight<J>> {
        self.in_flight.take()
    }

    /// After the batch in flight was answered: the staged batch (if any) is
    /// in flight from `now`, with the deadline `deadline` gives it; returns
    /// it and how long it was staged.
    pub fn promote(
        &mut self,
        now: Instant,
        deadline: impl FnOnce(&[J]) -> Duration,
    ) -> Option<(&mut InFlight<J>, Duration)> {
        if self.in_flight.is_some() {
            return None;
        }
        let s = self.staged.take()?;
        let waited = now.saturating_duration_since(s.staged_at);
        let deadline = deadline(&s.jobs);
        self.start(s.jobs, now, deadline);
        self.in_flight.as_mut().map(|f| (f, waited))
    }

    /// The staged jobs that must be taken back now, and why.
    pub fn check_staged(&self, now: Instant, stopping: bool) -> Vec<(u64, Unstage)> {
        let Some(s) = self.staged.as_ref() else {
            return Vec::new();
        };
        s.jobs
            .iter()
            .filter_map(|j| {
                let why = if j.client_gone() {
                    Unstage::ClientGone
                } else if now >= j.queue_deadline() {
                    Unstage::Expired
                } else if stopping {
                    Unstage::ShuttingDown
                } else {
                    return None;
                };
                Some((j.id(), why))
            })
            .collect()
    }

    /// Takes staged job `id` back; its answers will be dropped. The caller
    /// sends the child a `Cancel` for it. The staged slot is free once its
    /// last job is taken back.
    pub fn unstage(&mut self, id: u64) -> Option<J> {
        let s = self.staged.as_mut()?;
        let i = s.jobs.iter().position(|j| j.id() == id)?;
        let job = s.jobs.remove(i);
        if s.jobs.is_empty() {
            self.staged = None;
        }
        self.skipped.push_back(id);
        Some(job)
    }

    /// The ids of the staged jobs, in order.
    pub fn staged_ids(&self) -> Vec<u64> {
        self.staged
            .as_ref()
            .map(|s| s.jobs.iter().map(|j| j.id()).collect())
            .unwrap_or_default()
    }

    /// The ids of the batch in flight's jobs whose client has gone, once
    /// each: the caller sends the child a `Cancel` for each.
    pub fn cancel_in_flight_if_gone(&mut self) -> Vec<u64> {
        let Some(f) = self.in_flight.as_mut() else {
            return Vec::new();
        };
        let gone: Vec<u64> = f
            .jobs
            .iter()
            .filter(|j| j.client_gone() && !f.cancel_sent.contains(&j.id()))
            .map(|j| j.id())
            .collect();
        f.cancel_sent.extend(&gone);
        gone
    }

    /// The decode deadline of the batch keyed `key` passed: its limit, if
    /// it is still the batch in flight.
    pub fn decode_deadline_passed(&self, key: u64) -> Option<Duration> {
        self.in_flight
            .as_ref()
            .filter(|f| f.key == key)
            .map(|f| f.deadline)
    }

    /// The proxy kills the child: `Dying` with the first reason given.
    /// Returns false if it was already dying or gone.
    pub fn kill(&mut self, reason: KillReason) -> bool {
        match self.lifecycle {
            Lifecycle::Loading | Lifecycle::Ready => {
                self.lifecycle = Lifecycle::Dying(reason);
                true
            }
            Lifecycle::Dying(_) | Lifecycle::Exited => false,
        }
    }

    /// The answers no longer pair with jobs: the child is killed and every
    /// job it holds is handed back to be failed.
    pub fn break_pairing(&mut self, detail: String) -> Held<J> {
        self.kill(KillReason::Unpaired { detail });
        Held {
            in_flight: self.in_flight.take(),
            staged: self.staged.take(),
        }
    }

    /// The process ended: `Exited`, and everything it held is handed back
    /// with the reason it was killed for, if it was.
    pub fn exited(&mut self) -> (Held<J>, Option<KillReason>) {
        let reason = match std::mem::replace(&mut self.lifecycle, Lifecycle::Exited) {
            Lifecycle::Dying(reason) => Some(reason),
            _ => None,
        };
        let held = Held {
            in_flight: self.in_flight.take(),
            staged: self.staged.take(),
        };
        (held, reason)
    }

    /// A frame arrived: the child is alive. True if its heartbeat was late
    /// (it is ready again).
    pub fn heard(&mut self, now: Instant) -> bool {
        self.last_heard = now;
        std::mem::take(&mut self.heartbeat_late)
    }

    /// The liveness check (see *Liveness* in [`super`]); only a `Ready`
    /// child is checked.
    pub fn liveness(&mut self, now: Instant, late: Duration, timeout: Duration) -> Liveness {
        if !self.can_take_jobs() {
            return Liveness::Alive;
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= timeout {
            Liveness::Unresponsive(silent)
        } else if silent >= late && !self.heartbeat_late {
            self.heartbeat_late = true;
            Liveness::Late(silent)
        } else {
            Liveness::Alive
        }
    }
}

#[cfg(test)]
mod tests;
