//! Deliberate faults for crash, hang and start-up tests.
//!
//! Honoured only when the worker runs with `--enable-fault-injection`;
//! otherwise a job's fault is ignored with a warning, so a production worker
//! can never be crashed through the protocol.

use std::time::Duration;

use asr_ipc::Fault;

use crate::{log_error, log_warn};

/// Environment variable that makes a fault-injecting worker fail its load.
pub const FAULT_ON_LOAD_ENV: &str = "WORKER_PROC_FAULT_ON_LOAD";

/// Exit code of the injected load failure.
pub const EXIT_FAULT_ON_LOAD: i32 = 5;

/// Applies a job's fault before it is decoded. `Crash` and `Hang` never
/// return; `SlowMs` sleeps and returns. `AnswerOutOfOrder` and
/// `AnswerWrongId` change how the job is answered, not how it starts: the
/// job loop (`protocol`) applies them.
pub fn before_job(fault: Option<Fault>, enabled: bool, job_id: u64) {
    let Some(fault) = fault else { return };
    if !enabled {
        log_warn!(
            "job {job_id} asks for fault {fault:?} but fault injection is disabled; ignoring it"
        );
        return;
    }
    match fault {
        Fault::Crash => {
            log_error!("job {job_id}: injected crash, aborting");
            // SAFETY: abort() has no preconditions; it ends the process.
            unsafe { libc::abort() }
        }
        Fault::Hang => {
            log_warn!("job {job_id}: injected hang, sleeping forever");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Fault::SlowMs(ms) => {
            log_warn!("job {job_id}: injected delay of {ms} ms");
            std::thread::sleep(Duration::from_millis(ms));
        }
        Fault::AnswerOutOfOrder | Fault::AnswerWrongId => {}
    }
}

/// The exit code to fail the load with, if `WORKER_PROC_FAULT_ON_LOAD=exit`
/// is set and fault injection is enabled.
pub fn on_load(enabled: bool) -> Option<i32> {
    match std::env::var(FAULT_ON_LOAD_ENV).ok().as_deref() {
        Some("exit") if enabled => Some(EXIT_FAULT_ON_LOAD),
        Some(v) if !v.is_empty() && !enabled => {
            log_warn!("{FAULT_ON_LOAD_ENV}={v} ignored: fault injection is disabled");
            None
        }
        Some(v) if !v.is_empty() && v != "exit" => {
            log_warn!("{FAULT_ON_LOAD_ENV}={v} not understood (only \"exit\")");
            None
        }
        _ => None,
    }
}
