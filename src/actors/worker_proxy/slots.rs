//! The worker proxy's slots: an I/O-free state machine.
//!
//! It knows the child's [`Lifecycle`], the job *in flight* (being decoded),
//! the job *staged* behind it (sent ahead, waiting), the staged jobs
//! *skipped* (cancelled in the child, whose answers are dropped), and when
//! the child was last heard from. It sends nothing, answers nobody and
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

/// The job being decoded.
#[derive(Debug)]
pub struct InFlight<J> {
    /// The job.
    pub job: J,
    /// When it became the job in flight (its decode began).
    pub started_at: Instant,
    /// Its decode deadline, counted from `started_at`.
    pub deadline: Duration,
    /// A `Cancel` was sent for it (its client left).
    pub cancel_sent: bool,
}

/// A job sent to the child ahead of time, waiting for the one in flight.
#[derive(Debug)]
pub struct Staged<J> {
    /// The job.
    pub job: J,
    /// When it was staged.
    pub staged_at: Instant,
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
    /// The job in flight, if not answered.
    pub in_flight: Option<InFlight<J>>,
    /// The staged job, if any.
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

    /// The job in flight.
    pub fn in_flight(&self) -> Option<&InFlight<J>> {
        self.in_flight.as_ref()
    }

    /// The staged job.
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

    /// Where a job from the queue goes; the caller then [`Self::start`]s or
    /// [`Self::stage`]s it once it is sent (or leaves the slots untouched if
    /// it cannot be sent).
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

    /// `job` is now the one the engine decodes (after [`Placement::Run`]).
    pub fn start(&mut self, job: J, now: Instant, deadline: Duration) {
        debug_assert!(self.in_flight.is_none());
        self.in_flight = Some(InFlight {
            job,
            started_at: now,
            deadline,
            cancel_sent: false,
        });
    }

    /// `job` waits in the child behind the one in flight (after
    /// [`Placement::Stage`]).
    pub fn stage(&mut self, job: J, now: Instant) {
        debug_assert!(self.staged.is_none());
        self.staged = Some(Staged {
            job,
            staged_at: now,
        });
    }

    /// Whether an answer about `job_id` may be delivered (see *Pairing* in
    /// [`super`]). A final answer (`Done`, `Failed`) of a skipped job
    /// forgets it; its progress is dropped too.
    pub fn pair(&mut self, job_id: u64, is_final: bool) -> Pairing {
        if matches!(self.lifecycle, Lifecycle::Dying(_) | Lifecycle::Exited) {
            return Pairing::Drop;
        }
        if self
            .in_flight
            .as_ref()
            .is_some_and(|f| f.job.id() == job_id)
        {
            return Pairing::Deliver;
        }
        if let Some(i) = self.skipped.iter().position(|&id| id == job_id) {
            if is_final {
                self.skipped.remove(i);
            }
            return Pairing::Drop;
        }
        Pairing::Broken(match (&self.in_flight, &self.staged) {
            (Some(f), Some(s)) if s.job.id() == job_id => format!(
                "worker answered job {job_id} (staged) while job {} was in flight",
                f.job.id()
            ),
            (Some(f), _) => format!(
                "worker answered job {job_id} while job {} was in flight",
                f.job.id()
            ),
            (None, _) => format!("worker answered job {job_id} with no job in flight"),
        })
    }

    /// The job in flight, answered (or failed): out of its slot.
    pub fn take_in_flight(&mut self) -> Option<InFlight<J>> {
        self.in_flight.take()
    }

    /// After the job in flight was answered: the staged job (if any) is in
    /// flight from `now`, with the deadline `deadline` gives it; returns it
    /// and how long it was staged.
    pub fn promote(
        &mut self,
        now: Instant,
        deadline: impl FnOnce(&J) -> Duration,
    ) -> Option<(&mut InFlight<J>, Duration)> {
        if self.in_flight.is_some() {
            return None;
        }
        let s = self.staged.take()?;
        let waited = now.saturating_duration_since(s.staged_at);
        let deadline = deadline(&s.job);
        self.start(s.job, now, deadline);
        self.in_flight.as_mut().map(|f| (f, waited))
    }

    /// Whether the staged job must be taken back now, and why.
    pub fn check_staged(&self, now: Instant, stopping: bool) -> Option<Unstage> {
        let s = self.staged.as_ref()?;
        if s.job.client_gone() {
            Some(Unstage::ClientGone)
        } else if now >= s.job.queue_deadline() {
            Some(Unstage::Expired)
        } else if stopping {
            Some(Unstage::ShuttingDown)
        } else {
            None
        }
    }

    /// Takes the staged job back; its answers will be dropped. The caller
    /// sends the child a `Cancel` for it.
    pub fn unstage(&mut self) -> Option<Staged<J>> {
        let s = self.staged.take()?;
        self.skipped.push_back(s.job.id());
        Some(s)
    }

    /// The job in flight's id, once, when its client has gone: the caller
    /// sends the child a `Cancel` for it.
    pub fn cancel_in_flight_if_gone(&mut self) -> Option<u64> {
        let f = self.in_flight.as_mut()?;
        if f.cancel_sent || !f.job.client_gone() {
            return None;
        }
        f.cancel_sent = true;
        Some(f.job.id())
    }

    /// The decode deadline of job `id` passed: its limit, if it is still
    /// the job in flight.
    pub fn decode_deadline_passed(&self, id: u64) -> Option<Duration> {
        self.in_flight
            .as_ref()
            .filter(|f| f.job.id() == id)
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
