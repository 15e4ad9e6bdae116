//! Why a worker ended, typed: how the process ended ([`ProcessExit`]), and
//! whether this proxy killed it and why ([`KillReason`]). The supervisor
//! gets a [`WorkerExit`]; `/health`'s `last_worker_exit` is its `Display`
//! text (`"killed by SIGKILL (9); killed after the decode deadline of 5s"`).

use std::fmt;
use std::time::Duration;

pub use super::super::child::ProcessExit;

/// Why the worker proxy killed its child.
#[derive(Debug, Clone, PartialEq)]
pub enum KillReason {
    /// The job in flight outlived its decode deadline (from its audio length).
    DecodeDeadline {
        /// The deadline.
        limit: Duration,
    },
    /// No frame (heartbeat or other) within the heartbeat timeout.
    Unresponsive {
        /// How long it had been silent.
        silent: Duration,
    },
    /// An answer named a job the child could not be answering (see
    /// *Pairing* in [`super`]).
    Unpaired {
        /// Which answer, and what was in flight.
        detail: String,
    },
    /// Its stdout carried something that is not a valid frame.
    BrokeProtocol {
        /// The decoding error.
        error: String,
    },
    /// Its `Hello` named another protocol version.
    WrongProtocol {
        /// The worker's version.
        worker: u32,
        /// Ours ([`asr_ipc::PROTOCOL_VERSION`]).
        service: u32,
    },
    /// No `Hello` within `load_timeout_secs`.
    LoadDeadline {
        /// The limit, in seconds.
        secs: f64,
    },
}

impl KillReason {
    /// A stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            KillReason::DecodeDeadline { .. } => "decode_deadline",
            KillReason::Unresponsive { .. } => "unresponsive",
            KillReason::Unpaired { .. } => "unpaired_answer",
            KillReason::BrokeProtocol { .. } => "protocol_error",
            KillReason::WrongProtocol { .. } => "wrong_protocol_version",
            KillReason::LoadDeadline { .. } => "load_deadline",
        }
    }

    /// Whether the child was killed while loading its model (a load failure).
    pub fn is_load_failure(&self) -> bool {
        matches!(
            self,
            KillReason::WrongProtocol { .. } | KillReason::LoadDeadline { .. }
        )
    }
}

impl fmt::Display for KillReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KillReason::DecodeDeadline { limit } => {
                write!(f, "killed after the decode deadline of {limit:?}")
            }
            KillReason::Unresponsive { silent } => write!(
                f,
                "killed after {:.1} s without a heartbeat",
                silent.as_secs_f64()
            ),
            KillReason::Unpaired { detail } => {
                write!(f, "its answers no longer paired with jobs: {detail}")
            }
            KillReason::BrokeProtocol { error } => write!(f, "broke the protocol: {error}"),
            KillReason::WrongProtocol { worker, service } => write!(
                f,
                "worker speaks protocol {worker} but the service speaks {service}"
            ),
            KillReason::LoadDeadline { secs } => write!(f, "model did not load within {secs} s"),
        }
    }
}

/// How a worker ended.
#[derive(Debug, Clone, PartialEq)]
pub enum ExitCause {
    /// It exited by itself with this code.
    Code(i32),
    /// A signal nobody here sent ended it: a native crash (SIGSEGV, SIGABRT),
    /// the OOM killer, an operator.
    Signal(i32),
    /// This proxy killed it.
    Killed {
        /// Why.
        reason: KillReason,
        /// How the process actually ended (SIGKILL, unless it died by
        /// itself first).
        status: ProcessExit,
    },
    /// Waiting on the process failed; how it ended is unknown.
    Unknown(String),
}

impl ExitCause {
    /// The cause, from the process's end and the proxy's kill, if any.
    pub fn new(status: ProcessExit, killed: Option<KillReason>) -> Self {
        match (killed, status) {
            (Some(reason), status) => ExitCause::Killed { reason, status },
            (None, ProcessExit::Code(c)) => ExitCause::Code(c),
            (None, ProcessExit::Signal(s)) => ExitCause::Signal(s),
            (None, ProcessExit::WaitFailed(e)) => ExitCause::Unknown(e),
        }
    }

    /// A stable label for logs and metrics: `exit_code`, `signal`,
    /// `unknown`, or the [`KillReason::label`] of a kill.
    pub fn label(&self) -> &'static str {
        match self {
            ExitCause::Code(_) => "exit_code",
            ExitCause::Signal(_) => "signal",
            ExitCause::Killed { reason, .. } => reason.label(),
            ExitCause::Unknown(_) => "unknown",
        }
    }

    /// The kill's reason, if this proxy killed the worker.
    pub fn kill_reason(&self) -> Option<&KillReason> {
        match self {
            ExitCause::Killed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

impl fmt::Display for ExitCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitCause::Code(c) => ProcessExit::Code(*c).fmt(f),
            ExitCause::Signal(s) => ProcessExit::Signal(*s).fmt(f),
            ExitCause::Killed { reason, status } => write!(f, "{status}; {reason}"),
            ExitCause::Unknown(e) => ProcessExit::WaitFailed(e.clone()).fmt(f),
        }
    }
}

/// What the supervisor learns when a worker ends
/// ([`crate::actors::SupervisorMsg::WorkerExited`]).
#[derive(Debug, Clone)]
pub struct WorkerExit {
    /// How it ended.
    pub cause: ExitCause,
    /// Whether it had loaded its model (sent a valid `Hello`).
    pub loaded: bool,
    /// What it reported in [`asr_ipc::FromWorker::LoadFailed`], if it did.
    pub reported_load_failure: Option<asr_ipc::LoadFailure>,
}

impl WorkerExit {
    /// Why the model could not be loaded, when the worker ended before it
    /// was (the start-up error's cause); `None` for a loaded worker.
    pub fn load_failure(&self) -> Option<String> {
        if let Some(f) = &self.reported_load_failure {
            return Some(format!("{}: {}", f.model_path, f.cause));
        }
        match self.cause.kill_reason() {
            Some(r) if r.is_load_failure() => Some(r.to_string()),
            _ if !self.loaded => Some(format!("worker {} while loading the model", self.cause)),
            _ => None,
        }
    }
}

impl fmt::Display for WorkerExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.cause.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_keep_the_health_texts() {
        assert_eq!(
            ExitCause::new(ProcessExit::Code(3), None).to_string(),
            "exited with code 3"
        );
        assert_eq!(
            ExitCause::new(ProcessExit::Signal(11), None).to_string(),
            "killed by SIGSEGV (11)"
        );
        let c = ExitCause::new(
            ProcessExit::Signal(9),
            Some(KillReason::DecodeDeadline {
                limit: Duration::from_secs(5),
            }),
        );
        assert_eq!(
            c.to_string(),
            "killed by SIGKILL (9); killed after the decode deadline of 5s"
        );
        assert_eq!(c.label(), "decode_deadline");
        let c = ExitCause::new(
            ProcessExit::Signal(9),
            Some(KillReason::Unresponsive {
                silent: Duration::from_millis(10_040),
            }),
        );
        assert!(
            c.to_string()
                .ends_with("killed after 10.0 s without a heartbeat"),
            "{c}"
        );
    }

    #[test]
    fn load_failures_are_told_apart_from_crashes() {
        let exit = |cause, loaded, reported| WorkerExit {
            cause,
            loaded,
            reported_load_failure: reported,
        };
        let reported = asr_ipc::LoadFailure {
            model_path: "/m".into(),
            cause: "no model.bin".into(),
        };
        assert_eq!(
            exit(ExitCause::Code(1), false, Some(reported))
                .load_failure()
                .as_deref(),
            Some("/m: no model.bin")
        );
        let wrong = ExitCause::new(
            ProcessExit::Signal(9),
            Some(KillReason::WrongProtocol {
                worker: 4,
                service: 5,
            }),
        );
        assert_eq!(
            exit(wrong, false, None).load_failure().as_deref(),
            Some("worker speaks protocol 4 but the service speaks 5")
        );
        assert_eq!(
            exit(ExitCause::Code(2), false, None)
                .load_failure()
                .as_deref(),
            Some("worker exited with code 2 while loading the model")
        );
        assert_eq!(exit(ExitCause::Signal(11), true, None).load_failure(), None);
    }
}
