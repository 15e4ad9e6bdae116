//! Plain-line logging to stderr: `worker-proc[PID]: LEVEL message`.
//!
//! stdout carries protocol frames only, so every log line goes to stderr,
//! which the parent forwards to its own logs. Messages are lowercase with no
//! trailing period.

use std::fmt;
use std::io::Write;

/// Writes one log line to stderr (errors writing it are ignored).
pub fn write(level: &str, args: fmt::Arguments<'_>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "worker-proc[{}]: {level} {args}", std::process::id());
}

/// Logs at `info`.
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)*) => { $crate::log::write("info", format_args!($($arg)*)) };
}

/// Logs at `warn`.
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)*) => { $crate::log::write("warn", format_args!($($arg)*)) };
}

/// Logs at `error`.
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)*) => { $crate::log::write("error", format_args!($($arg)*)) };
}
