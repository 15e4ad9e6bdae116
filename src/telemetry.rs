//! Logging set-up for the binary (and for hosts that want the same format).

use std::io::IsTerminal;

use tracing_subscriber::{fmt, EnvFilter};

/// Installs a `tracing` subscriber writing human-readable lines to stderr.
/// The filter comes from `RUST_LOG` (default: `info`, with ractor's
/// life-long per-actor spans at `warn`).
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,ractor=warn,actix_server=warn,symphonia_core::formats::probe=off"));
    let _ = fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}
