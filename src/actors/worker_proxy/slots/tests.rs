//! Direct tests of the slot state machine: no process, no runtime, no clock.

use super::*;

use std::cell::Cell;

#[derive(Debug)]
struct Job {
    id: u64,
    gone: Cell<bool>,
    deadline: Instant,
}

impl SlotJob for Job {
    fn id(&self) -> u64 {
        self.id
    }
    fn client_gone(&self) -> bool {
        self.gone.get()
    }
    fn queue_deadline(&self) -> Instant {
        self.deadline
    }
}

fn job(id: u64, t0: Instant) -> Job {
    Job {
        id,
        gone: Cell::new(false),
        deadline: t0 + Duration::from_secs(10),
    }
}

const SEC: Duration = Duration::from_secs(1);

/// A loaded child with job 1 in flight and job 2 staged.
fn busy(t0: Instant) -> Slots<Job> {
    let mut s = Slots::new(true, t0);
    assert!(s.loaded(t0));
    assert_eq!(s.placement(), Placement::Run);
    s.start(job(1, t0), t0, 5 * SEC);
    assert_eq!(s.placement(), Placement::Stage);
    s.stage(job(2, t0), t0);
    assert_eq!(s.placement(), Placement::Requeue);
    s
}

#[test]
fn a_loading_child_takes_no_jobs_and_a_loaded_one_asks_for_two() {
    let t0 = Instant::now();
    let mut s: Slots<Job> = Slots::new(true, t0);
    assert_eq!(*s.lifecycle(), Lifecycle::Loading);
    assert_eq!(s.free_slot(false), None);
    assert_eq!(s.placement(), Placement::Gone);
    assert!(s.loaded(t0));
    assert!(!s.loaded(t0), "a second Hello changes nothing");
    assert_eq!(s.free_slot(false), Some(false), "a slot to decode at once");
    s.start(job(1, t0), t0, 5 * SEC);
    assert_eq!(s.free_slot(false), Some(true), "a slot to stage");
    assert_eq!(s.free_slot(true), None, "nothing staged while stopping");
    s.stage(job(2, t0), t0);
    assert_eq!(s.free_slot(false), None);
}

#[test]
fn without_staging_only_one_job_is_held() {
    let t0 = Instant::now();
    let mut s: Slots<Job> = Slots::new(false, t0);
    s.loaded(t0);
    s.start(job(1, t0), t0, SEC);
    assert_eq!(s.free_slot(false), None);
    assert_eq!(s.placement(), Placement::Requeue);
}

#[test]
fn answers_pair_with_the_job_in_flight_and_promote_the_staged_one() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.pair(1, false), Pairing::Deliver, "progress of job 1");
    assert_eq!(s.pair(1, true), Pairing::Deliver, "done of job 1");
    let done = s.take_in_flight().unwrap();
    assert_eq!(done.job.id, 1);
    let t1 = t0 + 2 * SEC;
    let (f, staged_for) = s.promote(t1, |_| 7 * SEC).expect("job 2 promoted");
    assert_eq!((f.job.id, f.started_at, f.deadline), (2, t1, 7 * SEC));
    assert_eq!(staged_for, 2 * SEC);
    assert!(s.staged().is_none());
    assert_eq!(s.pair(2, true), Pairing::Deliver);
    assert_eq!(s.free_slot(false), Some(true));
}

#[test]
fn an_answer_out_of_order_breaks_pairing_and_hands_back_every_held_job() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    let Pairing::Broken(detail) = s.pair(2, true) else {
        panic!("the staged job answered before the one in flight must break pairing");
    };
    assert_eq!(
        detail,
        "worker answered job 2 (staged) while job 1 was in flight"
    );
    let held = s.break_pairing(detail);
    assert_eq!(held.in_flight.map(|f| f.job.id), Some(1));
    assert_eq!(held.staged.map(|s| s.job.id), Some(2));
    assert!(matches!(
        s.lifecycle(),
        Lifecycle::Dying(KillReason::Unpaired { .. })
    ));
    assert_eq!(s.pair(1, true), Pairing::Drop, "a dying child is not heard");
    assert_eq!(s.placement(), Placement::Gone);
    assert_eq!(s.free_slot(false), None);
}

#[test]
fn unknown_ids_break_pairing_too() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(
        s.pair(99, false),
        Pairing::Broken("worker answered job 99 while job 1 was in flight".into())
    );
    let mut idle: Slots<Job> = Slots::new(true, t0);
    idle.loaded(t0);
    assert_eq!(
        idle.pair(3, true),
        Pairing::Broken("worker answered job 3 with no job in flight".into())
    );
}

#[test]
fn a_cancelled_staged_job_is_skipped_until_its_final_answer() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.check_staged(t0, false), None);
    s.staged().unwrap().job.gone.set(true);
    assert_eq!(s.check_staged(t0, false), Some(Unstage::ClientGone));
    let back = s.unstage().expect("the staged job");
    assert_eq!(back.job.id, 2);
    assert_eq!(s.free_slot(false), Some(true), "its slot is free again");
    // Job 1 finishes; the child then answers the cancelled job 2.
    assert_eq!(s.pair(1, true), Pairing::Deliver);
    s.take_in_flight();
    assert!(
        s.promote(t0, |_| SEC).is_none(),
        "nothing staged to promote"
    );
    assert_eq!(s.pair(2, false), Pairing::Drop, "its progress is dropped");
    assert_eq!(s.pair(2, true), Pairing::Drop, "its Cancelled answer too");
    assert!(
        matches!(s.pair(2, true), Pairing::Broken(_)),
        "a second final answer for it pairs with nothing"
    );
}

#[test]
fn a_staged_job_is_taken_back_when_expired_or_stopping() {
    let t0 = Instant::now();
    let s = busy(t0);
    assert_eq!(s.check_staged(t0, true), Some(Unstage::ShuttingDown));
    assert_eq!(
        s.check_staged(t0 + 10 * SEC, false),
        Some(Unstage::Expired),
        "at its queue deadline"
    );
    assert_eq!(Unstage::Expired.label(), "expired");
}

#[test]
fn the_job_in_flight_is_cancelled_once_when_its_client_leaves() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.cancel_in_flight_if_gone(), None);
    s.in_flight().unwrap().job.gone.set(true);
    assert_eq!(s.cancel_in_flight_if_gone(), Some(1));
    assert_eq!(s.cancel_in_flight_if_gone(), None, "once");
    assert_eq!(
        s.pair(1, true),
        Pairing::Deliver,
        "its answer still ends it"
    );
}

#[test]
fn decode_deadlines_apply_to_the_job_in_flight_only() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.decode_deadline_passed(1), Some(5 * SEC));
    assert_eq!(s.decode_deadline_passed(2), None, "staged: not started");
    s.take_in_flight();
    assert_eq!(s.decode_deadline_passed(1), None, "answered already");
}

#[test]
fn heartbeat_late_is_reported_once_then_timeout_and_a_frame_brings_it_back() {
    let t0 = Instant::now();
    let (late, timeout) = (3 * SEC, 10 * SEC);
    let mut s: Slots<Job> = Slots::new(true, t0);
    assert_eq!(
        s.liveness(t0 + 60 * SEC, late, timeout),
        Liveness::Alive,
        "a loading child is not checked (the load deadline is)"
    );
    s.loaded(t0);
    assert_eq!(s.liveness(t0 + 2 * SEC, late, timeout), Liveness::Alive);
    assert_eq!(
        s.liveness(t0 + 3 * SEC, late, timeout),
        Liveness::Late(3 * SEC)
    );
    assert_eq!(
        s.liveness(t0 + 4 * SEC, late, timeout),
        Liveness::Alive,
        "late is reported once"
    );
    assert!(s.heard(t0 + 5 * SEC), "back: was late");
    assert!(!s.heard(t0 + 5 * SEC), "not late any more");
    assert_eq!(s.liveness(t0 + 7 * SEC, late, timeout), Liveness::Alive);
    assert_eq!(
        s.liveness(t0 + 15 * SEC, late, timeout),
        Liveness::Unresponsive(10 * SEC)
    );
    assert!(s.kill(KillReason::Unresponsive { silent: 10 * SEC }));
    assert_eq!(
        s.liveness(t0 + 30 * SEC, late, timeout),
        Liveness::Alive,
        "a dying child is not checked again"
    );
}

#[test]
fn the_first_kill_reason_is_kept_and_handed_over_at_exit() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert!(s.kill(KillReason::DecodeDeadline { limit: 5 * SEC }));
    assert!(!s.kill(KillReason::BrokeProtocol {
        error: "later".into()
    }));
    let (held, reason) = s.exited();
    assert_eq!(reason, Some(KillReason::DecodeDeadline { limit: 5 * SEC }));
    assert_eq!(held.in_flight.map(|f| f.job.id), Some(1));
    assert_eq!(held.staged.map(|s| s.job.id), Some(2));
    assert_eq!(*s.lifecycle(), Lifecycle::Exited);
    assert!(!s.kill(KillReason::LoadDeadline { secs: 1.0 }));
    assert_eq!(s.pair(1, true), Pairing::Drop);
}

#[test]
fn a_crash_hands_back_both_jobs_with_no_kill_reason() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    let (held, reason) = s.exited();
    assert_eq!(reason, None);
    assert!(held.in_flight.is_some() && held.staged.is_some());
    assert_eq!(s.placement(), Placement::Gone);
}
