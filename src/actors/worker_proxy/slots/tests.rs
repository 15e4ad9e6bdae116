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
    fn audio_secs(&self) -> f64 {
        self.id as f64
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
    s.start(vec![job(1, t0)], t0, 5 * SEC);
    assert_eq!(s.placement(), Placement::Stage);
    s.stage(vec![job(2, t0)], t0);
    assert_eq!(s.placement(), Placement::Requeue);
    s
}

fn ids(jobs: &[Job]) -> Vec<u64> {
    jobs.iter().map(|j| j.id).collect()
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
    s.start(vec![job(1, t0)], t0, 5 * SEC);
    assert_eq!(s.free_slot(false), Some(true), "a slot to stage");
    assert_eq!(s.free_slot(true), None, "nothing staged while stopping");
    s.stage(vec![job(2, t0)], t0);
    assert_eq!(s.free_slot(false), None);
}

#[test]
fn without_staging_only_one_job_is_held() {
    let t0 = Instant::now();
    let mut s: Slots<Job> = Slots::new(false, t0);
    s.loaded(t0);
    s.start(vec![job(1, t0)], t0, SEC);
    assert_eq!(s.free_slot(false), None);
    assert_eq!(s.placement(), Placement::Requeue);
}

#[test]
fn answers_pair_with_the_job_in_flight_and_promote_the_staged_one() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.pair(1, false), Pairing::Deliver, "progress of job 1");
    assert_eq!(s.pair(1, true), Pairing::Deliver, "done of job 1");
    let done = s.answered(1, true, t0 + SEC).unwrap();
    assert_eq!(done.job.id, 1);
    assert_eq!(
        done.batch_done,
        Some(BatchDone {
            size: 1,
            decode_time: SEC,
            rtf: Some(1.0)
        }),
        "1 s for 1 s of audio"
    );
    assert!(s.in_flight().is_none());
    let t1 = t0 + 2 * SEC;
    let (f, staged_for) = s.promote(t1, |_| 7 * SEC).expect("job 2 promoted");
    assert_eq!(
        (ids(&f.jobs), f.started_at, f.deadline),
        (vec![2], t1, 7 * SEC)
    );
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
    assert_eq!(held.in_flight.map(|f| ids(&f.jobs)), Some(vec![1]));
    assert_eq!(held.staged.map(|s| ids(&s.jobs)), Some(vec![2]));
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
    assert_eq!(s.check_staged(t0, false), vec![]);
    s.staged().unwrap().jobs[0].gone.set(true);
    assert_eq!(s.check_staged(t0, false), vec![(2, Unstage::ClientGone)]);
    let back = s.unstage(2).expect("the staged job");
    assert_eq!(back.id, 2);
    assert_eq!(s.free_slot(false), Some(true), "its slot is free again");
    // Job 1 finishes; the child then answers the cancelled job 2.
    assert_eq!(s.pair(1, true), Pairing::Deliver);
    s.answered(1, true, t0);
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
    assert_eq!(s.check_staged(t0, true), vec![(2, Unstage::ShuttingDown)]);
    assert_eq!(
        s.check_staged(t0 + 10 * SEC, false),
        vec![(2, Unstage::Expired)],
        "at its queue deadline"
    );
    assert_eq!(Unstage::Expired.label(), "expired");
}

#[test]
fn the_job_in_flight_is_cancelled_once_when_its_client_leaves() {
    let t0 = Instant::now();
    let mut s = busy(t0);
    assert_eq!(s.cancel_in_flight_if_gone(), Vec::<u64>::new());
    s.in_flight().unwrap().jobs[0].gone.set(true);
    assert_eq!(s.cancel_in_flight_if_gone(), vec![1]);
    assert_eq!(s.cancel_in_flight_if_gone(), Vec::<u64>::new(), "once");
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
    assert_eq!(held.in_flight.map(|f| ids(&f.jobs)), Some(vec![1]));
    assert_eq!(held.staged.map(|s| ids(&s.jobs)), Some(vec![2]));
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

/// A loaded child with the batch {1, 2, 3} in flight (job `id` has `id`
/// seconds of audio) and the batch {4, 5} staged.
fn busy_batches(t0: Instant) -> Slots<Job> {
    let mut s = Slots::new(true, t0);
    s.loaded(t0);
    s.start(vec![job(1, t0), job(2, t0), job(3, t0)], t0, 9 * SEC);
    s.stage(vec![job(4, t0), job(5, t0)], t0);
    s
}

#[test]
fn answers_pair_with_any_job_of_the_batch_in_flight_in_any_order() {
    let t0 = Instant::now();
    let mut s = busy_batches(t0);
    assert!(s.in_flight().unwrap().is_batch());
    assert_eq!(s.pair(3, false), Pairing::Deliver, "progress of job 3");
    assert_eq!(s.pair(2, true), Pairing::Deliver);
    let a = s.answered(2, true, t0 + SEC).unwrap();
    assert_eq!((a.job.id, a.started_at, a.batch_done), (2, t0, None));
    assert_eq!(s.free_slot(false), None, "the batch is still in flight");
    assert_eq!(
        s.decode_deadline_passed(1),
        Some(9 * SEC),
        "the batch's deadline is keyed by its first job"
    );
    // Job 3 fails (its audio does not count towards the rtf), job 1 is done last.
    assert!(s
        .answered(3, false, t0 + 2 * SEC)
        .unwrap()
        .batch_done
        .is_none());
    assert_eq!(
        s.pair(2, true),
        Pairing::Broken("worker answered job 2 while job 1 was in flight".into())
    );
}

#[test]
fn the_batch_ends_with_its_last_answer_and_its_rtf_is_over_the_audio_decoded() {
    let t0 = Instant::now();
    let mut s = busy_batches(t0);
    s.answered(2, true, t0 + SEC);
    s.answered(3, false, t0 + SEC);
    let last = s.answered(1, true, t0 + 6 * SEC).unwrap();
    assert_eq!(
        last.batch_done,
        Some(BatchDone {
            size: 3,
            decode_time: 6 * SEC,
            rtf: Some(2.0)
        }),
        "6 s of decode for the 3 s of audio of jobs 1 and 2"
    );
    assert!(s.in_flight().is_none());
    assert!(s.answered(1, true, t0).is_none(), "answered already");
    let (f, _) = s
        .promote(t0 + 6 * SEC, |jobs| jobs.len() as u32 * SEC)
        .unwrap();
    assert_eq!(
        (ids(&f.jobs), f.key, f.deadline, f.size),
        (vec![4, 5], 4, 2 * SEC, 2)
    );
    assert_eq!(
        s.decode_deadline_passed(1),
        None,
        "the old batch's deadline is void"
    );
    assert_eq!(s.decode_deadline_passed(4), Some(2 * SEC));
}

#[test]
fn an_answer_for_the_staged_batch_breaks_pairing_and_hands_back_both_batches() {
    let t0 = Instant::now();
    let mut s = busy_batches(t0);
    let Pairing::Broken(detail) = s.pair(5, true) else {
        panic!("a staged job answered before the batch in flight must break pairing");
    };
    assert_eq!(
        detail,
        "worker answered job 5 (staged) while jobs 1, 2, 3 were in flight"
    );
    let held = s.break_pairing(detail);
    assert_eq!(held.in_flight.map(|f| ids(&f.jobs)), Some(vec![1, 2, 3]));
    assert_eq!(held.staged.map(|s| ids(&s.jobs)), Some(vec![4, 5]));
}

#[test]
fn one_job_of_a_batch_is_cancelled_or_unstaged_alone() {
    let t0 = Instant::now();
    let mut s = busy_batches(t0);
    s.in_flight().unwrap().jobs[1].gone.set(true);
    assert_eq!(s.cancel_in_flight_if_gone(), vec![2], "only job 2");
    assert_eq!(s.cancel_in_flight_if_gone(), Vec::<u64>::new(), "once");
    s.staged().unwrap().jobs[0].gone.set(true);
    assert_eq!(s.check_staged(t0, false), vec![(4, Unstage::ClientGone)]);
    assert_eq!(s.unstage(4).map(|j| j.id), Some(4));
    assert_eq!(s.staged_ids(), vec![5], "job 5 stays staged");
    assert_eq!(s.free_slot(false), None, "the staged slot is still taken");
    assert_eq!(s.pair(4, true), Pairing::Drop, "job 4's Cancelled answer");
    assert_eq!(s.unstage(5).map(|j| j.id), Some(5));
    assert!(s.staged().is_none());
    assert_eq!(
        s.free_slot(false),
        Some(true),
        "free once its last job is back"
    );
}

#[test]
fn a_crash_hands_back_every_job_of_both_batches() {
    let t0 = Instant::now();
    let mut s = busy_batches(t0);
    s.answered(1, true, t0);
    let (held, reason) = s.exited();
    assert_eq!(reason, None);
    let f = held.in_flight.unwrap();
    assert_eq!((ids(&f.jobs), f.size, f.is_batch()), (vec![2, 3], 3, true));
    assert_eq!(held.staged.map(|s| ids(&s.jobs)), Some(vec![4, 5]));
}
